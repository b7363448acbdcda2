"""Class-weighted soft cross-entropy with temperature (Chen et al., NeurIPS 2017, Sec. 3.1).

    L_soft(P_s, P_t) = - sum_c w_c * P_t^c * log P_s^c,     P = softmax(z / T)

averaged over the samples. ``w_c`` is 1 for object classes and ``background_weight`` (1.5 in the
paper's PASCAL experiments) for the background class, to counter the background imbalance.
The full classification loss is ``(1 - mu) * L_hard + mu * L_soft`` (mu = 0.5); the caller
scales detectron2's own hard loss by ``1 - mu`` and adds ``mu * L_soft``.

The RPN's objectness is one logit ``z`` per anchor (a sigmoid); its two-class form is
``softmax([0, z])``, see :func:`binary_logits_to_two_class` (background first).
"""

import torch
from torch.nn import functional as F

__all__ = ["weighted_soft_cross_entropy", "binary_logits_to_two_class", "class_weights"]


def class_weights(
    num_classes_with_bg: int, background_index: int, background_weight: float, device=None
):
    """``(C,)`` weights: 1 everywhere, ``background_weight`` at ``background_index``."""
    w = torch.ones(num_classes_with_bg, device=device)
    w[background_index] = background_weight
    return w


def binary_logits_to_two_class(objectness: torch.Tensor) -> torch.Tensor:
    """``(..,)`` sigmoid logits -> ``(.., 2)`` softmax logits ``[background, object] = [0, z]``."""
    return torch.stack([torch.zeros_like(objectness), objectness], dim=-1)


def weighted_soft_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over the ``R`` rows of ``- sum_c w_c softmax(t/T)_c log softmax(s/T)_c``; logits
    ``(R, C)``.

    Returns 0 (still connected to the graph) when there are no rows.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"soft CE: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ (different class counts?)"
        )
    if not temperature > 0:
        raise ValueError(f"soft CE: temperature must be > 0, got {temperature}")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    teacher_prob = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    student_log_prob = F.log_softmax(student_logits / temperature, dim=-1)
    return -(weights * teacher_prob * student_log_prob).sum(dim=-1).mean()
