"""``MODEL.DISTILL.SCHEDULE``: when in the training schedule the distillation terms count.

Every method obeys it, where the weights are applied (``DistillRCNN``): at iteration ``i`` each
distillation term is multiplied by :meth:`DistillSchedule.factor`, and a method's change to the
detector's own losses (Chen's ``(1 - mu)`` on the hard classification loss) is interpolated by it.
The factor is logged as ``distill/schedule`` while it is not 1.
"""

__all__ = ["DistillSchedule"]


class DistillSchedule:
    """A linear warm-up of the distillation terms from ``1 / warmup_iters`` at iteration 0 to 1 at
    iteration ``warmup_iters - 1`` (0: none), and none of them from ``stop_iter`` on (0: never)."""

    def __init__(self, warmup_iters: int = 0, stop_iter: int = 0):
        if not (warmup_iters >= 0 and stop_iter >= 0):
            raise ValueError(
                "MODEL.DISTILL.SCHEDULE: WARMUP_ITERS and STOP_ITER must be >= 0, got "
                f"{warmup_iters} and {stop_iter}"
            )
        if stop_iter and warmup_iters > stop_iter:
            raise ValueError(
                f"MODEL.DISTILL.SCHEDULE: the warm-up ({warmup_iters} iterations) ends after "
                f"STOP_ITER ({stop_iter})"
            )
        self.warmup_iters, self.stop_iter = int(warmup_iters), int(stop_iter)

    @property
    def active(self) -> bool:
        return bool(self.warmup_iters or self.stop_iter)

    def factor(self, iteration: int) -> float:
        """The weight of every distillation term at ``iteration`` (0-based)."""
        if self.stop_iter and iteration >= self.stop_iter:
            return 0.0
        if self.warmup_iters and iteration < self.warmup_iters:
            return (iteration + 1) / self.warmup_iters
        return 1.0

    def scaled_hard_loss(self, scale: float, iteration: int) -> float:
        """A method's scale of a detector loss (e.g. ``1 - mu``), moved towards 1 as the factor
        goes to 0: ``1 + factor * (scale - 1)``."""
        return 1.0 + self.factor(iteration) * (scale - 1.0)
