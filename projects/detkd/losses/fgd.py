"""Focal and Global Distillation (Yang et al., "Focal and Global Knowledge Distillation for
Detectors", CVPR 2022), for one FPN level.

With student feature ``S`` (aligned to the teacher's channels by a 1x1 conv ``f`` when they
differ), teacher feature ``T``, both ``N x C x H x W``:

* attention (Sec. 3.1, Eqs. 5-6), temperature ``tau`` (0.5):
  ``A^S = H*W * softmax_{hw}(mean_c |F| / tau)``, ``A^C = C * softmax_c(mean_{hw} |F| / tau)``
* focal feature loss (Eq. 7), teacher attention on both terms:
  ``L_fea = alpha * sum(M * Sc * A^S_t * A^C_t * (T - f(S))^2) + beta * sum((1-M) * Sc * A^S_t * A^C_t * (T - f(S))^2)``
  with ``M * Sc`` / ``(1-M) * Sc`` the foreground / background scale masks of
  :func:`detkd.losses.masks.fgd_masks`.
* attention loss (Eq. 8): ``L_at = gamma * (|A^S_t - A^S_s|_1 + |A^C_t - A^C_s|_1)``
* global loss (Sec. 3.2, Eq. 10): ``L_global = lambda * sum((R(T) - R(f(S)))^2)`` where ``R`` is a
  GcBlock; the student and the teacher side each have their own GcBlock, trained with the loss.

Every sum is divided by the batch size ``N``. Module defaults are the official implementation's
(1e-3, 5e-4, 1e-3, 5e-6); the yaml defaults are the paper's Faster R-CNN release values
(5e-5, 2.5e-5, 5e-5, 5e-7).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .masks import fgd_masks

__all__ = ["GcBlock", "FGDLoss", "spatial_attention", "channel_attention"]


def spatial_attention(feat: torch.Tensor, temperature: float, magnitude=None) -> torch.Tensor:
    """``(N, H, W)``: ``H*W * softmax over positions of (mean_c |F| / T)``."""
    n, c, h, w = feat.shape
    magnitude = feat.abs() if magnitude is None else magnitude
    # the mean's 1/C folded into the (N, HW) logits: a sum's backward is a plain broadcast
    g = magnitude.sum(dim=1).reshape(n, -1) * (1.0 / (c * temperature))
    return (h * w * F.softmax(g, dim=1)).reshape(n, h, w)


def channel_attention(feat: torch.Tensor, temperature: float, magnitude=None) -> torch.Tensor:
    """``(N, C)``: ``C * softmax over channels of (mean_hw |F| / T)``."""
    c, h, w = feat.shape[1:]
    magnitude = feat.abs() if magnitude is None else magnitude
    g = magnitude.sum(dim=(2, 3)) * (1.0 / (h * w * temperature))
    return c * F.softmax(g, dim=1)


def _attentions(feat: torch.Tensor, temperature: float):
    magnitude = feat.abs()  # shared by both attentions
    return spatial_attention(feat, temperature, magnitude), channel_attention(feat, temperature, magnitude)


class GcBlock(nn.Module):
    """Global context block (Cao et al. 2019) as FGD's relation module ``R``.

    Context modelling: a 1x1 conv ``C -> 1`` gives one logit per position, softmax over ``H*W``
    weights the positions into one ``C``-vector; transform: 1x1 conv ``C -> C/2``, LayerNorm,
    ReLU, 1x1 conv ``C/2 -> C`` (zero-initialised, so ``R`` starts as the identity); the result is
    added back to every position.
    """

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        hidden = max(int(channels * ratio), 1)
        self.context_conv = nn.Conv2d(channels, 1, kernel_size=1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.context_conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.context_conv.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C)``: the transformed global context that :meth:`forward` adds to every position."""
        n, c, h, w = x.shape
        # the 1x1 convolutions act on vectors (the context) or reduce channels: written as matrix
        # products, which is the same arithmetic with less overhead than conv kernels on CPU
        flat = x.reshape(n, c, h * w)
        conv = self.context_conv
        logits = torch.bmm(conv.weight.reshape(1, 1, c).expand(n, 1, c), flat) + conv.bias.reshape(1, 1, 1)
        weights = F.softmax(logits, dim=2)  # N,1,HW
        context = torch.bmm(flat, weights.transpose(1, 2)).reshape(n, c)  # N,C
        first, norm, _, last = self.transform
        hidden = F.linear(context, first.weight.flatten(1), first.bias)
        hidden = F.layer_norm(hidden, norm.normalized_shape[:1], norm.weight.flatten(), norm.bias.flatten())
        return F.linear(F.relu(hidden), last.weight.flatten(1), last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.context(x).reshape(*x.shape[:2], 1, 1)


class FGDLoss(nn.Module):
    """FGD on one feature level; see the module docstring for the formulas.

    ``forward(student_feat, teacher_feat, gt_boxes, image_sizes)`` returns the weighted terms
    ``{"loss_fgd_fg", "loss_fgd_bg", "loss_fgd_attention", "loss_fgd_global"}``.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        temperature: float = 0.5,
        alpha: float = 1e-3,
        beta: float = 5e-4,
        gamma: float = 1e-3,
        lambda_: float = 5e-6,
    ):
        super().__init__()
        for name, value in dict(alpha=alpha, beta=beta, gamma=gamma, lambda_=lambda_).items():
            if not (value >= 0):  # also rejects NaN
                raise ValueError(f"FGDLoss: {name} must be a non-negative number, got {value}")
        if not temperature > 0:
            raise ValueError(f"FGDLoss: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.alpha, self.beta, self.gamma, self.lambda_ = alpha, beta, gamma, lambda_
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        else:
            self.align = None
        self.gc_student = GcBlock(teacher_channels)
        self.gc_teacher = GcBlock(teacher_channels)

    def forward(
        self,
        student_feat: torch.Tensor,
        teacher_feat: torch.Tensor,
        gt_boxes: List[torch.Tensor],
        image_sizes: Sequence[Tuple[int, int]],
        stride: Optional[float] = None,
    ) -> Dict[str, torch.Tensor]:
        if student_feat.shape[1] != self.student_channels:
            raise ValueError(
                f"FGDLoss: student feature has {student_feat.shape[1]} channels, "
                f"module was built for {self.student_channels}"
            )
        if self.align is not None:  # a 1x1 conv, applied as one batched matrix product
            n, c, h, w = student_feat.shape
            weight = self.align.weight.reshape(1, self.teacher_channels, c).expand(n, -1, -1)
            student_feat = torch.baddbmm(self.align.bias.reshape(1, -1, 1), weight, student_feat.reshape(n, c, h * w))
            student_feat = student_feat.reshape(n, self.teacher_channels, h, w)
        if student_feat.shape != teacher_feat.shape:
            raise ValueError(
                f"FGDLoss: student {tuple(student_feat.shape)} and teacher {tuple(teacher_feat.shape)} "
                "features differ after alignment (resize one side first)"
            )
        n = student_feat.shape[0]
        teacher_feat = teacher_feat.detach()
        fg_scale, bg_scale = fgd_masks(gt_boxes, image_sizes, teacher_feat.shape[-2:], stride)

        t_spatial, t_channel = _attentions(teacher_feat, self.temperature)
        s_spatial, s_channel = _attentions(student_feat, self.temperature)

        c, hw = teacher_feat.shape[1], teacher_feat.shape[2] * teacher_feat.shape[3]
        diff = student_feat - teacher_feat  # S - T: its gradient w.r.t. S needs no negation
        sq_diff = diff * diff
        # sum_c A^C_t[c] (T - S)^2 as a batched (1 x C) @ (C x HW) product, then A^S_t per position
        weighted = torch.bmm(t_channel.unsqueeze(1), sq_diff.reshape(n, c, hw)).reshape_as(t_spatial) * t_spatial
        loss_fg = (weighted * fg_scale).sum() / n
        loss_bg = (weighted * bg_scale).sum() / n
        loss_att = ((t_spatial - s_spatial).abs().sum() + (t_channel - s_channel).abs().sum()) / n
        # GcBlock adds one C-vector per image: R(S) - R(T) = D + delta with D = S - T and
        # delta = context_s - context_t, so sum (D + delta)^2 = sum D^2 + 2 sum_nc delta * sum_hw D
        # + HW * sum delta^2, computed from D's sums without building R(T) and R(S)
        delta = self.gc_student.context(student_feat) - self.gc_teacher.context(teacher_feat)
        loss_global = (sq_diff.sum() + 2 * (delta * diff.sum(dim=(2, 3))).sum() + hw * (delta * delta).sum()) / n
        return {
            "loss_fgd_fg": self.alpha * loss_fg,
            "loss_fgd_bg": self.beta * loss_bg,
            "loss_fgd_attention": self.gamma * loss_att,
            "loss_fgd_global": self.lambda_ * loss_global,
        }
