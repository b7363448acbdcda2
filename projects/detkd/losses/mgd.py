"""MGD: masked generative distillation (Yang et al., "Masked Generative Distillation", ECCV 2022,
Sec. 3).

A random fraction ``lambda`` of the spatial positions of the (aligned) student map ``S`` is zeroed
by a mask ``M`` (``M = 0`` there, 1 elsewhere, the same for every channel), and a small generator
``G`` (3x3 conv, ReLU, 3x3 conv) must produce the teacher's full map from what is left:

    L_mgd = 1/N * sum((T - G(f_align(S) * M))^2)

The student learns features from which the teacher's can be recovered, rather than a copy of
them. The generator and the align layer train with the student and are not part of the detector.
"""

from typing import Optional

import torch
from torch import nn

__all__ = ["random_position_mask", "MGDGenerator", "mgd_loss"]


def random_position_mask(
    n: int, h: int, w: int, ratio: float, generator: Optional[torch.Generator], device
) -> torch.Tensor:
    """``(N, 1, H, W)``: 0 at a random ``ratio`` of the positions (each independently), else 1."""
    draw = torch.rand(
        (n, 1, h, w), generator=generator, device=generator.device if generator else device
    )
    return (draw >= ratio).to(device=device, dtype=torch.float32)


class MGDGenerator(nn.Sequential):
    """``G``: 3x3 conv, ReLU, 3x3 conv, ``C -> C`` channels (MGD's generation block)."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )


def mgd_loss(generated: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """``1/N * sum((T - G(.))^2)``: summed squared error divided by the batch size."""
    if generated.shape != teacher_feat.shape:
        raise ValueError(
            f"MGD: generated {tuple(generated.shape)} and teacher "
            f"{tuple(teacher_feat.shape)} maps differ"
        )
    return ((teacher_feat.detach() - generated) ** 2).sum() / generated.shape[0]
