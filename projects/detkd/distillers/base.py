"""What every distillation method shares: the registry, the :class:`Distiller` base class, how the
enabled methods are built from a config, and the checks their constructors use.

A method is one module (see ``fgd.py`` for an example) holding a ``Distiller`` subclass registered
in :data:`DISTILLER_REGISTRY`. The class declares

* ``config_block``: its block under ``MODEL.DISTILL`` (``"FGD"``), and :meth:`Distiller.add_config`,
  which fills the block's keys; ``ENABLED`` (default off) is added for every method, so
  :func:`detkd.add_detkd_config` builds ``MODEL.DISTILL`` by walking the registry;
* ``name``: the prefix of its terms (``"fgd"``): every term it returns is ``loss_<name>_<term>``;
* ``needs_teacher`` and ``teacher_needs`` (within ``{"features", "rpn", "rcn"}``), so the teacher
  runs only what some method reads, and :meth:`Distiller.teacher_features`, the teacher maps it
  reads (checked to be finite every step);
* ``auto_balanced``: whether the automatic balance scales its terms (see the attribute);
* ``from_config(cfg, student_shapes, teacher_shapes)`` (``@configurable``), so the same class builds
  from yaml and from LazyConfig.

The loss convention: loss functions take ``(student, teacher, ...)`` in that order and return
unweighted values; the distiller multiplies them by the weights of its config block.
"""

import math
from typing import Dict, List, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.utils.registry import Registry
from torch import nn

from ..batch import STAGES, DistillBatch

__all__ = [
    "DISTILLER_REGISTRY",
    "Distiller",
    "registered_distillers",
    "build_distillers",
    "check_weight",
    "check_unique",
    "check_targets",
    "check_pair",
    "check_channels",
    "feature_shape",
    "FeatureLevelDistiller",
    "level_channels",
]

DISTILLER_REGISTRY = Registry("DISTILLER")
DISTILLER_REGISTRY.__doc__ = """Distillation methods (:class:`Distiller` subclasses). Registering a
class adds its config block to ``MODEL.DISTILL`` and makes it buildable from a yaml config."""


class Distiller(nn.Module):
    """A distillation method: reads a :class:`DistillBatch`, returns
    ``{loss_<name>_<term>: value}``."""

    config_block: str = ""
    name: str = ""
    needs_teacher: bool = True
    teacher_needs = frozenset()
    # reads the student's pooled region features (DistillBatch.student.rcn_pooled) with the
    # teacher's box head: DistillRCNN checks that both poolers give one size
    reads_student_pooled: bool = False
    # whether MODEL.DISTILL.BALANCE.AUTO scales this method's terms. False for a method whose terms
    # rework the detector's own losses on their scale (Chen's soft CE mixes into the hard CE,
    # bounded regression is a hinge on the regression loss) rather than add an imitation term: such
    # a term starts near 0 (few foreground proposals in the first iterations), so a ratio measured
    # then says nothing of its size later (measured: bounded regression scaled x13.5 after 20
    # iterations, 2-3x the detection loss afterwards, and the demo student stalled under 1.1 AP)
    auto_balanced: bool = True
    # set by DistillRCNN (MODEL.DISTILL.BALANCE.NORMALIZE_BY_AREA): see per_area
    area_normalized: bool = False

    def per_area(self, value: torch.Tensor, feature_map: torch.Tensor) -> torch.Tensor:
        """``value`` divided by ``feature_map``'s H*W when area normalisation is on: for terms that
        sum over a level's positions, so that levels (and resolutions) weigh alike."""
        if not self.area_normalized:
            return value
        return value / (feature_map.shape[-2] * feature_map.shape[-1])

    @classmethod
    def add_config(cls, node: CfgNode) -> None:
        """Add the keys of this method's block (and their defaults) to ``node``."""

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


# ----- checks for the constructors: errors name the config key ------------------------------------
def check_weight(method: str, name: str, value: float):
    """``value`` is a finite number >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"MODEL.DISTILL.{method}.{name} must be a non-negative number and finite, got {value!r}"
        )


def check_unique(method: str, name: str, features: Sequence[str]):
    """No feature named twice in ``features``."""
    repeated = sorted({f for f in features if list(features).count(f) > 1})
    if repeated:
        raise ValueError(
            f"MODEL.DISTILL.{method}.{name} names {repeated} more than once; each feature "
            f"is distilled once (got {list(features)})"
        )


def check_targets(method: str, targets: Sequence[str]):
    """``targets`` is a non-empty subset of the stages ``rpn`` and ``rcn``."""
    bad = [t for t in targets if t not in STAGES]
    if bad or not targets:
        raise ValueError(
            f"MODEL.DISTILL.{method}.TARGETS must be a non-empty subset of {list(STAGES)}, "
            f"got {list(targets)}"
        )


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


def level_channels(cfg, block: str, student_shapes, teacher_shapes):
    """``in_features`` (``MODEL.DISTILL.<block>.IN_FEATURES``) and both sides' channel counts."""
    names = list(cfg.MODEL.DISTILL[block].IN_FEATURES)
    return dict(
        in_features=names,
        student_channels=[
            feature_shape(student_shapes, f, "student", block).channels for f in names
        ],
        teacher_channels=[
            feature_shape(teacher_shapes, f, "teacher", block).channels for f in names
        ],
    )


class FeatureLevelDistiller(Distiller):
    """Base of the methods that compare student and teacher on the same feature levels (PKD, CWD,
    MGD): ``IN_FEATURES`` from the config, one 1x1 align conv per level whose channel counts
    differ (student -> teacher channels), and :meth:`aligned_pairs` for ``forward``."""

    teacher_needs = frozenset({"features"})

    def __init__(self, in_features, student_channels, teacher_channels):
        super().__init__()
        check_unique(self.config_block, "IN_FEATURES", in_features)
        if not (len(in_features) == len(student_channels) == len(teacher_channels)):
            raise ValueError(
                f"MODEL.DISTILL.{self.config_block}: one student and one teacher channel "
                f"count per feature of {list(in_features)}"
            )
        self.in_features = list(in_features)
        self.channels = {
            f: (sc, tc) for f, sc, tc in zip(in_features, student_channels, teacher_channels)
        }
        self.align = nn.ModuleDict(
            {
                f: nn.Conv2d(sc, tc, kernel_size=1)
                for f, (sc, tc) in self.channels.items()
                if sc != tc
            }
        )

    @classmethod
    def level_channels(cls, cfg, student_shapes, teacher_shapes):
        return level_channels(cfg, cls.config_block, student_shapes, teacher_shapes)

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
