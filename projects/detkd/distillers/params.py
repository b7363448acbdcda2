"""A method's parameters, declared once: :class:`Param` names a key of its config block, its
default, its checks and the constructor argument it becomes; :class:`~detkd.distillers.Distiller`
derives the block's keys, ``from_config`` and the constructor's validation from the declarations.

A check is called as ``check(key, value, args)``: ``key`` is the whole config key
(``MODEL.DISTILL.PKD.WEIGHT``, named in every error), ``args`` the method's arguments by name (for
checks across keys, such as one weight per level)."""

import math
from typing import Any, Callable, NamedTuple, Sequence, Tuple, Union

from ..batch import STAGES

Check = Callable[[str, Any, dict], None]


class Param(NamedTuple):
    """One key of a method's config block: ``key`` (``"WEIGHT"``), its ``default``, its
    ``check`` (one check or a tuple of them), the constructor argument it becomes (``arg``;
    default ``key.lower()``) and the attribute that holds it (``attr``; default the argument)."""

    key: str
    default: Any
    check: Union[Check, Tuple[Check, ...], None] = None
    arg: str = ""
    attr: str = ""

    @property
    def argument(self) -> str:
        return self.arg or self.key.lower()

    @property
    def attribute(self) -> str:
        return self.attr or self.argument

    @property
    def checks(self) -> Tuple[Check, ...]:
        if self.check is None:
            return ()
        return self.check if isinstance(self.check, tuple) else (self.check,)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def non_negative(key: str, value, args=None):
    """A finite number >= 0 (a weight)."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a non-negative number and finite, got {value!r}")


def positive(key: str, value, args=None):
    """A finite number > 0 (a temperature)."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key} must be > 0 and finite, got {value!r}")


def finite(key: str, value, args=None):
    """A finite number (of either sign)."""
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")


def unit_interval(key: str, value, args=None):
    """A number in [0, 1] (a share)."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must be in [0, 1], got {value!r}")


def integer(key: str, value, args=None):
    """An integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")


def stages(key: str, value, args=None):
    """A non-empty subset of the stages ``rpn`` and ``rcn``."""
    if not value or any(v not in STAGES for v in value):
        raise ValueError(f"{key} must be a non-empty subset of {list(STAGES)}, got {list(value)}")


def unique(key: str, value, args=None):
    """Feature names, none of them twice."""
    repeated = sorted({f for f in value if list(value).count(f) > 1})
    if repeated:
        raise ValueError(
            f"{key} names {repeated} more than once; each feature is distilled once "
            f"(got {list(value)})"
        )


def non_empty(key: str, value, args=None):
    """At least one entry."""
    if not value:
        raise ValueError(f"{key} must name at least one entry, got {list(value)}")


def each(check: Check) -> Check:
    """``check`` on every entry of a list."""

    def check_each(key: str, values, args=None):
        for v in values:
            check(key, v, args)

    return check_each


def one_of(*choices) -> Check:
    """One of ``choices``."""

    def check_one_of(key: str, value, args=None):
        if value not in choices:
            raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")

    return check_one_of


def one_per(argument: str, what: str) -> Check:
    """As many entries as the argument ``argument`` (``what``: its config key's last part)."""

    def check_one_per(key: str, values: Sequence, args: dict):
        n = len(args[argument])
        if len(values) != n:
            raise ValueError(
                f"{key} must give one value per entry of {what} ({n}: {list(args[argument])}), "
                f"got {len(values)}: {list(values)}"
            )

    return check_one_per
