"""Teacher-bounded regression (Chen et al., NeurIPS 2017, Sec. 3.2) on the RPN's and the RCN's box
deltas: ``L_sL1 + nu * L_b``; the loss is :func:`detkd.losses.bounded_regression_loss`.

Config block ``MODEL.DISTILL.BOUNDED_REG``; terms ``loss_bounded_reg_rpn``,
``loss_bounded_reg_rcn``; the share of samples whose bound is active is logged as
``distill/<stage>_bound_active``.
"""

import math

from detectron2.config import CfgNode, configurable

from ..losses import bounded_regression_loss
from ..utils import put_scalar
from .base import DISTILLER_REGISTRY, Distiller, check_targets, check_weight

__all__ = ["BoundedRegressionDistiller"]


@DISTILLER_REGISTRY.register()
class BoundedRegressionDistiller(Distiller):
    """The teacher's regression error bounds the student's: penalised only while the student is
    worse."""

    config_block = "BOUNDED_REG"
    name = "bounded_reg"
    auto_balanced = False  # a hinge on the regression loss, ~0 until the student has foregrounds

    @classmethod
    def add_config(cls, node: CfgNode):
        node.TARGETS = ["rpn", "rcn"]
        node.NU = 0.5
        node.MARGIN = 0.0

    @configurable
    def __init__(self, *, targets=("rpn", "rcn"), nu=0.5, margin=0.0):
        super().__init__()
        check_targets("BOUNDED_REG", targets)
        check_weight("BOUNDED_REG", "NU", nu)
        if not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise ValueError(
                f"MODEL.DISTILL.BOUNDED_REG.MARGIN must be a finite number, got {margin!r}"
            )
        self.targets = list(targets)
        self.nu, self.margin = nu, margin

    @property
    def teacher_needs(self):
        """The teacher's outputs of the stages it distils (``rpn``, ``rcn``)."""
        return frozenset(self.targets)

    @classmethod
    def from_config(cls, cfg, student_shapes=None, teacher_shapes=None):
        c = cfg.MODEL.DISTILL.BOUNDED_REG
        return dict(targets=list(c.TARGETS), nu=c.NU, margin=c.MARGIN)

    def forward(self, batch):
        losses = {}
        for stage in self.targets:
            s, t, y, normalizer = batch.regression_triplets(stage)
            loss, active = bounded_regression_loss(s, t, y, self.margin, normalizer)
            losses[f"loss_bounded_reg_{stage}"] = self.nu * loss
            put_scalar(f"distill/{stage}_bound_active", active)
        return losses
