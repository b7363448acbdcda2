"""Small helpers shared across detkd."""

import torch
from detectron2.utils.events import get_event_storage

__all__ = ["put_scalar", "at_least_float32", "current_iteration"]


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is half precision (under AMP), else unchanged: for statistics and
    squares that fp16 overflows or rounds away."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def put_scalar(name: str, value: float):
    """Log a scalar into the current EventStorage (``metrics.json``, TensorBoard); a no-op outside
    training."""
    try:
        storage = get_event_storage()
    except AssertionError:
        return
    storage.put_scalar(name, float(value), smoothing_hint=True)


def current_iteration():
    """The training iteration of the current EventStorage; ``None`` outside training."""
    try:
        return get_event_storage().iter
    except AssertionError:
        return None
