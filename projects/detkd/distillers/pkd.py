"""PKD (Cao et al., NeurIPS 2022): FPN features compared through the Pearson correlation of each
channel; the loss is :func:`detkd.losses.pkd_loss` (its docstring has the formula).

Config block ``MODEL.DISTILL.PKD`` (mmrazor's Faster R-CNN setting: weight 6 on P2-P5); terms
``loss_pkd_<level>``. A 1x1 align conv maps student channels to the teacher's where they differ.
The automatic balance scales it to 3x the detection loss (``BALANCE_FACTOR`` 3.0; the paired
measurements behind it are in docs/METHODS.md).
"""

from ..losses import pkd_loss
from .base import DISTILLER_REGISTRY, FeatureLevelDistiller
from .params import Param, non_negative, unique

__all__ = ["PKDDistiller"]


@DISTILLER_REGISTRY.register()
class PKDDistiller(FeatureLevelDistiller):
    """``WEIGHT * (1 - mean Pearson r)`` per FPN level."""

    config_block = "PKD"
    name = "pkd"
    balance_factor = 3.0
    params = (
        Param("IN_FEATURES", ["p2", "p3", "p4", "p5"], unique),
        Param("WEIGHT", 6.0, non_negative),
    )

    def forward(self, batch):
        return {self.term(f): self.weight * pkd_loss(s, t) for f, s, t in self.aligned_pairs(batch)}
