"""Class-weighted soft cross-entropy (Chen et al., NeurIPS 2017, Sec. 3.1) on the RPN's objectness
and the RCN's class logits: ``(1 - mu) * L_hard + mu * L_soft``; the loss is
:func:`detkd.losses.weighted_soft_cross_entropy`.

Config block ``MODEL.DISTILL.SOFT_CE``; terms ``loss_soft_ce_rpn``, ``loss_soft_ce_rcn``;
detectron2's ``loss_rpn_cls`` / ``loss_cls`` are scaled by ``1 - mu``.
"""

import math

from detectron2.config import CfgNode, configurable

from ..losses import (
    binary_logits_to_two_class,
    class_weights,
    weighted_soft_cross_entropy,
)
from .base import DISTILLER_REGISTRY, Distiller, check_targets, check_weight

__all__ = ["SoftCEDistiller"]

# the hard (detector) classification loss of each stage
HARD_CLS_LOSS = {"rpn": "loss_rpn_cls", "rcn": "loss_cls"}


@DISTILLER_REGISTRY.register()
class SoftCEDistiller(Distiller):
    """Soft targets from the teacher's RPN and/or RCN, background weighted."""

    config_block = "SOFT_CE"
    name = "soft_ce"
    auto_balanced = False  # mu mixes it into the hard CE: already on the detection loss's scale

    @classmethod
    def add_config(cls, node: CfgNode):
        node.TARGETS = ["rpn", "rcn"]
        node.MU = 0.5
        node.TEMPERATURE = 1.0
        node.BACKGROUND_WEIGHT = 1.5
        node.WEIGHT = 1.0

    @configurable
    def __init__(
        self, *, targets=("rpn", "rcn"), mu=0.5, temperature=1.0, background_weight=1.5, weight=1.0
    ):
        super().__init__()
        check_targets("SOFT_CE", targets)
        for name, v in dict(WEIGHT=weight, BACKGROUND_WEIGHT=background_weight).items():
            check_weight("SOFT_CE", name, v)
        if not (0.0 <= mu <= 1.0):
            raise ValueError(f"MODEL.DISTILL.SOFT_CE.MU must be in [0, 1], got {mu!r}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(
                f"MODEL.DISTILL.SOFT_CE.TEMPERATURE must be > 0 and finite, got {temperature!r}"
            )
        self.targets = list(targets)
        self.mu, self.temperature = mu, temperature
        self.background_weight, self.weight = background_weight, weight

    @property
    def teacher_needs(self):
        """The teacher's outputs of the stages it distils (``rpn``, ``rcn``)."""
        return frozenset(self.targets)

    @classmethod
    def from_config(cls, cfg, student_shapes=None, teacher_shapes=None):
        c = cfg.MODEL.DISTILL.SOFT_CE
        return dict(
            targets=list(c.TARGETS),
            mu=c.MU,
            temperature=c.TEMPERATURE,
            background_weight=c.BACKGROUND_WEIGHT,
            weight=c.WEIGHT,
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
            losses[f"loss_soft_ce_{stage}"] = self.weight * self.mu * soft
        return losses
