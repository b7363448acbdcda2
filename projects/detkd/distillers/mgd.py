"""MGD (Yang et al., ECCV 2022): a randomly masked student map must generate the teacher's; the
loss is :func:`detkd.losses.mgd_loss` with :class:`detkd.losses.MGDGenerator`.

Config block ``MODEL.DISTILL.MGD`` (the official Faster R-CNN setting: alpha 5e-7, masked ratio
0.45, P2-P6); terms ``loss_mgd_<level>``. The masks come from a random generator of this method's
own, seeded with ``MGD.SEED``, or with the run's ``SEED`` when ``MGD.SEED`` is negative (0 when both
are: detectron2 then seeds the rest at random), so the masks do not depend on anything else that
draws random numbers and two runs with one seed draw the same masks. Generator and align layers
are dropped at export with the other distillers.
"""

import torch
from detectron2.config import CfgNode, configurable
from detectron2.utils import comm
from torch import nn

from ..losses import MGDGenerator, mgd_loss, random_position_mask
from .base import DISTILLER_REGISTRY, FeatureLevelDistiller, check_weight

__all__ = ["MGDDistiller"]


@DISTILLER_REGISTRY.register()
class MGDDistiller(FeatureLevelDistiller):
    """``ALPHA * sum((T - G(align(S) * M))^2) / N`` per FPN level."""

    config_block = "MGD"
    name = "mgd"

    @classmethod
    def add_config(cls, node: CfgNode):
        node.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        node.ALPHA = 5e-7
        node.MASK_RATIO = 0.45  # lambda: the share of positions masked
        # the masks' random seed; negative: the run's SEED (0 if that is negative too)
        node.SEED = -1

    @configurable
    def __init__(
        self,
        *,
        in_features,
        student_channels,
        teacher_channels,
        alpha=5e-7,
        mask_ratio=0.45,
        seed=0,
    ):
        super().__init__(in_features, student_channels, teacher_channels)
        check_weight("MGD", "ALPHA", alpha)
        if not (0.0 <= mask_ratio <= 1.0):
            raise ValueError(f"MODEL.DISTILL.MGD.MASK_RATIO must be in [0, 1], got {mask_ratio!r}")
        self.alpha, self.mask_ratio, self.seed = alpha, float(mask_ratio), int(seed)
        self.generators = nn.ModuleDict(
            {f: MGDGenerator(tc) for f, (_, tc) in self.channels.items()}
        )
        self._rng, self._rng_device = (
            None,
            None,
        )  # created on the features' device at the first step

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        c = cfg.MODEL.DISTILL.MGD
        seed = c.SEED if c.SEED >= 0 else max(cfg.SEED, 0)
        return dict(
            **cls.level_channels(cfg, student_shapes, teacher_shapes),
            alpha=c.ALPHA,
            mask_ratio=c.MASK_RATIO,
            seed=seed,
        )

    def masks_generator(self, device) -> torch.Generator:
        """The random generator of the masks (seeded once, on ``device``)."""
        if self._rng is None or self._rng_device != device:
            # one stream per process: DDP ranks mask their own images differently
            self._rng = torch.Generator(device=device).manual_seed(self.seed + comm.get_rank())
            self._rng_device = device
        return self._rng

    def forward(self, batch):
        losses = {}
        for f, s, t in self.aligned_pairs(batch):
            n, _, h, w = s.shape
            mask = random_position_mask(
                n, h, w, self.mask_ratio, self.masks_generator(s.device), s.device
            )
            term = mgd_loss(self.generators[f](s * mask), t)
            losses[f"loss_mgd_{f}"] = self.alpha * self.per_area(term, t)
        return losses
