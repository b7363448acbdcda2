"""Head cross-forward (after CrossKD, Wang et al., CVPR 2024) for Faster R-CNN's second stage: the
student's FPN features, pooled at its sampled proposals, run through the teacher's frozen box head;
the losses are :func:`detkd.losses.cross_head_kl` and :func:`detkd.losses.cross_head_box_l1`.

Config block ``MODEL.DISTILL.CROSS_HEAD`` (CrossKD's two-stage setting: T = 3, weight 0.5; boxes
off by default); terms ``loss_cross_head_cls`` and, with ``BOX_WEIGHT > 0``,
``loss_cross_head_box``.
The student's region features are the ones its own box head pooled (its pooler, its levels); a
1x1 align conv maps their width to the teacher's where they differ, and the teacher's box head must
take the same pooled size (checked when the model is built).
"""

from detectron2.config import configurable
from torch import nn

from ..losses import cross_head_box_l1, cross_head_kl
from .base import DISTILLER_REGISTRY, Distiller, check_pair, feature_shape
from .params import Param, non_negative, positive

__all__ = ["CrossHeadDistiller"]


@DISTILLER_REGISTRY.register()
class CrossHeadDistiller(Distiller):
    """The teacher's box head on the student's features vs on the teacher's, at the student's
    proposals."""

    config_block = "CROSS_HEAD"
    name = "cross_head"
    teacher_needs = frozenset({"rcn"})
    reads_student_pooled = True
    params = (
        Param("TEMPERATURE", 3.0, positive),
        Param("WEIGHT", 0.5, non_negative),  # the class-logit KL term
        Param("BOX_WEIGHT", 0.0, non_negative),  # the box-delta L1 term (0 = off)
    )

    @configurable
    def __init__(self, *, in_features, student_channels, teacher_channels, **params):
        super().__init__()
        self.set_params(params)
        self.in_features = list(in_features)
        self.channels = (int(student_channels), int(teacher_channels))
        self.align = (
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
            if student_channels != teacher_channels
            else None
        )

    @classmethod
    def shape_args(cls, cfg, student_shapes, teacher_shapes):
        """The box head's levels (``MODEL.ROI_HEADS.IN_FEATURES``) and the one width of each
        side's maps there."""
        names = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        widths = {}
        for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
            widths[side] = {feature_shape(shapes, f, side, "CROSS_HEAD").channels for f in names}
            if len(widths[side]) != 1:
                raise ValueError(
                    f"MODEL.DISTILL.CROSS_HEAD: the {side}'s box head levels {names} must "
                    f"share one channel count, got {sorted(widths[side])}"
                )
        return dict(
            in_features=names,
            student_channels=widths["student"].pop(),
            teacher_channels=widths["teacher"].pop(),
        )

    def teacher_features(self):
        return []  # reads the teacher's RCN outputs, which are checked as such

    def check_shapes(self, student_shapes, teacher_shapes):
        for f in self.in_features:
            check_pair(
                "CROSS_HEAD", (f, f), (student_shapes, teacher_shapes), self.channels, "align layer"
            )

    def forward(self, batch):
        # the region features the student's own box head read (its pooler, at its sampled
        # proposals), aligned to the teacher's width, through the teacher's box head: the student's
        # ROIAlign runs once, and its backward carries both gradients (pooling the maps a second
        # time made ROIAlign's backward the largest cost of the step, BENCHMARKS.md)
        pooled = batch.student.rcn_pooled
        if self.align is not None:
            pooled = self.align(pooled)
        heads = batch.teacher_roi_heads  # frozen; the gradient reaches the student through pooled
        cross_scores, cross_deltas = heads.box_predictor(heads.box_head(pooled))
        losses = {
            self.term("cls"): self.weight
            * cross_head_kl(cross_scores, batch.teacher.rcn_scores, self.temperature)
        }
        if self.box_weight > 0:
            losses[self.term("box")] = self.box_weight * cross_head_box_l1(
                batch.rcn_foreground_deltas(cross_deltas),
                batch.rcn_foreground_deltas(batch.teacher.rcn_deltas),
                normalizer=len(cross_deltas),
            )
        return losses
