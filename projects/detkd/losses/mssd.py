"""Multi-scale self-distillation with a Gaussian target mask (Jia et al., "MSSD", Visual
Intelligence 2024).

Self-distillation, per level ``l`` of the same scale: the neck's top-down FPN output ``P_l``
teaches the deeper bottom-up PAN output ``N_l``; the teacher side is detached:

    L_sd = sum_l w_l * mean((N_l - stopgrad(P_l))^2)

Gaussian mask loss: a light adaptation layer (1x1 conv ``C -> 1`` and a sigmoid, since the
target lies in [0, 1]) maps each output map ``N_l`` to a one-channel map trained with MSE against
the Gaussian encoding of the GT boxes on that grid
(:func:`detkd.losses.masks.gaussian_target_mask`, background 0):

    L_mask = sum_l v_l * mean((sigmoid(adapt_l(N_l)) - G_l)^2)

The sigmoid keeps the mask loss and its gradient bounded whatever the scale of the features: with
a plain linear head, un-normalized FPN features made it diverge on the demo.

Neither changes the detector at inference: the adaptation layers are dropped at export.
"""
import math
from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .masks import gaussian_target_mask

__all__ = ["MSSDLoss"]


class MSSDLoss(nn.Module):
    def __init__(self, channels: int, level_names: Sequence[str], weights: Sequence[float], mask_weights: Sequence[float]):
        super().__init__()
        if not (len(level_names) == len(weights) == len(mask_weights)):
            raise ValueError(
                f"MSSD: {len(level_names)} levels but {len(weights)} WEIGHTS and {len(mask_weights)} "
                "MASK_WEIGHTS; give one weight per level"
            )
        for w in list(weights) + list(mask_weights):
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"MSSD: weights must be non-negative finite numbers, got {w}")
        self.level_names = list(level_names)
        self.weights = [float(w) for w in weights]
        self.mask_weights = [float(w) for w in mask_weights]
        self.mask_heads = nn.ModuleDict({name: nn.Conv2d(channels, 1, kernel_size=1) for name in level_names})

    def forward(
        self,
        teacher_feats: Dict[str, torch.Tensor],
        student_feats: Dict[str, torch.Tensor],
        gt_boxes: List[torch.Tensor],
        image_sizes,
        strides: Dict[str, float],
    ) -> Dict[str, torch.Tensor]:
        losses = {}
        for name, w, v in zip(self.level_names, self.weights, self.mask_weights):
            out = student_feats[name]
            losses[f"loss_mssd_sd_{name}"] = w * F.mse_loss(out, teacher_feats[name].detach())
            target = gaussian_target_mask(gt_boxes, image_sizes, out.shape[-2:], strides.get(name))
            pred = torch.sigmoid(self.mask_heads[name](out)[:, 0])
            losses[f"loss_mssd_mask_{name}"] = v * F.mse_loss(pred, target)
        return losses
