"""PKD: feature distillation with the Pearson correlation coefficient (Cao et al., "PKD: General
Distillation Framework for Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022,
Sec. 3.2).

Each channel of the student map ``S`` and the teacher map ``T`` (``N x C x H x W``) is normalised
to zero mean and unit variance over its ``N*H*W`` values (the whole batch, across processes
under DDP); the loss is half the mean squared error between the normalised maps:

    L_pkd = 1/2 * mean((norm(S) - norm(T))^2) = mean_c (1 - r_c)

with ``r_c`` the Pearson correlation of channel ``c`` (variance over ``N*H*W``, not ``N*H*W - 1``,
so the identity holds, up to the ``eps`` added to the variance). Normalising removes the scale and
shift of each channel, so teachers whose FPN activations are larger than the student's (other
heads, other normalisation) need no re-weighting. A constant channel (zero variance) normalises to
0, with a finite loss and finite gradients.
"""

import torch
import torch.distributed as dist
from detectron2.utils import comm
from fvcore.nn.distributed import differentiable_all_reduce
from torch.nn import functional as F

from ..utils import at_least_float32

__all__ = ["batch_channel_moments", "channel_standardize", "pkd_loss"]


def channel_standardize(feat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``feat`` (N, C, H, W) with each channel at zero mean and unit (population) variance over
    ``N*H*W``; a constant channel becomes 0 (``eps`` inside the square root keeps its gradient
    finite). Under DDP the batch is the global one: the moments come from
    :func:`batch_channel_moments`, so the maps do not depend on how the batch is split."""
    feat = at_least_float32(feat)  # fp16 variances overflow (std > 256) or lose the eps
    mean, var = batch_channel_moments(feat)
    return (feat - mean) / torch.sqrt(var + eps)


def batch_channel_moments(feat: torch.Tensor):
    """Per-channel mean and population variance (each ``(1, C, 1, 1)``) of ``feat`` over the
    ``N*H*W`` positions of the whole batch. With more than one process the sums are all-reduced
    with :func:`fvcore.nn.distributed.differentiable_all_reduce` (as detectron2's
    ``NaiveSyncBatchNorm`` does), so the gradient reaches every process's maps; processes may hold
    maps of different sizes (the positions are counted, not assumed equal)."""
    if comm.get_world_size() == 1:
        return (
            feat.mean(dim=(0, 2, 3), keepdim=True),
            feat.var(dim=(0, 2, 3), keepdim=True, unbiased=False),
        )
    count = torch.tensor([feat.numel() // feat.shape[1]], dtype=torch.int64, device=feat.device)
    dist.all_reduce(count)
    mean = differentiable_all_reduce(feat.sum(dim=(0, 2, 3))) / count
    mean = mean.view(1, -1, 1, 1)
    var = differentiable_all_reduce((feat - mean).pow(2).sum(dim=(0, 2, 3))) / count
    return mean, var.view(1, -1, 1, 1)


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
