"""Head cross-forward (after CrossKD, Wang et al., "CrossKD: Cross-Head Knowledge Distillation for
Object Detection", CVPR 2024, Sec. 3), for the second stage of Faster R-CNN.

The student's FPN features, pooled at the student's sampled proposals, go through the teacher's
frozen box head and predictor; what comes out (the "cross" predictions) is pulled to the teacher's
own predictions on the same proposals. The gradient reaches the student's backbone and FPN through
the teacher's head, whose weights never change, so the student learns features the teacher's head
reads as the teacher's own, without the conflict between the ground truth and the teacher's
targets on the student's own head.

Classification (KL with temperature ``T``, averaged over the ``R`` proposals):

    L_cls = T^2 / R * sum_r KL(softmax(z_t,r / T) || softmax(z_x,r / T))

Boxes (optional): L1 between the cross and the teacher's deltas at each foreground proposal's GT
class, averaged over the sampled proposals as detectron2's box loss is.
"""

import torch
from torch.nn import functional as F

__all__ = ["cross_head_kl", "cross_head_box_l1"]


def cross_head_kl(
    cross_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``L_cls`` above for ``(R, K + 1)`` logits; 0 (still in the graph) when ``R = 0``."""
    if cross_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"cross head: logits {tuple(cross_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ"
        )
    if cross_logits.shape[0] == 0:
        return cross_logits.sum() * 0.0
    x = F.log_softmax(cross_logits / temperature, dim=1)
    t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return temperature**2 * (t.exp() * (t - x)).sum() / cross_logits.shape[0]


def cross_head_box_l1(
    cross_deltas: torch.Tensor, teacher_deltas: torch.Tensor, normalizer: float
) -> torch.Tensor:
    """``sum |cross - teacher|`` over foreground ``(F, 4)`` deltas, divided by ``normalizer``."""
    if cross_deltas.shape[0] == 0:
        return cross_deltas.sum() * 0.0
    return (cross_deltas - teacher_deltas.detach()).abs().sum() / max(float(normalizer), 1.0)
