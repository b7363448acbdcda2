"""Hint learning (Chen et al., NeurIPS 2017, Sec. 3.3): ``gamma * ||V - adapt(Z)||^2`` between
paired teacher features ``V`` and student features ``Z``; the loss is
:class:`detkd.losses.HintLoss`.

Config block ``MODEL.DISTILL.HINT``; terms ``loss_hint_<student feature>``.
"""

from detectron2.config import CfgNode, configurable
from torch import nn

from ..losses import HintLoss
from .base import (
    DISTILLER_REGISTRY,
    Distiller,
    check_pair,
    check_unique,
    check_weight,
    feature_shape,
)

__all__ = ["HintDistiller"]


@DISTILLER_REGISTRY.register()
class HintDistiller(Distiller):
    """Chen et al. 2017 hints on paired backbone / FPN features, one adaptation layer per pair."""

    config_block = "HINT"
    name = "hint"
    teacher_needs = frozenset({"features"})

    @classmethod
    def add_config(cls, node: CfgNode):
        node.WEIGHT = 0.5  # gamma
        # backbone ("res2".."res5") or FPN ("p2".."p6") names, paired in order
        node.STUDENT_FEATURES = ["res4"]
        node.TEACHER_FEATURES = ["res4"]
        node.ADAPTATION_KERNEL = 1  # 1 or 3
        node.NORM = "l2"  # "l2" or "l1"

    @configurable
    def __init__(
        self,
        *,
        student_features,
        teacher_features,
        student_channels,
        teacher_channels,
        weight=0.5,
        kernel_size=1,
        norm="l2",
    ):
        super().__init__()
        check_weight("HINT", "WEIGHT", weight)
        if len(student_features) != len(teacher_features) or not student_features:
            raise ValueError(
                "MODEL.DISTILL.HINT.STUDENT_FEATURES and TEACHER_FEATURES must pair up one to one, "
                f"got {list(student_features)} and {list(teacher_features)}"
            )
        check_unique("HINT", "STUDENT_FEATURES", student_features)
        self.pairs = list(zip(student_features, teacher_features))
        self.weight = weight
        self.hints = nn.ModuleDict(
            {
                s: HintLoss(sc, tc, kernel_size, norm)
                for s, sc, tc in zip(student_features, student_channels, teacher_channels)
            }
        )

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        c = cfg.MODEL.DISTILL.HINT
        return dict(
            student_features=list(c.STUDENT_FEATURES),
            teacher_features=list(c.TEACHER_FEATURES),
            student_channels=[
                feature_shape(student_shapes, f, "student", "HINT").channels
                for f in c.STUDENT_FEATURES
            ],
            teacher_channels=[
                feature_shape(teacher_shapes, f, "teacher", "HINT").channels
                for f in c.TEACHER_FEATURES
            ],
            weight=c.WEIGHT,
            kernel_size=c.ADAPTATION_KERNEL,
            norm=c.NORM,
        )

    def teacher_features(self):
        return [t for _, t in self.pairs]

    def check_shapes(self, student_shapes, teacher_shapes):
        for s_name, t_name in self.pairs:
            conv = self.hints[s_name].adaptation
            check_pair(
                "HINT",
                (s_name, t_name),
                (student_shapes, teacher_shapes),
                (conv.in_channels, conv.out_channels),
                "adaptation layer",
            )

    def forward(self, batch):
        losses = {}
        for s_name, t_name in self.pairs:
            s, t = batch.feature_pair(s_name, t_name)
            losses[f"loss_hint_{s_name}"] = self.weight * self.hints[s_name](s, t)
        return losses
