"""Focal and global distillation (Yang et al., CVPR 2022) on FPN levels; the loss of one level is
:class:`detkd.losses.FGDLoss` (its docstring has the formulas).

Config block ``MODEL.DISTILL.FGD`` (the paper's Faster R-CNN release values); terms
``loss_fgd_{fg,bg,attention,global}_<level>``, weighted by ``ALPHA``, ``BETA``, ``GAMMA``,
``LAMBDA``.
"""

import math

from detectron2.config import CfgNode, configurable
from torch import nn

from ..losses import FGDLoss
from .base import (
    DISTILLER_REGISTRY,
    Distiller,
    check_pair,
    check_unique,
    check_weight,
    level_channels,
)

__all__ = ["FGDDistiller"]


@DISTILLER_REGISTRY.register()
class FGDDistiller(Distiller):
    """One :class:`FGDLoss` (align layer and two GcBlocks) per FPN level."""

    config_block = "FGD"
    name = "fgd"
    teacher_needs = frozenset({"features"})

    @classmethod
    def add_config(cls, node: CfgNode):
        node.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        node.TEMPERATURE = 0.5
        node.ALPHA = 5e-5  # foreground feature term
        node.BETA = 2.5e-5  # background feature term
        node.GAMMA = 5e-5  # attention term
        node.LAMBDA = 5e-7  # global (GcBlock) term

    @configurable
    def __init__(
        self,
        *,
        in_features,
        student_channels,
        teacher_channels,
        temperature=0.5,
        alpha=5e-5,
        beta=2.5e-5,
        gamma=5e-5,
        lambda_=5e-7,
    ):
        super().__init__()
        for name, v in dict(ALPHA=alpha, BETA=beta, GAMMA=gamma, LAMBDA=lambda_).items():
            check_weight("FGD", name, v)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(
                f"MODEL.DISTILL.FGD.TEMPERATURE must be > 0 and finite, got {temperature!r}"
            )
        check_unique("FGD", "IN_FEATURES", in_features)
        self.in_features = list(in_features)
        self.weights = {"fg": alpha, "bg": beta, "attention": gamma, "global": lambda_}
        self.levels = nn.ModuleDict(
            {
                f: FGDLoss(sc, tc, temperature)
                for f, sc, tc in zip(in_features, student_channels, teacher_channels)
            }
        )

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        c = cfg.MODEL.DISTILL.FGD
        return dict(
            **level_channels(cfg, "FGD", student_shapes, teacher_shapes),
            temperature=c.TEMPERATURE,
            alpha=c.ALPHA,
            beta=c.BETA,
            gamma=c.GAMMA,
            lambda_=c.LAMBDA,
        )

    def teacher_features(self):
        return list(self.in_features)

    def check_shapes(self, student_shapes, teacher_shapes):
        for f in self.in_features:
            level = self.levels[f]
            check_pair(
                "FGD",
                (f, f),
                (student_shapes, teacher_shapes),
                (level.student_channels, level.teacher_channels),
                "align layer",
            )

    def forward(self, batch):
        losses = {}
        for f in self.in_features:
            s, t = batch.feature_pair(f, f)
            grid = "student" if s.shape[-2:] == batch.student.features[f].shape[-2:] else "teacher"
            boxes, sizes = batch.boxes_on(grid)
            # a level's stride is the same in student pixels on the student grid and in teacher
            # pixels on the teacher grid
            terms = self.levels[f](s, t, boxes, sizes, stride=batch.strides[f])
            for term, value in terms.items():
                losses[f"loss_fgd_{term}_{f}"] = self.weights[term] * self.per_area(value, t)
        return losses
