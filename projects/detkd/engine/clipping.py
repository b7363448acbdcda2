"""Global-norm gradient clipping over all trainable parameters.

detectron2's ``SOLVER.CLIP_GRADIENTS`` clips each parameter on its own ("value" or "norm");
FGD trains with the whole model's gradient clipped to a global L2 norm of 35. This wraps an
optimizer so every ``step()`` first clips the global norm and logs it as ``grad_global_norm``.
"""
import torch

__all__ = ["add_global_norm_clipping"]


def add_global_norm_clipping(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.optim.Optimizer:
    if not max_norm > 0:
        raise ValueError(f"SOLVER.GLOBAL_GRAD_CLIP_NORM must be > 0 to clip, got {max_norm}")
    base = type(optimizer)

    class GlobalNormClipped(base):
        def step(self, closure=None):
            from ..modeling.distillers import put_scalar

            params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            total = torch.nn.utils.clip_grad_norm_(params, max_norm)
            put_scalar("grad_global_norm", total.item())
            return super().step(closure)

    GlobalNormClipped.__name__ = base.__name__ + "WithGlobalNormClip"
    optimizer.__class__ = GlobalNormClipped
    return optimizer
