"""CWD (Shu et al., ICCV 2021): per channel, the distribution of a map over its positions, student
pulled to teacher by KL; the loss is :func:`detkd.losses.channel_wise_divergence`.

Config block ``MODEL.DISTILL.CWD`` (mmrazor's FPN setting: tau 1, weight 10, P2-P6); terms
``loss_cwd_<level>``. A 1x1 align conv maps student channels to the teacher's where they differ.
The automatic balance scales it to 3 x ``AUTO_TARGET`` times the detection loss
(``BALANCE_FACTOR`` 3.0; the paired measurements behind it are in docs/METHODS.md).
"""

from ..losses import channel_wise_divergence
from .base import DISTILLER_REGISTRY, FeatureLevelDistiller
from .params import Param, non_negative, positive, unique

__all__ = ["CWDDistiller"]


@DISTILLER_REGISTRY.register()
class CWDDistiller(FeatureLevelDistiller):
    """``WEIGHT * tau^2 * KL(teacher || student)`` per channel, per FPN level."""

    config_block = "CWD"
    name = "cwd"
    balance_factor = 3.0
    params = (
        Param("IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"], unique),
        Param("TEMPERATURE", 1.0, positive),
        Param("WEIGHT", 10.0, non_negative),
    )

    def forward(self, batch):
        return {
            self.term(f): self.weight * channel_wise_divergence(s, t, self.temperature)
            for f, s, t in self.aligned_pairs(batch)
        }
