"""Hint learning with an adaptation layer (Chen et al., NeurIPS 2017, Sec. 3.3; FitNets).

    L_hint(V, Z) = || V - adapt(Z) ||^2      (or ||.||_1)

between a teacher feature ``V`` and a student feature ``Z`` mapped to the teacher's channels by
a 1x1 or 3x3 convolution ``adapt``, averaged over the elements. The adaptation layer is used even
when the channel counts match: Chen et al. found hints with adaptation better than without. It
trains with the student and is dropped at export.

With ``normalize`` (not in the paper), ``V`` and ``adapt(Z)`` are first standardized per channel
over the batch's positions (:func:`detkd.losses.channel_standardize`), as FGD's and MGD's
``NORMALIZE`` do: on raw maps the error follows the teacher's activation scale, and a teacher with a
few heavy-tailed channels (photographic texture) puts nearly all of it on those channels.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .pkd import channel_standardize

__all__ = ["HintLoss"]


class HintLoss(nn.Module):
    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        kernel_size: int = 1,
        norm: str = "l2",
        normalize: bool = False,
    ):
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"HintLoss: adaptation kernel must be 1 or 3, got {kernel_size}")
        if norm not in ("l2", "l1"):
            raise ValueError(f"HintLoss: norm must be 'l2' or 'l1', got {norm!r}")
        self.norm = norm
        self.normalize = normalize
        self.adaptation = nn.Conv2d(
            student_channels, teacher_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        adapted = self.adaptation(student_feat)
        if adapted.shape != teacher_feat.shape:
            raise ValueError(
                f"HintLoss: adapted student feature {tuple(adapted.shape)} and teacher feature "
                f"{tuple(teacher_feat.shape)} differ"
            )
        teacher_feat = teacher_feat.detach()
        if self.normalize:
            adapted, teacher_feat = channel_standardize(adapted), channel_standardize(teacher_feat)
        if self.norm == "l2":
            return F.mse_loss(adapted, teacher_feat)
        return F.l1_loss(adapted, teacher_feat)
