"""CWD (Shu et al., ICCV 2021): per channel, the distribution of a map over its positions, student
pulled to teacher by KL; the loss is :func:`detkd.losses.channel_wise_divergence`.

Config block ``MODEL.DISTILL.CWD`` (mmrazor's FPN setting: tau 1, weight 10, P2-P6); terms
``loss_cwd_<level>``. A 1x1 align conv maps student channels to the teacher's where they differ.
"""

import math

from detectron2.config import CfgNode, configurable

from ..losses import channel_wise_divergence
from .base import DISTILLER_REGISTRY, FeatureLevelDistiller, check_weight

__all__ = ["CWDDistiller"]


@DISTILLER_REGISTRY.register()
class CWDDistiller(FeatureLevelDistiller):
    """``WEIGHT * tau^2 * KL(teacher || student)`` per channel, per FPN level."""

    config_block = "CWD"
    name = "cwd"

    @classmethod
    def add_config(cls, node: CfgNode):
        node.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        node.TEMPERATURE = 1.0
        node.WEIGHT = 10.0

    @configurable
    def __init__(
        self, *, in_features, student_channels, teacher_channels, temperature=1.0, weight=10.0
    ):
        super().__init__(in_features, student_channels, teacher_channels)
        check_weight("CWD", "WEIGHT", weight)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(
                f"MODEL.DISTILL.CWD.TEMPERATURE must be > 0 and finite, got {temperature!r}"
            )
        self.temperature, self.weight = temperature, weight

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        c = cfg.MODEL.DISTILL.CWD
        return dict(
            **cls.level_channels(cfg, student_shapes, teacher_shapes),
            temperature=c.TEMPERATURE,
            weight=c.WEIGHT,
        )

    def forward(self, batch):
        return {
            f"loss_cwd_{f}": self.weight * channel_wise_divergence(s, t, self.temperature)
            for f, s, t in self.aligned_pairs(batch)
        }
