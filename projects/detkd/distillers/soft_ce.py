"""Class-weighted soft cross-entropy (Chen et al., NeurIPS 2017, Sec. 3.1) on the RPN's objectness
and the RCN's class logits: ``(1 - mu) * L_hard + mu * L_soft``; the loss is
:func:`detkd.losses.weighted_soft_cross_entropy`.

Config block ``MODEL.DISTILL.SOFT_CE``; terms ``loss_soft_ce_rpn``, ``loss_soft_ce_rcn``;
detectron2's ``loss_rpn_cls`` / ``loss_cls`` are scaled by ``1 - mu``.
"""

from ..losses import (
    binary_logits_to_two_class,
    class_weights,
    weighted_soft_cross_entropy,
)
from .base import DISTILLER_REGISTRY, StageDistiller
from .params import Param, non_negative, positive, stages, unit_interval

__all__ = ["SoftCEDistiller"]

# the hard (detector) classification loss of each stage
HARD_CLS_LOSS = {"rpn": "loss_rpn_cls", "rcn": "loss_cls"}


@DISTILLER_REGISTRY.register()
class SoftCEDistiller(StageDistiller):
    """Soft targets from the teacher's RPN and/or RCN, background weighted."""

    config_block = "SOFT_CE"
    name = "soft_ce"
    auto_balanced = False  # mu mixes it into the hard CE: already on the detection loss's scale
    params = (
        Param("TARGETS", ["rpn", "rcn"], stages),
        Param("MU", 0.5, unit_interval),
        Param("TEMPERATURE", 1.0, positive),
        Param("BACKGROUND_WEIGHT", 1.5, non_negative),
        Param("WEIGHT", 1.0, non_negative),
    )

    def hard_loss_scales(self):
        return {HARD_CLS_LOSS[t]: 1.0 - self.mu for t in self.targets}

    def forward(self, batch):
        losses = {}
        for stage in self.targets:
            s, t = batch.classification_pairs(stage)
            if stage == "rpn":  # sigmoid objectness as 2-class logits [background, object]
                s, t, background = binary_logits_to_two_class(s), binary_logits_to_two_class(t), 0
            else:
                background = s.shape[1] - 1
            weights = class_weights(s.shape[1], background, self.background_weight, s.device)
            soft = weighted_soft_cross_entropy(s, t, weights, self.temperature)
            losses[self.term(stage)] = self.weight * self.mu * soft
        return losses
