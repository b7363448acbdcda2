"""The arms of a survey, from a user's distillation config: the student alone (the baseline), each
method asked for, and each point of a grid of ``MODEL.DISTILL`` values, every one checked by
building its model before anything trains.

A method is a registered distiller's name (``pkd``, ``cross_head``, ...), a group
(:data:`METHOD_GROUPS`: ``chen`` is Chen et al.'s three losses) or several joined by ``+``
(``cross_head+chen``). Its arm is the user's config with only its methods enabled, each with the
settings the user's config gives its block."""

import ast
import itertools
from typing import Dict, List, Tuple

from ..config import enabled_methods, method_blocks, student_only_config
from ..distillers import registered_distillers

BASELINE = "baseline"
# names that stand for several registered methods together
METHOD_GROUPS = {"chen": ("hint", "soft_ce", "bounded_reg")}
GRID_ROOT = "MODEL.DISTILL."


class SurveyError(ValueError):
    """A survey that cannot run as asked: an unknown method or key, a value the config refuses.
    Raised before anything trains."""


def known_methods() -> List[str]:
    """Every name a survey method can be made of: the registered methods, then the groups."""
    return [cls.name for cls in registered_distillers()] + list(METHOD_GROUPS)


def parse_methods(text: str) -> Dict[str, Tuple[str, ...]]:
    """``"pkd,cross_head+chen"`` -> {arm name: the registered methods it enables, in
    registration order}; an unknown name is a :class:`SurveyError` that lists the known ones."""
    order = [cls.name for cls in registered_distillers()]
    arms = {}
    for spec in [s.strip() for s in text.split(",") if s.strip()]:
        if spec == BASELINE:
            raise SurveyError(f"--methods: {BASELINE!r} is always trained; leave it out")
        names = set()
        for part in spec.split("+"):
            if part in METHOD_GROUPS:
                names.update(METHOD_GROUPS[part])
            elif part in order:
                names.add(part)
            else:
                raise SurveyError(
                    f"unknown method {part!r} in --methods {text!r}; known: "
                    + ", ".join(known_methods())
                    + " (join several with '+')"
                )
        arms[spec] = tuple(n for n in order if n in names)
    if not arms:
        raise SurveyError("--methods names no method")
    return arms


def split_values(text: str) -> List[str]:
    """``"0.1,0.3,(1, 2)"`` -> ``["0.1", "0.3", "(1, 2)"]``: commas inside brackets stay."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return [v for v in values if v]


def parse_grid(items: List[str], cfg) -> Dict[str, List[str]]:
    """``["MODEL.DISTILL.BALANCE.AUTO_TARGET=0.1,0.3,1.0", ...]`` -> {key: values}. Each key is a
    key of ``cfg`` under ``MODEL.DISTILL`` (a grid over any other key would change the baseline
    too: give one value with ``KEY VALUE`` instead), with at least one value."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not split_values(values):
            raise SurveyError(f"--grid {item!r}: write KEY=v1,v2,...")
        if not key.startswith(GRID_ROOT):
            raise SurveyError(
                f"--grid {key}: only keys under {GRID_ROOT.rstrip('.')} make a grid (another key "
                "changes the baseline too; set it once with KEY VALUE)"
            )
        node = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise SurveyError(f"--grid {key}: the config has no key {key}")
            node = node[part]
        if isinstance(node, dict):
            raise SurveyError(f"--grid {key}: a block, not a value; name one of its keys")
        grid[key] = split_values(values)
    return grid


def _typed(cfg, key: str, text: str):
    """``text`` read as a Python literal (else kept as a string); an integer for a float key
    becomes a float (``WEIGHT=1`` for a weight of 6.0)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    node = cfg
    for part in key.split("."):
        node = node[part]
    if isinstance(node, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _block_of(key: str) -> str:
    return key[len(GRID_ROOT) :].split(".")[0]


def _point_name(point: Dict[str, str]) -> str:
    return ",".join(f"{k[len(GRID_ROOT) :]}={v}" for k, v in point.items())


def build_arms(cfg, methods: Dict[str, Tuple[str, ...]], grid: Dict[str, List[str]]):
    """The survey's arms: {name: config} with the baseline first (the student alone,
    :func:`~detkd.config.student_only_config`), then each method at each point of the grid
    (``pkd[BALANCE.AUTO_TARGET=0.1]``), and {name: its baseline}. A grid key of a method's own
    block (``MODEL.DISTILL.PKD.WEIGHT``) multiplies only the arms with that method; one that
    multiplies no arm is a :class:`SurveyError`. A value the config refuses is one too, naming
    the key."""
    blocks = {cls.name: cls.config_block for cls in registered_distillers()}
    method_block_names = set(method_blocks(cfg))
    arms = {BASELINE: student_only_config(cfg)}
    used = set()
    for name, members in methods.items():
        own = {blocks[m] for m in members}
        keys = [k for k in grid if _block_of(k) not in method_block_names or _block_of(k) in own]
        used.update(keys)
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            arm = cfg.clone()  # the user's config with only this arm's methods enabled
            arm.defrost()
            for block in method_block_names:
                arm.MODEL.DISTILL[block].ENABLED = block in own
            for key, value in point.items():
                try:
                    arm.merge_from_list([key, _typed(cfg, key, value)])
                except Exception as e:
                    raise SurveyError(f"--grid {key}={value}: {e}") from e
            arms[f"{name}[{_point_name(point)}]" if point else name] = arm
    unused = [k for k in grid if k not in used]
    if unused:
        raise SurveyError(
            f"--grid {', '.join(unused)}: no method of --methods has that block "
            f"({', '.join(methods)})"
        )
    return arms, {name: BASELINE for name in arms if name != BASELINE}


def check_arms(arms: Dict[str, object]) -> None:
    """Build each arm's model once (on the CPU, random weights, the teacher's loaded): a method or
    value that its config cannot run fails here, before anything trains, as a
    :class:`SurveyError` naming the arm (the model's own error names the key)."""
    from detectron2.modeling import build_model

    for name, arm in arms.items():
        cfg = arm.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        try:
            build_model(cfg)
        except Exception as e:
            raise SurveyError(f"{name}: its config cannot run: {type(e).__name__}: {e}") from e
        if name != BASELINE and not enabled_methods(cfg):
            raise SurveyError(f"{name}: enables no distillation method")
