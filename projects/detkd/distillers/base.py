"""What every distillation method shares: the registry, the :class:`Distiller` base class, how the
enabled methods are built from a config, and the checks of feature shapes.

A method is one module (see ``pkd.py`` for a small one) holding a ``Distiller`` subclass
registered in :data:`DISTILLER_REGISTRY`. The class declares

* ``config_block``: its block under ``MODEL.DISTILL`` (``"FGD"``), and ``params``: one
  :class:`~detkd.distillers.params.Param` per key of the block (its default, its checks, the
  constructor argument it becomes). From them follow the block's keys (:meth:`Distiller.add_config`;
  ``ENABLED``, default off, is added for every method, so :func:`detkd.add_detkd_config` builds
  ``MODEL.DISTILL`` by walking the registry), ``from_config`` (:meth:`Distiller.from_config`, with
  the arguments a method computes from the models' shapes, :meth:`Distiller.shape_args`) and the
  constructor's validation (:meth:`Distiller.set_params`: every error names the key);
* ``name``: the prefix of its terms (``"fgd"``): every term it returns is ``loss_<name>_<term>``,
  spelled by :meth:`Distiller.term`;
* ``needs_teacher`` and ``teacher_needs`` (within ``{"features", "rpn", "rcn"}``), so the teacher
  runs only what some method reads, and :meth:`Distiller.teacher_features`, the teacher maps it
  reads (checked to be finite every step);
* ``auto_balanced``: whether the automatic balance scales its terms (see the attribute), and
  ``balance_factor``: the default of its block's ``BALANCE_FACTOR`` (its multiple of
  ``AUTO_TARGET``).

``__init__`` is ``@configurable``, so the same class builds from yaml and from LazyConfig. Two
bases hold what a family of methods shares: :class:`FeatureLevelDistiller` (the same feature levels
on both sides, align layers) and :class:`StageDistiller` (the outputs of the RPN and RCN stages).

The loss convention: loss functions take ``(student, teacher, ...)`` in that order and return
unweighted values; the distiller multiplies them by the weights of its config block.
"""

import copy
from typing import Dict, List, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.utils.registry import Registry
from torch import nn

from ..batch import DistillBatch
from .params import Param

__all__ = [
    "DISTILLER_REGISTRY",
    "Distiller",
    "registered_distillers",
    "build_distillers",
    "check_pair",
    "check_channels",
    "feature_shape",
    "FeatureLevelDistiller",
    "StageDistiller",
]

DISTILLER_REGISTRY = Registry("DISTILLER")
DISTILLER_REGISTRY.__doc__ = """Distillation methods (:class:`Distiller` subclasses). Registering a
class adds its config block to ``MODEL.DISTILL`` and makes it buildable from a yaml config."""


class Distiller(nn.Module):
    """A distillation method: reads a :class:`DistillBatch`, returns
    ``{loss_<name>_<term>: value}``."""

    config_block: str = ""
    name: str = ""
    # the keys of its config block: defaults, checks, constructor arguments (see Param)
    params: Tuple[Param, ...] = ()
    needs_teacher: bool = True
    teacher_needs = frozenset()
    # reads the student's pooled region features (DistillBatch.student.rcn_pooled) with the
    # teacher's box head: DistillRCNN checks that both poolers give one size
    reads_student_pooled: bool = False
    # whether MODEL.DISTILL.BALANCE.AUTO scales this method's terms. False for a method whose terms
    # rework the detector's own losses on their scale (Chen's soft CE mixes into the hard CE,
    # bounded regression is a hinge on the regression loss) rather than add an imitation term: such
    # a term starts near 0 (few foreground proposals in the first iterations), so a ratio measured
    # then says nothing of its size later (DEMO.md: bounded regression scaled so held the demo
    # student under 1.1 AP)
    auto_balanced: bool = True
    # the default of its block's BALANCE_FACTOR: the automatic balance scales it to this factor
    # times BALANCE.AUTO_TARGET times the detection loss
    balance_factor: float = 1.0

    @classmethod
    def key(cls, key: str) -> str:
        """The whole config key of ``key`` in this method's block (``MODEL.DISTILL.PKD.WEIGHT``)."""
        return f"MODEL.DISTILL.{cls.config_block}.{key}"

    @classmethod
    def add_config(cls, node: CfgNode) -> None:
        """Add the keys of this method's block (and their defaults) to ``node``: one per
        ``params`` entry."""
        for p in cls.params:
            node[p.key] = copy.deepcopy(p.default)

    @classmethod
    def config_args(cls, cfg) -> Dict:
        """The constructor arguments of ``params`` from ``cfg``'s block (lists as lists)."""
        block = cfg.MODEL.DISTILL[cls.config_block]
        return {
            p.argument: list(block[p.key]) if isinstance(block[p.key], tuple) else block[p.key]
            for p in cls.params
        }

    @classmethod
    def shape_args(cls, cfg, student_shapes, teacher_shapes) -> Dict:
        """The constructor arguments a method computes from the models' features (channel
        counts); none by default."""
        return {}

    @classmethod
    def from_config(cls, cfg, student_shapes=None, teacher_shapes=None):
        return {**cls.shape_args(cfg, student_shapes, teacher_shapes), **cls.config_args(cfg)}

    def set_params(self, given: Dict) -> None:
        """Check the ``params`` arguments ``given`` to the constructor (a missing one takes its
        default; an unknown one is an error) and set each as an attribute (``Param.attribute``).
        Every error names the config key."""
        known = {p.argument: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no parameter {unknown}; its parameters: "
                f"{sorted(known)}"
            )
        values = {a: given[a] if a in given else copy.deepcopy(p.default) for a, p in known.items()}
        for argument, p in known.items():
            for check in p.checks:
                check(self.key(p.key), values[argument], values)
            if callable(getattr(type(self), p.attribute, None)):
                raise TypeError(
                    f"{type(self).__name__}: the attribute of {p.key} would hide its method "
                    f"{p.attribute}(); give the Param another attr"
                )
            setattr(self, p.attribute, values[argument])

    def term(self, *parts: str) -> str:
        """The name of one of its terms: ``loss_<name>_<part>_<part>...``."""
        return "_".join(("loss", self.name, *parts))

    def hard_loss_scales(self) -> Dict[str, float]:
        """detectron2 loss terms this method rescales (e.g. ``(1 - mu)`` on ``loss_cls``)."""
        return {}

    def check_shapes(self, student_shapes, teacher_shapes) -> None:
        """Raise a clear error, before training, if the models' features do not fit this method."""

    def teacher_features(self):
        """Names of the teacher features this method reads; ``None`` means any of them."""
        return None

    def forward(self, batch: DistillBatch) -> Dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


def registered_distillers() -> List[type]:
    """Every registered method class, in registration order (detkd's own first)."""
    classes = [cls for _, cls in DISTILLER_REGISTRY]
    for cls in classes:
        if not (cls.config_block and cls.name):
            raise TypeError(f"{cls.__name__} must set config_block and name to be a distiller")
        clash = {"ENABLED", "BALANCE_FACTOR"} & {p.key for p in cls.params}
        if clash:
            raise TypeError(f"{cls.__name__}: {sorted(clash)} are keys every block has, not params")
    blocks = [cls.config_block for cls in classes]
    repeated = sorted({b for b in blocks if blocks.count(b) > 1})
    if repeated:
        raise ValueError(f"config blocks {repeated} are declared by more than one distiller")
    return classes


def build_distillers(cfg, student_shapes, teacher_shapes) -> List[Distiller]:
    """The methods enabled in ``cfg.MODEL.DISTILL``, in registration order."""
    distillers = []
    for cls in registered_distillers():
        block = cls.config_block
        if not cfg.MODEL.DISTILL[block].ENABLED:
            continue
        if cls.needs_teacher and teacher_shapes is None:
            raise ValueError(
                f"MODEL.DISTILL.{block} is enabled but no teacher is configured "
                "(set MODEL.DISTILL.TEACHER.CONFIG_FILE and WEIGHTS)"
            )
        distillers.append(cls(cfg, student_shapes, teacher_shapes))
    return distillers


# ----- checks of feature shapes: errors name the config key ---------------------------------------
def feature_shape(shapes, name, side, method):
    """``shapes[name]`` (a ShapeSpec), or an error naming the features ``side`` has."""
    if shapes is None or name not in shapes:
        raise ValueError(
            f"MODEL.DISTILL.{method}: the {side} has no feature {name!r}; "
            f"available: {sorted(shapes) if shapes else 'none (no teacher configured)'}"
        )
    return shapes[name]


def check_channels(method, side, name, actual, expected, what):
    if actual != expected:
        raise ValueError(
            f"MODEL.DISTILL.{method}: the {side} feature {name!r} has {actual} channels "
            f"but the {what} expects {expected}; set the channel counts to the models' "
            "(an adaptation/align layer maps student channels to teacher channels)"
        )


def check_pair(method, names, shapes, channels, layer):
    """Both sides of a distilled pair exist and have the channels the layer between them expects."""
    for side, name, side_shapes, expected, end in zip(
        ("student", "teacher"), names, shapes, channels, ("input", "output")
    ):
        check_channels(
            method,
            side,
            name,
            feature_shape(side_shapes, name, side, method).channels,
            expected,
            f"{layer} {end}",
        )


class FeatureLevelDistiller(Distiller):
    """Base of the methods that compare student and teacher on the same feature levels (PKD, CWD,
    MGD, FGD): ``IN_FEATURES`` among its ``params``, both sides' channel counts per level from the
    models (:meth:`shape_args`), one 1x1 align conv per level whose channel counts differ (student
    -> teacher channels; none when ``aligns`` is False, for a method whose loss holds its own),
    and :meth:`aligned_pairs` for ``forward``."""

    teacher_needs = frozenset({"features"})
    aligns = True

    @configurable
    def __init__(self, *, student_channels, teacher_channels, **params):
        super().__init__()
        self.set_params(params)
        if not (len(self.in_features) == len(student_channels) == len(teacher_channels)):
            raise ValueError(
                f"{self.key('IN_FEATURES')}: one student and one teacher channel count per "
                f"feature of {list(self.in_features)}"
            )
        self.in_features = list(self.in_features)
        self.channels = {
            f: (sc, tc) for f, sc, tc in zip(self.in_features, student_channels, teacher_channels)
        }
        self.align = nn.ModuleDict(
            {
                f: nn.Conv2d(sc, tc, kernel_size=1)
                for f, (sc, tc) in self.channels.items()
                if sc != tc and self.aligns
            }
        )

    @classmethod
    def shape_args(cls, cfg, student_shapes, teacher_shapes):
        names = cfg.MODEL.DISTILL[cls.config_block].IN_FEATURES
        return {
            f"{side}_channels": [
                feature_shape(shapes, f, side, cls.config_block).channels for f in names
            ]
            for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes))
        }

    def teacher_features(self):
        return list(self.in_features)

    def check_shapes(self, student_shapes, teacher_shapes):
        for f, channels in self.channels.items():
            check_pair(
                self.config_block, (f, f), (student_shapes, teacher_shapes), channels, "align layer"
            )

    def aligned_pairs(self, batch: DistillBatch):
        """``(level, student map aligned to the teacher's channels, teacher map)`` per level, at one
        size (``DistillBatch.feature_pair``)."""
        for f in self.in_features:
            s, t = batch.feature_pair(f, f)
            yield f, (self.align[f](s) if f in self.align else s), t


class StageDistiller(Distiller):
    """Base of the methods that compare student and teacher on the outputs of detector stages
    (Chen's soft CE and bounded regression): ``TARGETS``, a list within ``rpn`` and ``rcn``,
    among its ``params``; the teacher computes the outputs of those stages."""

    @configurable
    def __init__(self, **params):
        super().__init__()
        self.set_params(params)
        self.targets = list(self.targets)

    @property
    def teacher_needs(self):
        """The teacher's outputs of the stages it distils (``rpn``, ``rcn``)."""
        return frozenset(self.targets)
