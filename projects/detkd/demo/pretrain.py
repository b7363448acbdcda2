"""Backbones pretrained once on an embedded data set, cached like the teacher.

Detection students start from a pretrained backbone; trained from scratch on a few hundred
iterations they stay far from converged, and a study of distillation there measures the start of
training, not the student a user keeps. The demo therefore pretrains each ResNet trunk it uses
(the student's and the teacher's depth) once per data set, by classification of object crops:

- crops (``CROP`` pixels, BGR as detectron2 reads images) cut around every object of images drawn
  by the data set's own generator with another seed than its splits (label: the object's class),
  and around random windows that hold no object centre (label: background);
- the ResNet trunk the detection configs build (``build_resnet_backbone``), global average pooling
  of its last stage and one linear layer, SGD with momentum and a cosine schedule;
- saved as ``backbone.bottom_up.*`` tensors: ``MODEL.WEIGHTS`` of a detector or of a
  ``DistillRCNN`` student (the plain-checkpoint mapping of :mod:`detkd.checkpoint`).

The validation split is never drawn from: the crops come from a seed no split uses.
"""

import logging
import math
import time
from typing import Tuple

import numpy as np
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from PIL import Image
from torch import nn
from torch.nn import functional as F

__all__ = ["CROP", "object_crops", "pretrain_backbone", "PRETRAIN_SEED"]

logger = logging.getLogger(__name__)

CROP = 48
# the generator seed of the crops: the splits use [spec.seed, 0] and [spec.seed, 1]
PRETRAIN_SEED = 1000


def object_crops(spec, count: int, size: int = CROP, seed: int = PRETRAIN_SEED):
    """``count`` crops (uint8, N x size x size x 3, BGR) and their labels (the class, or
    ``len(spec.classes)`` for background): a crop around each object of generated images (the
    object's box grown by a random context of 1.2-1.8x, square), and one background window per
    image (a random square containing no object's centre)."""
    rng = np.random.default_rng([spec.seed, seed])
    background = len(spec.classes)
    images, labels = [], []
    while len(images) < count:
        image, objects = spec.render(rng)
        w, h = image.size
        windows = []
        for cls, (x0, y0, x1, y1) in objects:
            side = max(x1 - x0, y1 - y0) * float(rng.uniform(1.2, 1.8))
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            windows.append((cls, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)))
        centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for _, b in windows]
        for _ in range(10):  # a background window, if one is found quickly
            side = float(rng.uniform(12, min(w, h)))
            x, y = float(rng.uniform(0, w - side)), float(rng.uniform(0, h - side))
            if not any(x <= cx <= x + side and y <= cy <= y + side for cx, cy in centres):
                windows.append((background, (x, y, x + side, y + side)))
                break
        for cls, box in windows:
            crop = image.crop(tuple(round(v) for v in box)).resize((size, size), Image.BILINEAR)
            images.append(np.asarray(crop)[:, :, ::-1])  # RGB -> BGR
            labels.append(cls)
    return np.stack(images[:count]), np.asarray(labels[:count], dtype=np.int64)


class _Classifier(nn.Module):
    def __init__(self, trunk: nn.Module, num_classes: int, mean, std):
        super().__init__()
        self.trunk = trunk
        self.last = trunk._out_features[-1]
        channels = trunk.output_shape()[self.last].channels
        self.head = nn.Linear(channels, num_classes)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        x = (x - self.mean) / self.std
        return self.head(self.trunk(x)[self.last].mean(dim=(2, 3)))


def pretrain_backbone(
    cfg, spec, iters: int, batch: int = 64, lr: float = 0.1, crops: int = 20000, seed: int = 0
) -> Tuple[dict, dict]:
    """Train the ResNet trunk of ``cfg`` (``MODEL.RESNETS``, its ``res5`` output) to classify
    :func:`object_crops` of ``spec``'s data for ``iters`` iterations (at most ``crops`` distinct
    ones, fewer when the schedule sees fewer); return its state as ``backbone.bottom_up.*``
    tensors and a summary (accuracy on held-out crops, seconds)."""
    crops = min(crops, iters * batch)
    held = min(1000, max(50, crops // 10))
    torch.manual_seed(seed)
    c = cfg.clone()
    c.defrost()
    c.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    c.MODEL.BACKBONE.FREEZE_AT = 0
    trunk = build_resnet_backbone(c, ShapeSpec(channels=3))
    num_classes = len(spec.classes) + 1
    model = _Classifier(trunk, num_classes, c.MODEL.PIXEL_MEAN, c.MODEL.PIXEL_STD)
    images, labels = object_crops(spec, crops + held)
    held_x, held_y = images[crops:], labels[crops:]
    images, labels = images[:crops], labels[:crops]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    model.train()
    for it in range(iters):
        for group in optimizer.param_groups:  # cosine, with a short linear warm-up
            warm = min(1.0, (it + 1) / max(1, iters // 20))
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * it / iters))
        index = rng.integers(0, len(images), size=batch)
        x = torch.from_numpy(images[index]).permute(0, 3, 1, 2).float()
        if rng.random() < 0.5:
            x = x.flip(3)
        loss = F.cross_entropy(model(x), torch.from_numpy(labels[index]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (it + 1) % 100 == 0 or it == 0:
            logger.info("pretrain iter %d/%d: loss %.4f", it + 1, iters, loss.item())
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(held_x).permute(0, 3, 1, 2).float()
        accuracy = float((model(x).argmax(1).numpy() == held_y).mean())
    summary = dict(
        iters=iters,
        accuracy=accuracy,
        chance=float(np.bincount(held_y, minlength=num_classes).max() / len(held_y)),
        seconds=time.perf_counter() - start,
    )
    logger.info("pretrained backbone: held-out crop accuracy %.3f (%s)", accuracy, summary)
    state = {f"backbone.bottom_up.{k}": v.detach().clone() for k, v in trunk.state_dict().items()}
    return state, summary
