"""CWD: channel-wise distillation (Shu et al., "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021, Sec. 3.2).

Each channel of a map is turned into a distribution over its ``H*W`` positions,
``phi(y_c) = softmax(y_c / tau)``, and the student's is pulled to the teacher's with the KL
divergence, scaled by ``tau^2``:

    L_cwd = tau^2 / (N*C) * sum_{n,c} KL(phi(T_nc) || phi(S_nc))
          = tau^2 / (N*C) * sum_{n,c} sum_i phi(T_nc)_i * (log phi(T_nc)_i - log phi(S_nc)_i)

so each channel attends to where the teacher's activations are, whatever their scale. The FPN
setting uses ``tau = 1``.
"""

import torch
from torch.nn import functional as F

__all__ = ["channel_wise_divergence"]


def channel_wise_divergence(
    student_feat: torch.Tensor, teacher_feat: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``L_cwd`` above for maps of one shape ``(N, C, H, W)``; the teacher is detached."""
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"CWD: student {tuple(student_feat.shape)} and teacher {tuple(teacher_feat.shape)} "
            "maps differ (align channels, resize one side)"
        )
    n, c = student_feat.shape[:2]
    s = F.log_softmax(student_feat.reshape(n * c, -1) / temperature, dim=1)
    t = F.log_softmax(teacher_feat.detach().reshape(n * c, -1) / temperature, dim=1)
    kl = (t.exp() * (t - s)).sum()
    return temperature**2 * kl / (n * c)
