"""Multi-scale self-distillation with a Gaussian mask (Jia et al., 2024): a Gaussian mask head on
the neck's bottom-up PAN outputs and, weighted by ``WEIGHTS`` (0 as it ships), the neck's top-down
FPN maps teaching those outputs; the loss is :class:`detkd.losses.MSSDLoss`.

Config block ``MODEL.DISTILL.MSSD``; needs no teacher, but a student backbone with a bottom-up path
(``MODEL.BACKBONE.NAME: build_resnet_pafpn_backbone``); terms ``loss_mssd_{sd,mask}_<level>``,
weighted per level by ``WEIGHTS`` and ``MASK_WEIGHTS``. ``NORMALIZE`` (on by default; not in the
paper) computes both terms on the maps standardized per channel, where the paper's form moves the
scale of the PAN outputs and costs AP on every embedded set (docs/METHODS.md); ``NORMALIZE False``
is the paper's form. ``WEIGHTS`` ships at 0, the self-distillation off, which leaves the Gaussian
mask term on the PAN outputs: measured term by term, the self-distillation is what costs
(docs/METHODS.md); set ``WEIGHTS`` (the demo's runs used 0.1 per level) for the paper's two terms.
"""

from detectron2.config import configurable

from ..losses import MSSDLoss
from .base import DISTILLER_REGISTRY, Distiller, check_channels, feature_shape
from .params import Param, each, non_negative, one_of, one_per, unique

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
    params = (
        Param("IN_FEATURES", ["p2", "p3", "p4", "p5"], unique),
        # per level, large maps (small objects) first. The self-distillation ships off (0): on
        # every embedded set MSSD ends higher without it, and on the converged glyphs it costs AP
        # alone (docs/METHODS.md); the demo measured the paper's two terms at 0.1 per level
        Param("WEIGHTS", [0.0] * 4, (each(non_negative), one_per("in_features", "IN_FEATURES"))),
        Param(
            "MASK_WEIGHTS",
            [1.0] * 4,
            (each(non_negative), one_per("in_features", "IN_FEATURES")),
        ),
        # the PAN output reaches its FPN map through a trained 1x1 conv (identity at the start)
        # instead of being pulled onto it (detkd.losses.MSSDLoss)
        Param("ADAPT", False, one_of(True, False)),
        # both terms on the maps standardized per channel (not in the paper; detkd.losses.MSSDLoss)
        Param("NORMALIZE", True, one_of(True, False)),
    )

    @configurable
    def __init__(self, *, channels, **params):
        super().__init__()
        self.set_params(params)
        self.in_features = list(self.in_features)
        self.weights = dict(zip(self.in_features, map(float, self.weights)))
        self.mask_weights = dict(zip(self.in_features, map(float, self.mask_weights)))
        if self.adapt and not any(self.weights.values()):
            raise ValueError(
                "MODEL.DISTILL.MSSD.ADAPT True adapts the self-distillation term, which WEIGHTS 0 "
                "(MSSD's default) turns off: the adaptation layers would train nothing. Set "
                "MSSD.WEIGHTS above 0 (e.g. 0.1 per level) or ADAPT False"
            )
        self.loss = MSSDLoss(
            channels, self.in_features, adapt=bool(self.adapt), normalize=bool(self.normalize)
        )

    @classmethod
    def shape_args(cls, cfg, student_shapes, teacher_shapes=None):
        names = cfg.MODEL.DISTILL.MSSD.IN_FEATURES
        _check_bottom_up(student_shapes, names)
        channels = {feature_shape(student_shapes, f, "student", "MSSD").channels for f in names}
        if len(channels) != 1:
            raise ValueError(
                f"MODEL.DISTILL.MSSD.IN_FEATURES must share one channel count, got {channels}"
            )
        return dict(channels=channels.pop())

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
            f: self.loss.predicted_mask(f, features[f]) for f in self.in_features if f in features
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
            losses[self.term("sd", f)] = self.weights[f] * terms[f"sd_{f}"]
            losses[self.term("mask", f)] = self.mask_weights[f] * terms[f"mask_{f}"]
        return losses
