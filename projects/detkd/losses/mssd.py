"""Multi-scale self-distillation with a Gaussian target mask (Jia et al., "MSSD", Visual
Intelligence 2024).

Self-distillation, per level ``l`` of the same scale: the neck's top-down FPN output ``P_l``
teaches the deeper bottom-up PAN output ``N_l``; the teacher side is detached:

    L_sd = sum_l w_l * mean((N_l - stopgrad(P_l))^2)

That form pulls each PAN output onto its FPN map, which can only undo what the bottom-up path adds.
With ``adapt`` the student side goes through a trained 1x1 conv first (as Chen et al.'s hint
adaptation, NeurIPS 2017 §3.3), initialised to the identity so that training starts at the
paper's form:

    L_sd = sum_l w_l * mean((adapt_sd_l(N_l) - stopgrad(P_l))^2)

Gaussian mask loss: a light adaptation layer (1x1 conv ``C -> 1`` and a sigmoid, since the
target lies in [0, 1]) maps each output map ``N_l`` to a one-channel map trained with MSE against
the Gaussian encoding of the GT boxes on that grid
(:func:`detkd.losses.masks.gaussian_target_mask`, background 0):

    L_mask = sum_l v_l * mean((sigmoid(adapt_l(N_l)) - G_l)^2)

The sigmoid keeps the mask loss and its gradient bounded whatever the scale of the features: with
a plain linear head, un-normalized FPN features made it diverge on the demo.

With ``normalize`` (not in the paper) both terms read the maps standardized per channel
(:func:`detkd.losses.channel_standardize`): the self-distillation compares ``norm(N_l)`` with
``norm(P_l)`` and the mask head reads ``norm(N_l)``, so neither term can be lowered by changing
the scale of ``N_l``. On the shapes the paper's form moves that scale by an order of magnitude or
more: the self-distillation shrinks the PAN outputs onto the FPN maps' scale, the mask term alone
grows them (DEMO.md, *MSSD: what each term does to the PAN outputs*).

Neither changes the detector at inference: the adaptation layers are dropped at export.
"""

from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .masks import gaussian_target_mask
from .pkd import channel_standardize

__all__ = ["MSSDLoss"]


def identity_conv1x1(channels: int) -> nn.Conv2d:
    """A 1x1 conv ``channels -> channels`` that starts as the identity (weight I, bias 0)."""
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        conv.bias.zero_()
    return conv


class MSSDLoss(nn.Module):
    """The unweighted MSSD terms of every level; one mask head (1x1 conv ``C -> 1``) per level.

    ``forward(student_feats, teacher_feats, gt_boxes, image_sizes, strides)`` with the PAN outputs
    ``N_l`` as the student and the top-down maps ``P_l`` as the (detached) teacher returns
    ``{"sd_<level>": mean((N_l - P_l)^2), "mask_<level>": mean((sigmoid(adapt_l(N_l)) - G_l)^2)}``;
    the per-level weights ``w_l``, ``v_l`` are applied by :class:`detkd.distillers.MSSDDistiller`.
    ``adapt``: the self-distillation term compares ``adapt_sd_l(N_l)`` (a 1x1 conv per level,
    starting as the identity) with ``P_l``. ``normalize``: both terms on the maps standardized per
    channel.
    """

    def __init__(
        self,
        channels: int,
        level_names: Sequence[str],
        adapt: bool = False,
        normalize: bool = False,
    ):
        super().__init__()
        self.level_names = list(level_names)
        self.normalize = normalize
        self.mask_heads = nn.ModuleDict(
            {name: nn.Conv2d(channels, 1, kernel_size=1) for name in level_names}
        )
        self.adapters = nn.ModuleDict(
            {name: identity_conv1x1(channels) for name in level_names} if adapt else {}
        )

    def forward(
        self,
        student_feats: Dict[str, torch.Tensor],
        teacher_feats: Dict[str, torch.Tensor],
        gt_boxes: List[torch.Tensor],
        image_sizes,
        strides: Dict[str, float],
    ) -> Dict[str, torch.Tensor]:
        losses = {}
        for name in self.level_names:
            out, teacher = student_feats[name], teacher_feats[name].detach()
            if self.normalize:
                out, teacher = channel_standardize(out), channel_standardize(teacher)
            student = self.adapters[name](out) if self.adapters else out
            losses[f"sd_{name}"] = F.mse_loss(student, teacher)
            target = gaussian_target_mask(gt_boxes, image_sizes, out.shape[-2:], strides.get(name))
            losses[f"mask_{name}"] = F.mse_loss(self._mask(name, out), target)
        return losses

    def predicted_mask(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """The ``(N, H, W)`` mask the level's head predicts from the PAN output ``out``."""
        return self._mask(name, channel_standardize(out) if self.normalize else out)

    def _mask(self, name: str, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mask_heads[name](out)[:, 0])
