"""Teacher-bounded L2 regression loss (Chen et al., NeurIPS 2017, Sec. 3.2).

    L_b(R_s, R_t, y) = ||R_s - y||^2   if ||R_s - y||^2 + m > ||R_t - y||^2
                     = 0               otherwise

per foreground sample, summed and divided by ``normalizer``. The teacher is an upper bound, not a
target: once the student regresses better than the teacher by the margin ``m`` it gets no extra
penalty. The full loss is ``L_sL1(R_s, y) + nu * L_b`` (nu = 0.5); detectron2 keeps the smooth-L1
term, the caller adds ``nu * L_b`` with the smooth-L1 term's own normalizer (detectron2 divides the
box loss by all sampled anchors/proposals, not only the foreground), so the two stay on one scale.
Without ``normalizer`` the sum is averaged over the foreground samples.
"""

import torch

__all__ = ["bounded_regression_loss"]


def bounded_regression_loss(
    student_deltas: torch.Tensor,
    teacher_deltas: torch.Tensor,
    target_deltas: torch.Tensor,
    margin: float = 0.0,
    normalizer: float = None,
):
    """``(loss, active_fraction)`` for ``(R, 4)`` deltas of the ``R`` foreground samples.

    ``active_fraction`` is the share of samples whose bound is on (for logging). With ``R = 0``
    the loss is 0, still connected to the graph.
    """
    if not (student_deltas.shape == teacher_deltas.shape == target_deltas.shape):
        raise ValueError(
            "bounded regression: student, teacher and target deltas must have one shape, got "
            f"{tuple(student_deltas.shape)}, {tuple(teacher_deltas.shape)}, "
            f"{tuple(target_deltas.shape)}"
        )
    if student_deltas.shape[0] == 0:
        zero = student_deltas.sum() * 0.0
        return zero, zero.detach()
    target_deltas = target_deltas.detach()
    student_err = ((student_deltas - target_deltas) ** 2).sum(dim=-1)
    teacher_err = ((teacher_deltas.detach() - target_deltas) ** 2).sum(dim=-1)
    active = (student_err + margin > teacher_err).to(student_err.dtype)
    denominator = student_err.numel() if normalizer is None else max(float(normalizer), 1.0)
    return (student_err * active).sum() / denominator, active.mean().detach()
