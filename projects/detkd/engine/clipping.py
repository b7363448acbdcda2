"""Global-norm gradient clipping over all trainable parameters.

detectron2's ``SOLVER.CLIP_GRADIENTS`` clips each parameter on its own ("value" or "norm");
FGD trains with the whole model's gradient clipped to a global L2 norm of 35. This wraps an
optimizer so every ``step()`` first clips the global norm and logs it as ``grad_global_norm``.

A non-finite global norm stops the run: clipping by an infinite norm would turn every update into
zero (and a NaN norm every parameter into NaN) while the run goes on. ``step()`` raises
``FloatingPointError`` naming the iteration and the first parameters whose gradients are not
finite, before anything is updated.
"""

import math
from typing import Dict, Optional

import torch

from ..utils import put_scalar

__all__ = ["add_global_norm_clipping"]


def _iteration() -> str:
    from detectron2.utils.events import get_event_storage

    try:
        return str(get_event_storage().iter)
    except AssertionError:  # outside a training loop
        return "?"


def add_global_norm_clipping(
    optimizer: torch.optim.Optimizer, max_norm: float, param_names: Optional[Dict[int, str]] = None
) -> torch.optim.Optimizer:
    """An optimizer over the same parameter groups and settings as ``optimizer`` (one that has not
    stepped yet) whose ``step()`` first clips the global gradient norm to ``max_norm``.

    ``param_names`` maps ``id(parameter)`` to its name, for the error on a non-finite norm (e.g.
    ``{id(p): n for n, p in model.named_parameters()}``).
    """
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(
            f"SOLVER.GLOBAL_GRAD_CLIP_NORM must be > 0 and finite to clip, got {max_norm}"
        )
    base = type(optimizer)
    names = dict(param_names or {})

    class GlobalNormClipped(base):
        def step(self, closure=None):
            params = [
                p for group in self.param_groups for p in group["params"] if p.grad is not None
            ]
            total = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if not torch.isfinite(total):
                bad = [
                    names.get(id(p), f"<unnamed parameter {tuple(p.shape)}>")
                    for p in params
                    if not torch.isfinite(p.grad).all()
                ]
                raise FloatingPointError(
                    f"iteration {_iteration()}: the global gradient norm is {total.item()}; "
                    f"{len(bad)} parameters have non-finite gradients, "
                    f"first: {', '.join(bad[:5])}. "
                    "No update was made."
                )
            put_scalar("grad_global_norm", total.item())
            return super().step(closure)

    GlobalNormClipped.__name__ = base.__name__ + "WithGlobalNormClip"
    if optimizer.state:
        raise ValueError("add_global_norm_clipping: give it a new optimizer (this one has stepped)")
    # the same parameter groups and settings, as the subclass that clips
    return GlobalNormClipped(optimizer.param_groups, **optimizer.defaults)
