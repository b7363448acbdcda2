"""Teacher-bounded regression (Chen et al., NeurIPS 2017, Sec. 3.2) on the RPN's and the RCN's box
deltas: ``L_sL1 + nu * L_b``; the loss is :func:`detkd.losses.bounded_regression_loss`.

Config block ``MODEL.DISTILL.BOUNDED_REG``; terms ``loss_bounded_reg_rpn``,
``loss_bounded_reg_rcn``; the share of samples whose bound is active is logged as
``distill/<stage>_bound_active``.
"""

from ..losses import bounded_regression_loss
from ..utils import put_scalar
from .base import DISTILLER_REGISTRY, StageDistiller
from .params import Param, finite, non_negative, stages

__all__ = ["BoundedRegressionDistiller"]


@DISTILLER_REGISTRY.register()
class BoundedRegressionDistiller(StageDistiller):
    """The teacher's regression error bounds the student's: penalised only while the student is
    worse."""

    config_block = "BOUNDED_REG"
    name = "bounded_reg"
    auto_balanced = False  # a hinge on the regression loss, ~0 until the student has foregrounds
    params = (
        Param("TARGETS", ["rpn", "rcn"], stages),
        Param("NU", 0.5, non_negative),
        Param("MARGIN", 0.0, finite),
    )

    def forward(self, batch):
        losses = {}
        for stage in self.targets:
            s, t, y, normalizer = batch.regression_triplets(stage)
            loss, active = bounded_regression_loss(s, t, y, self.margin, normalizer)
            losses[self.term(stage)] = self.nu * loss
            put_scalar(f"distill/{stage}_bound_active", active)
        return losses
