"""Head cross-forward (after CrossKD, Wang et al., CVPR 2024) for Faster R-CNN's second stage: the
student's FPN features, pooled at its sampled proposals, run through the teacher's frozen box head;
the losses are :func:`detkd.losses.cross_head_kl` and :func:`detkd.losses.cross_head_box_l1`.

Config block ``MODEL.DISTILL.CROSS_HEAD`` (CrossKD's two-stage setting: T = 3, weight 0.5; boxes
off by default); terms ``loss_cross_head_cls`` and, with ``BOX_WEIGHT > 0``,
``loss_cross_head_box``.
A 1x1 align conv per level maps the student's FPN width to the teacher's where they differ. The
student's features are read at the box head's input levels (``MODEL.ROI_HEADS.IN_FEATURES``).
"""

import math

from detectron2.config import CfgNode, configurable
from detectron2.structures import Boxes

from ..losses import cross_head_box_l1, cross_head_kl
from .base import DISTILLER_REGISTRY, FeatureLevelDistiller, check_weight

__all__ = ["CrossHeadDistiller"]


@DISTILLER_REGISTRY.register()
class CrossHeadDistiller(FeatureLevelDistiller):
    """The teacher's box head on the student's features vs on the teacher's, at the student's
    proposals."""

    config_block = "CROSS_HEAD"
    name = "cross_head"
    teacher_needs = frozenset({"rcn"})

    @classmethod
    def add_config(cls, node: CfgNode):
        node.TEMPERATURE = 3.0
        node.WEIGHT = 0.5  # the class-logit KL term
        node.BOX_WEIGHT = 0.0  # the box-delta L1 term (0 = off)

    @configurable
    def __init__(
        self,
        *,
        in_features,
        student_channels,
        teacher_channels,
        temperature=3.0,
        weight=0.5,
        box_weight=0.0,
    ):
        super().__init__(in_features, student_channels, teacher_channels)
        check_weight("CROSS_HEAD", "WEIGHT", weight)
        check_weight("CROSS_HEAD", "BOX_WEIGHT", box_weight)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(
                f"MODEL.DISTILL.CROSS_HEAD.TEMPERATURE must be > 0 and finite, got {temperature!r}"
            )
        self.temperature, self.weight, self.box_weight = temperature, weight, box_weight

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        node = cfg.clone()
        node.defrost()
        node.MODEL.DISTILL.CROSS_HEAD.IN_FEATURES = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        c = cfg.MODEL.DISTILL.CROSS_HEAD
        return dict(
            **cls.level_channels(node, student_shapes, teacher_shapes),
            temperature=c.TEMPERATURE,
            weight=c.WEIGHT,
            box_weight=c.BOX_WEIGHT,
        )

    def teacher_features(self):
        return []  # reads the teacher's RCN outputs, which are checked as such

    def forward(self, batch):
        # the student's maps at the student's size: its proposals are in its own pixels
        features = {
            f: (self.align[f](x) if f in self.align else x)
            for f, x in ((f, batch.student.features[f]) for f in self.in_features)
        }
        boxes = [Boxes(p.proposal_boxes.tensor) for p in batch.rcn_proposals]
        cross_scores, cross_deltas = batch.teacher_box_head(features, boxes)
        losses = {
            "loss_cross_head_cls": self.weight
            * cross_head_kl(cross_scores, batch.teacher.rcn_scores, self.temperature)
        }
        if self.box_weight > 0:
            losses["loss_cross_head_box"] = self.box_weight * cross_head_box_l1(
                batch.rcn_foreground_deltas(cross_deltas),
                batch.rcn_foreground_deltas(batch.teacher.rcn_deltas),
                normalizer=len(cross_deltas),
            )
        return losses
