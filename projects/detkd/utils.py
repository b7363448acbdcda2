"""Small helpers shared across detkd."""

from detectron2.utils.events import get_event_storage

__all__ = ["put_scalar"]


def put_scalar(name: str, value: float):
    """Log a scalar into the current EventStorage (``metrics.json``, TensorBoard); a no-op outside
    training."""
    try:
        storage = get_event_storage()
    except AssertionError:
        return
    storage.put_scalar(name, float(value), smoothing_hint=True)
