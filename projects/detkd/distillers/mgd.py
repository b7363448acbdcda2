"""MGD (Yang et al., ECCV 2022): a randomly masked student map must generate the teacher's; the
loss is :func:`detkd.losses.mgd_loss` with :class:`detkd.losses.MGDGenerator`.

Config block ``MODEL.DISTILL.MGD`` (the official Faster R-CNN setting: alpha 5e-7, masked ratio
0.45, P2-P6); terms ``loss_mgd_<level>``. The masks come from a random generator of this method's
own, seeded with ``MGD.SEED``, or with the run's ``SEED`` when ``MGD.SEED`` is negative (0 when both
are: detectron2 then seeds the rest at random), so the masks do not depend on anything else that
draws random numbers and two runs with one seed draw the same masks. Generator and align layers
are dropped at export with the other distillers. ``NORMALIZE`` (not in the paper): the generated and
the teacher's maps are standardized per channel (:func:`detkd.losses.channel_standardize`) before
the squared error, which then weighs every channel alike instead of the teacher's few largest
(:class:`detkd.losses.FGDLoss` says why that matters); the automatic balance sets its scale, to
3x the detection loss (``BALANCE_FACTOR`` 3.0). Both are the defaults; ``NORMALIZE False`` with
``BALANCE_FACTOR 1.0`` is the paper's form (the paired measurements: docs/METHODS.md).
"""

import torch
from detectron2.config import configurable
from detectron2.utils import comm
from torch import nn

from ..losses import MGDGenerator, channel_standardize, mgd_loss, random_position_mask
from .base import DISTILLER_REGISTRY, FeatureLevelDistiller
from .params import Param, integer, non_negative, one_of, unique, unit_interval

__all__ = ["MGDDistiller"]


@DISTILLER_REGISTRY.register()
class MGDDistiller(FeatureLevelDistiller):
    """``ALPHA * sum((T - G(align(S) * M))^2) / N`` per FPN level."""

    config_block = "MGD"
    name = "mgd"
    balance_factor = 3.0
    params = (
        Param("IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"], unique),
        Param("ALPHA", 5e-7, non_negative),
        Param("MASK_RATIO", 0.45, unit_interval),  # lambda: the share of positions masked
        # the masks' random seed; negative: the run's SEED (0 if that is negative too)
        Param("SEED", -1, integer),
        # the generated and the teacher's maps standardized per channel (not in the paper)
        Param("NORMALIZE", True, one_of(True, False)),
    )

    @configurable
    def __init__(self, *, student_channels, teacher_channels, **params):
        super().__init__(
            student_channels=student_channels, teacher_channels=teacher_channels, **params
        )
        self.mask_ratio, self.seed = float(self.mask_ratio), max(int(self.seed), 0)
        self.generators = nn.ModuleDict(
            {f: MGDGenerator(tc) for f, (_, tc) in self.channels.items()}
        )
        # created on the features' device at the first step
        self._rng, self._rng_device = None, None

    @classmethod
    def config_args(cls, cfg):
        args = super().config_args(cfg)
        if args["seed"] < 0:
            args["seed"] = max(cfg.SEED, 0)
        return args

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
            generated = self.generators[f](s * mask)
            if self.normalize:
                generated, t = channel_standardize(generated), channel_standardize(t.detach())
            term = mgd_loss(generated, t)
            losses[self.term(f)] = self.alpha * batch.per_area(term, t)
        return losses
