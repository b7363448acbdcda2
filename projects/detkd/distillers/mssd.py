"""Multi-scale self-distillation with a Gaussian mask (Jia et al., 2024): the neck's top-down FPN
maps teach its bottom-up PAN outputs; the loss is :class:`detkd.losses.MSSDLoss`.

Config block ``MODEL.DISTILL.MSSD``; needs no teacher, but a student backbone with a bottom-up path
(``MODEL.BACKBONE.NAME: build_resnet_pafpn_backbone``); terms ``loss_mssd_{sd,mask}_<level>``,
weighted per level by ``WEIGHTS`` and ``MASK_WEIGHTS``.
"""

import math

import torch
from detectron2.config import CfgNode, configurable

from ..losses import MSSDLoss
from .base import DISTILLER_REGISTRY, Distiller, check_channels, check_unique, feature_shape

__all__ = ["MSSDDistiller"]


def _check_bottom_up(student_shapes, in_features):
    missing = [f"fpn_{f}" for f in in_features if f"fpn_{f}" not in student_shapes]
    if missing:
        raise ValueError(
            "MODEL.DISTILL.MSSD needs a student backbone with a bottom-up path (e.g. "
            "MODEL.BACKBONE.NAME: build_resnet_pafpn_backbone) that exposes the top-down maps "
            f"{missing}; the student has {sorted(student_shapes)}"
        )


@DISTILLER_REGISTRY.register()
class MSSDDistiller(Distiller):
    """Top-down FPN maps teach the PAN outputs of the same student; Gaussian target masks."""

    config_block = "MSSD"
    name = "mssd"
    needs_teacher = False

    @classmethod
    def add_config(cls, node: CfgNode):
        node.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        # per level, large maps (small objects) first
        node.WEIGHTS = [1.0, 1.0, 1.0, 1.0]
        node.MASK_WEIGHTS = [1.0, 1.0, 1.0, 1.0]

    @configurable
    def __init__(self, *, in_features, channels, weights, mask_weights):
        super().__init__()
        check_unique("MSSD", "IN_FEATURES", in_features)
        if not (len(in_features) == len(weights) == len(mask_weights)):
            raise ValueError(
                f"MSSD: {len(in_features)} levels but {len(weights)} WEIGHTS and "
                f"{len(mask_weights)} MASK_WEIGHTS; give one weight per level"
            )
        for w in list(weights) + list(mask_weights):
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"MSSD: weights must be non-negative finite numbers, got {w}")
        self.in_features = list(in_features)
        self.weights = dict(zip(in_features, map(float, weights)))
        self.mask_weights = dict(zip(in_features, map(float, mask_weights)))
        self.loss = MSSDLoss(channels, in_features)

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes=None):
        c = cfg.MODEL.DISTILL.MSSD
        _check_bottom_up(student_shapes, c.IN_FEATURES)
        channels = {
            feature_shape(student_shapes, f, "student", "MSSD").channels for f in c.IN_FEATURES
        }
        if len(channels) != 1:
            raise ValueError(
                f"MODEL.DISTILL.MSSD.IN_FEATURES must share one channel count, got {channels}"
            )
        return dict(
            in_features=list(c.IN_FEATURES),
            channels=channels.pop(),
            weights=list(c.WEIGHTS),
            mask_weights=list(c.MASK_WEIGHTS),
        )

    def check_shapes(self, student_shapes, teacher_shapes):
        _check_bottom_up(student_shapes, self.in_features)
        for f in self.in_features:
            check_channels(
                "MSSD",
                "student",
                f,
                student_shapes[f].channels,
                self.loss.mask_heads[f].in_channels,
                "mask head input",
            )

    def predicted_masks(self, features):
        """``{level: (N, H, W)}`` masks the mask heads predict from the PAN outputs ``features``."""
        return {
            f: torch.sigmoid(self.loss.mask_heads[f](features[f]))[:, 0]
            for f in self.in_features
            if f in features
        }

    def forward(self, batch):
        feats = batch.student.features
        pan = {f: feats[f] for f in self.in_features}
        top_down = {f: feats[f"fpn_{f}"] for f in self.in_features}
        terms = self.loss(
            pan,
            top_down,
            batch.gt_boxes,
            batch.image_sizes,
            {f: batch.strides[f] for f in self.in_features},
        )
        losses = {}
        for f in self.in_features:
            losses[f"loss_mssd_sd_{f}"] = self.weights[f] * terms[f"sd_{f}"]
            losses[f"loss_mssd_mask_{f}"] = self.mask_weights[f] * terms[f"mask_{f}"]
        return losses
