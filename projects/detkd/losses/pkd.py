"""PKD: feature distillation with the Pearson correlation coefficient (Cao et al., "PKD: General
Distillation Framework for Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022,
Sec. 3.2).

Each channel of the student map ``S`` and the teacher map ``T`` (``N x C x H x W``) is normalised
to zero mean and unit variance over its ``N*H*W`` values; the loss is half the mean squared error
between the normalised maps:

    L_pkd = 1/2 * mean((norm(S) - norm(T))^2) = mean_c (1 - r_c)

with ``r_c`` the Pearson correlation of channel ``c`` (variance over ``N*H*W``, not ``N*H*W - 1``,
so the identity holds, up to the ``eps`` added to the variance). Normalising removes the scale and
shift of each channel, so teachers whose FPN activations are larger than the student's (other
heads, other normalisation) need no re-weighting. A constant channel (zero variance) normalises to
0, with a finite loss and finite gradients.
"""

import torch
from torch.nn import functional as F

from ..utils import at_least_float32

__all__ = ["channel_standardize", "pkd_loss"]


def channel_standardize(feat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``feat`` (N, C, H, W) with each channel at zero mean and unit (population) variance over
    ``N*H*W``; a constant channel becomes 0 (``eps`` inside the square root keeps its gradient
    finite)."""
    feat = at_least_float32(feat)  # fp16 variances overflow (std > 256) or lose the eps
    mean = feat.mean(dim=(0, 2, 3), keepdim=True)
    var = feat.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return (feat - mean) / torch.sqrt(var + eps)


def pkd_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """``1/2 * mean((norm(S) - norm(T))^2)`` for maps of one shape; the teacher is detached."""
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"PKD: student {tuple(student_feat.shape)} and teacher {tuple(teacher_feat.shape)} "
            "maps differ (align channels, resize one side)"
        )
    s = channel_standardize(student_feat)
    t = channel_standardize(teacher_feat.detach())
    return F.mse_loss(s, t) / 2
