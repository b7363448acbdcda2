"""Distillers: each method of ``MODEL.DISTILL.*`` as a module that reads a DistillBatch and
returns named, weighted loss terms.

A distiller declares which teacher outputs it needs (``teacher_needs`` within
``{"features", "rpn", "rcn"}``) so the teacher runs only what is used, and which of detectron2's
own loss terms it rescales (``hard_loss_scales``, e.g. ``(1 - mu)`` on the hard classification
loss). All are ``@configurable``: built from yaml by :func:`build_distillers`, or directly in a
LazyConfig.
"""
import math
from typing import Dict, List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.utils.events import get_event_storage
from detectron2.utils.registry import Registry

from ..losses import FGDLoss, HintLoss, MSSDLoss, bounded_regression_loss, weighted_soft_cross_entropy
from .batch import STAGES, DistillBatch

__all__ = [
    "DISTILLER_REGISTRY",
    "Distiller",
    "HintDistiller",
    "SoftCEDistiller",
    "BoundedRegressionDistiller",
    "FGDDistiller",
    "MSSDDistiller",
    "build_distillers",
]

DISTILLER_REGISTRY = Registry("DISTILLER")
DISTILLER_REGISTRY.__doc__ = "Distillation methods; the name is the MODEL.DISTILL block (HINT, FGD, ...)."

# hard (detector) loss of each stage, scaled by (1 - mu) when soft CE is on
HARD_CLS_LOSS = {"rpn": "loss_rpn_cls", "rcn": "loss_cls"}


def _check_weight(method: str, name: str, value: float):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"MODEL.DISTILL.{method}.{name} must be a non-negative number and finite, got {value!r}")


def _check_unique(method: str, name: str, features: Sequence[str]):
    repeated = sorted({f for f in features if list(features).count(f) > 1})
    if repeated:
        raise ValueError(f"MODEL.DISTILL.{method}.{name} names {repeated} more than once; each feature "
                         f"is distilled once (got {list(features)})")


def _check_targets(method: str, targets: Sequence[str]):
    bad = [t for t in targets if t not in STAGES]
    if bad or not targets:
        raise ValueError(f"MODEL.DISTILL.{method}.TARGETS must be a non-empty subset of {list(STAGES)}, got {list(targets)}")


def put_scalar(name: str, value: float):
    """Log a diagnostic scalar into the current EventStorage (no-op outside training)."""
    try:
        storage = get_event_storage()
    except AssertionError:
        return
    storage.put_scalar(name, float(value), smoothing_hint=True)


class Distiller(nn.Module):
    teacher_needs = frozenset()

    def hard_loss_scales(self) -> Dict[str, float]:
        return {}

    def check_shapes(self, student_shapes, teacher_shapes) -> None:
        """Raise a clear error, before training, if the models' features do not fit this distiller."""

    def teacher_features(self):
        """Names of the teacher features this distiller reads (checked to be finite each step);
        ``None`` means any of them."""
        return None

    def forward(self, batch: DistillBatch) -> Dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


@DISTILLER_REGISTRY.register()
class HintDistiller(Distiller):
    """Chen et al. 2017 hint learning on paired backbone/FPN features; see losses/hint.py."""

    teacher_needs = frozenset({"features"})

    @configurable
    def __init__(self, *, student_features, teacher_features, student_channels, teacher_channels,
                 weight=0.5, kernel_size=1, norm="l2"):
        super().__init__()
        _check_weight("HINT", "WEIGHT", weight)
        if len(student_features) != len(teacher_features) or not student_features:
            raise ValueError(
                "MODEL.DISTILL.HINT.STUDENT_FEATURES and TEACHER_FEATURES must pair up one to one, got "
                f"{list(student_features)} and {list(teacher_features)}"
            )
        _check_unique("HINT", "STUDENT_FEATURES", student_features)
        self.pairs = list(zip(student_features, teacher_features))
        self.weight = weight
        self.hints = nn.ModuleDict({
            s: HintLoss(sc, tc, kernel_size, norm)
            for s, sc, tc in zip(student_features, student_channels, teacher_channels)
        })

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        c = cfg.MODEL.DISTILL.HINT
        return dict(
            student_features=list(c.STUDENT_FEATURES), teacher_features=list(c.TEACHER_FEATURES),
            student_channels=[_shape(student_shapes, f, "student", "HINT").channels for f in c.STUDENT_FEATURES],
            teacher_channels=[_shape(teacher_shapes, f, "teacher", "HINT").channels for f in c.TEACHER_FEATURES],
            weight=c.WEIGHT, kernel_size=c.ADAPTATION_KERNEL, norm=c.NORM,
        )

    def teacher_features(self):
        return [t for _, t in self.pairs]

    def check_shapes(self, student_shapes, teacher_shapes):
        for s_name, t_name in self.pairs:
            conv = self.hints[s_name].adaptation
            _check_pair("HINT", (s_name, t_name), (student_shapes, teacher_shapes),
                        (conv.in_channels, conv.out_channels), "adaptation layer")

    def forward(self, batch):
        losses = {}
        for s_name, t_name in self.pairs:
            s, t = batch.feature_pair(s_name, t_name)
            losses[f"loss_hint_{s_name}"] = self.weight * self.hints[s_name](s, t)
        return losses


@DISTILLER_REGISTRY.register()
class SoftCEDistiller(Distiller):
    """Chen et al. 2017 class-weighted soft CE on RPN objectness and/or RCN classes."""

    teacher_needs = frozenset({"rpn", "rcn"})

    @configurable
    def __init__(self, *, targets=("rpn", "rcn"), mu=0.5, temperature=1.0, background_weight=1.5, weight=1.0):
        super().__init__()
        _check_targets("SOFT_CE", targets)
        for name, v in dict(WEIGHT=weight, BACKGROUND_WEIGHT=background_weight).items():
            _check_weight("SOFT_CE", name, v)
        if not (0.0 <= mu <= 1.0):
            raise ValueError(f"MODEL.DISTILL.SOFT_CE.MU must be in [0, 1], got {mu!r}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"MODEL.DISTILL.SOFT_CE.TEMPERATURE must be > 0 and finite, got {temperature!r}")
        self.targets = list(targets)
        self.teacher_needs = frozenset(self.targets)
        self.mu, self.temperature, self.background_weight, self.weight = mu, temperature, background_weight, weight

    @classmethod
    def from_config(cls, cfg, student_shapes=None, teacher_shapes=None):
        c = cfg.MODEL.DISTILL.SOFT_CE
        return dict(targets=list(c.TARGETS), mu=c.MU, temperature=c.TEMPERATURE,
                    background_weight=c.BACKGROUND_WEIGHT, weight=c.WEIGHT)

    def hard_loss_scales(self):
        return {HARD_CLS_LOSS[t]: 1.0 - self.mu for t in self.targets}

    def forward(self, batch):
        losses = {}
        for stage in self.targets:
            s, t, weights_for = batch.classification_pairs(stage)
            soft = weighted_soft_cross_entropy(s, t, weights_for(self.background_weight), self.temperature)
            losses[f"loss_{stage}_soft_ce"] = self.weight * self.mu * soft
        return losses


@DISTILLER_REGISTRY.register()
class BoundedRegressionDistiller(Distiller):
    """Chen et al. 2017 teacher-bounded L2 regression on RPN and/or RCN deltas."""

    @configurable
    def __init__(self, *, targets=("rpn", "rcn"), nu=0.5, margin=0.0):
        super().__init__()
        _check_targets("BOUNDED_REG", targets)
        _check_weight("BOUNDED_REG", "NU", nu)
        if not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise ValueError(f"MODEL.DISTILL.BOUNDED_REG.MARGIN must be a finite number, got {margin!r}")
        self.targets = list(targets)
        self.teacher_needs = frozenset(self.targets)
        self.nu, self.margin = nu, margin

    @classmethod
    def from_config(cls, cfg, student_shapes=None, teacher_shapes=None):
        c = cfg.MODEL.DISTILL.BOUNDED_REG
        return dict(targets=list(c.TARGETS), nu=c.NU, margin=c.MARGIN)

    def forward(self, batch):
        losses = {}
        for stage in self.targets:
            s, t, y, normalizer = batch.regression_triplets(stage)
            loss, active = bounded_regression_loss(s, t, y, self.margin, normalizer)
            losses[f"loss_{stage}_bounded_reg"] = self.nu * loss
            put_scalar(f"distill/{stage}_bound_active", active)
        return losses


@DISTILLER_REGISTRY.register()
class FGDDistiller(Distiller):
    """Yang et al. 2022 FGD, one FGDLoss per FPN level; terms logged per level."""

    teacher_needs = frozenset({"features"})

    @configurable
    def __init__(self, *, in_features, student_channels, teacher_channels, temperature=0.5,
                 alpha=5e-5, beta=2.5e-5, gamma=5e-5, lambda_=5e-7):
        super().__init__()
        for name, v in dict(ALPHA=alpha, BETA=beta, GAMMA=gamma, LAMBDA=lambda_).items():
            _check_weight("FGD", name, v)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"MODEL.DISTILL.FGD.TEMPERATURE must be > 0 and finite, got {temperature!r}")
        _check_unique("FGD", "IN_FEATURES", in_features)
        self.in_features = list(in_features)
        self.levels = nn.ModuleDict({
            f: FGDLoss(sc, tc, temperature, alpha, beta, gamma, lambda_)
            for f, sc, tc in zip(in_features, student_channels, teacher_channels)
        })

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        c = cfg.MODEL.DISTILL.FGD
        return dict(
            in_features=list(c.IN_FEATURES),
            student_channels=[_shape(student_shapes, f, "student", "FGD").channels for f in c.IN_FEATURES],
            teacher_channels=[_shape(teacher_shapes, f, "teacher", "FGD").channels for f in c.IN_FEATURES],
            temperature=c.TEMPERATURE, alpha=c.ALPHA, beta=c.BETA, gamma=c.GAMMA, lambda_=c.LAMBDA,
        )

    def teacher_features(self):
        return list(self.in_features)

    def check_shapes(self, student_shapes, teacher_shapes):
        for f in self.in_features:
            level = self.levels[f]
            _check_pair("FGD", (f, f), (student_shapes, teacher_shapes),
                        (level.student_channels, level.teacher_channels), "align layer")

    def forward(self, batch):
        losses = {}
        for f in self.in_features:
            s, t = batch.feature_pair(f, f)
            grid = "student" if s.shape[-2:] == batch.student.features[f].shape[-2:] else "teacher"
            boxes, sizes = batch.boxes_on(grid)
            # a level's stride is the same in student pixels on the student grid and in teacher
            # pixels on the teacher grid
            for k, v in self.levels[f](s, t, boxes, sizes, stride=batch.strides[f]).items():
                losses[f"{k}_{f}"] = v
        return losses


@DISTILLER_REGISTRY.register()
class MSSDDistiller(Distiller):
    """Jia et al. 2024 MSSD: top-down FPN maps teach the PAN outputs; Gaussian target mask."""

    @configurable
    def __init__(self, *, in_features, channels, weights, mask_weights):
        super().__init__()
        _check_unique("MSSD", "IN_FEATURES", in_features)
        self.loss = MSSDLoss(channels, in_features, weights, mask_weights)
        self.in_features = list(in_features)

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes=None):
        c = cfg.MODEL.DISTILL.MSSD
        missing = [f"fpn_{f}" for f in c.IN_FEATURES if f"fpn_{f}" not in student_shapes]
        if missing:
            raise ValueError(
                "MODEL.DISTILL.MSSD needs a student backbone with a bottom-up path (e.g. "
                "MODEL.BACKBONE.NAME: build_resnet_pafpn_backbone) that exposes the top-down maps "
                f"{missing}; the student has {sorted(student_shapes)}"
            )
        channels = {_shape(student_shapes, f, "student", "MSSD").channels for f in c.IN_FEATURES}
        if len(channels) != 1:
            raise ValueError(f"MODEL.DISTILL.MSSD.IN_FEATURES must share one channel count, got {channels}")
        return dict(in_features=list(c.IN_FEATURES), channels=channels.pop(),
                    weights=list(c.WEIGHTS), mask_weights=list(c.MASK_WEIGHTS))

    def check_shapes(self, student_shapes, teacher_shapes):
        for f in self.in_features:
            if f"fpn_{f}" not in student_shapes:
                raise ValueError(
                    "MODEL.DISTILL.MSSD needs a student backbone with a bottom-up path (e.g. "
                    "MODEL.BACKBONE.NAME: build_resnet_pafpn_backbone) that exposes the top-down map "
                    f"fpn_{f}; the student has {sorted(student_shapes)}"
                )
            _check_channels("MSSD", "student", f, student_shapes[f].channels,
                            self.loss.mask_heads[f].in_channels, "mask head input")

    def forward(self, batch):
        feats = batch.student.features
        top_down = {f: feats[f"fpn_{f}"] for f in self.in_features}
        outputs = {f: feats[f] for f in self.in_features}
        return self.loss(top_down, outputs, batch.gt_boxes, batch.image_sizes,
                         {f: batch.strides[f] for f in self.in_features})


def _check_channels(method, side, name, actual, expected, what):
    if actual != expected:
        raise ValueError(
            f"MODEL.DISTILL.{method}: the {side} feature {name!r} has {actual} channels but the {what} "
            f"expects {expected}; set the channel counts to the models' (an adaptation/align layer "
            "maps student channels to teacher channels)"
        )


def _check_pair(method, names, shapes, channels, layer):
    """Both sides of a distilled pair exist and have the channels the layer between them expects."""
    for side, name, side_shapes, expected, end in zip(("student", "teacher"), names, shapes, channels,
                                                       ("input", "output")):
        _check_channels(method, side, name, _shape(side_shapes, name, side, method).channels, expected,
                        f"{layer} {end}")


def _shape(shapes, name, side, method):
    if shapes is None or name not in shapes:
        raise ValueError(
            f"MODEL.DISTILL.{method}: the {side} has no feature {name!r}; "
            f"available: {sorted(shapes) if shapes else 'none (no teacher configured)'}"
        )
    return shapes[name]


_BLOCKS = {"HINT": HintDistiller, "SOFT_CE": SoftCEDistiller, "BOUNDED_REG": BoundedRegressionDistiller,
           "FGD": FGDDistiller, "MSSD": MSSDDistiller}
_NEEDS_TEACHER = {"HINT", "SOFT_CE", "BOUNDED_REG", "FGD"}


def build_distillers(cfg, student_shapes, teacher_shapes) -> List[Distiller]:
    """The enabled methods of ``cfg.MODEL.DISTILL``, in a fixed order."""
    distillers = []
    for block, cls in _BLOCKS.items():
        if not cfg.MODEL.DISTILL[block].ENABLED:
            continue
        if block in _NEEDS_TEACHER and teacher_shapes is None:
            raise ValueError(
                f"MODEL.DISTILL.{block} is enabled but no teacher is configured "
                "(set MODEL.DISTILL.TEACHER.CONFIG_FILE and WEIGHTS)"
            )
        distillers.append(cls(cfg, student_shapes, teacher_shapes))
    return distillers
