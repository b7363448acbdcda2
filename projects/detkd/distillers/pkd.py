"""PKD (Cao et al., NeurIPS 2022): FPN features compared through the Pearson correlation of each
channel; the loss is :func:`detkd.losses.pkd_loss` (its docstring has the formula).

Config block ``MODEL.DISTILL.PKD`` (mmrazor's Faster R-CNN setting: weight 6 on P2-P5); terms
``loss_pkd_<level>``. A 1x1 align conv maps student channels to the teacher's where they differ.
"""

from detectron2.config import CfgNode, configurable

from ..losses import pkd_loss
from .base import DISTILLER_REGISTRY, FeatureLevelDistiller, check_weight

__all__ = ["PKDDistiller"]


@DISTILLER_REGISTRY.register()
class PKDDistiller(FeatureLevelDistiller):
    """``WEIGHT * (1 - mean Pearson r)`` per FPN level."""

    config_block = "PKD"
    name = "pkd"

    @classmethod
    def add_config(cls, node: CfgNode):
        node.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        node.WEIGHT = 6.0

    @configurable
    def __init__(self, *, in_features, student_channels, teacher_channels, weight=6.0):
        super().__init__(in_features, student_channels, teacher_channels)
        check_weight("PKD", "WEIGHT", weight)
        self.weight = weight

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        return dict(
            **cls.level_channels(cfg, student_shapes, teacher_shapes),
            weight=cfg.MODEL.DISTILL.PKD.WEIGHT,
        )

    def forward(self, batch):
        return {
            f"loss_pkd_{f}": self.weight * pkd_loss(s, t) for f, s, t in self.aligned_pairs(batch)
        }
