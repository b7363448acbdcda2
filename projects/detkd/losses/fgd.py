"""Focal and Global Distillation (Yang et al., "Focal and Global Knowledge Distillation for
Detectors", CVPR 2022), for one FPN level.

With student feature ``S`` (aligned to the teacher's channels by a 1x1 conv ``f`` when they
differ), teacher feature ``T``, both ``N x C x H x W``, and temperature ``tau`` (0.5):

* attention (Sec. 3.1, Eqs. 5-6):
  ``A^S = H*W * softmax_hw(mean_c |F| / tau)``, ``A^C = C * softmax_c(mean_hw |F| / tau)``
* focal feature loss (Eq. 7), the teacher's attention on both terms:
  ``L_fg = sum(M * Sc * A^S_t * A^C_t * (T - f(S))^2)``,
  ``L_bg = sum((1 - M) * Sc * A^S_t * A^C_t * (T - f(S))^2)``, with ``M * Sc`` and ``(1 - M) * Sc``
  the foreground and background scale masks of :func:`detkd.losses.masks.fgd_masks`;
* attention loss (Eq. 8): ``L_at = |A^S_t - A^S_s|_1 + |A^C_t - A^C_s|_1``;
* global loss (Sec. 3.2, Eq. 10): ``L_global = sum((R(T) - R(f(S)))^2)``, ``R`` a GcBlock; the
  student and the teacher side each have their own GcBlock, trained with the loss.

With ``normalize`` (not in the paper), ``T`` and ``f(S)`` are first standardized per channel over
the batch's positions (:func:`detkd.losses.channel_standardize`, PKD's normalisation) and every
term, the attention too, is computed on the standardized maps. Why: FGD's squared error and its
attention (``softmax(mean |F| / 0.5)``) follow the teacher's raw activation scale, so a teacher
with a few channels of large, heavy-tailed responses (photographic texture in the background)
puts nearly all of FGD's loss on those channels at a few cells; standardized, every channel
weighs alike (DEMO.md, *FGD on the glyphs: what the teacher's maps put in its loss*).

Every sum is divided by the batch size ``N``. The terms are returned unweighted; the paper's
weights ``alpha, beta, gamma, lambda``
(``L = alpha L_fg + beta L_bg + gamma L_at + lambda L_global``) are applied by
:class:`detkd.distillers.FGDDistiller`.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..utils import at_least_float32
from .masks import fgd_masks
from .pkd import channel_standardize

__all__ = ["GcBlock", "FGDLoss", "spatial_attention", "channel_attention"]


def spatial_attention(feat: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(N, H, W)``: ``A^S = H*W * softmax over positions of (mean_c |F| / T)`` (Eq. 5)."""
    n, c, h, w = feat.shape
    logits = feat.abs().mean(dim=1).reshape(n, h * w) / temperature
    return h * w * F.softmax(logits, dim=1).reshape(n, h, w)


def channel_attention(feat: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(N, C)``: ``A^C = C * softmax over channels of (mean_hw |F| / T)`` (Eq. 6)."""
    logits = feat.abs().mean(dim=(2, 3)) / temperature
    return feat.shape[1] * F.softmax(logits, dim=1)


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
        """``(N, C, 1, 1)``: the transformed global context that ``forward`` adds to every
        position."""
        n, c, h, w = x.shape
        position_weights = F.softmax(self.context_conv(x).reshape(n, 1, h * w), dim=2)
        context = (x.reshape(n, c, h * w) * position_weights).sum(dim=2).reshape(n, c, 1, 1)
        return self.transform(context)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.context(x)


def relation_distance(
    diff: torch.Tensor, sq_diff_sum: torch.Tensor, context_t: torch.Tensor, context_s: torch.Tensor
) -> torch.Tensor:
    """``sum((R(T) - R(S))^2)`` of Eq. 10 without building ``R(T)`` and ``R(S)``.

    A GcBlock adds one ``C``-vector per image to every position, so with ``D = T - S`` and
    ``delta = context_t - context_s``: ``R(T) - R(S) = D + delta`` and
    ``sum (D + delta)^2 = sum D^2 + 2 sum_nc delta * sum_hw D + H*W * sum delta^2``, where
    ``sum D^2`` is shared with the focal term. Why: building both relation maps doubled the cost of
    FGD on the demo's maps (5 levels forward + backward: 2.1x the loss's earlier hand-tuned version,
    1.15x with this helper, measured interleaved in one process) and put the "all" demo step above
    1.25 teacher forwards over the student step (BENCHMARKS.md).
    """
    delta = (context_t - context_s).flatten(1)
    hw = diff.shape[2] * diff.shape[3]
    return sq_diff_sum + 2 * (delta * diff.sum(dim=(2, 3))).sum() + hw * (delta * delta).sum()


class FGDLoss(nn.Module):
    """FGD on one feature level; see the module docstring for the formulas.

    ``forward(student_feat, teacher_feat, gt_boxes, image_sizes, stride)`` returns the unweighted
    terms ``{"fg", "bg", "attention", "global"}``. ``normalize``: the terms on the maps standardized
    per channel (module docstring).
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        temperature: float = 0.5,
        normalize: bool = False,
    ):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"FGDLoss: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.normalize = bool(normalize)
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
        s = self.align(student_feat) if self.align is not None else student_feat
        t = teacher_feat.detach()
        if s.shape != t.shape:
            raise ValueError(
                f"FGDLoss: student {tuple(s.shape)} and teacher {tuple(t.shape)} "
                "features differ after alignment (resize one side first)"
            )
        s, t = at_least_float32(s), at_least_float32(t)  # fp16 squares overflow past |T - S| = 256
        if self.normalize:
            s, t = channel_standardize(s), channel_standardize(t)
        n = t.shape[0]
        fg_scale, bg_scale = fgd_masks(gt_boxes, image_sizes, t.shape[-2:], stride)
        t_spatial, t_channel = (
            spatial_attention(t, self.temperature),
            channel_attention(t, self.temperature),
        )
        s_spatial, s_channel = (
            spatial_attention(s, self.temperature),
            channel_attention(s, self.temperature),
        )

        diff = t - s
        sq_diff = diff * diff
        # (T - f(S))^2 weighted by the teacher's attention, summed over channels: (N, H, W)
        weighted = (sq_diff * t_channel[:, :, None, None]).sum(dim=1) * t_spatial
        # sum((R(T) - R(f(S)))^2)
        relation = relation_distance(
            diff, sq_diff.sum(), self.gc_teacher.context(t), self.gc_student.context(s)
        )
        return {
            "fg": (weighted * fg_scale).sum() / n,
            "bg": (weighted * bg_scale).sum() / n,
            "attention": ((t_spatial - s_spatial).abs().sum() + (t_channel - s_channel).abs().sum())
            / n,
            "global": relation / n,
        }
