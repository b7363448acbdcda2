"""Straightforward per-box loops: the reference the vectorized masks are checked (and timed) against."""
import math

import torch


def loop_fgd_masks(gt_boxes, image_sizes, feat_hw, stride):
    n = len(gt_boxes)
    h, w = feat_hw
    fg = torch.zeros(n, h, w, dtype=torch.float64)
    bg = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        rows = min(max(math.ceil(image_sizes[i][0] / stride), 1), h)
        cols = min(max(math.ceil(image_sizes[i][1] / stride), 1), w)
        for box in gt_boxes[i].tolist():
            x0 = min(max(math.floor(box[0] / stride), 0), cols - 1)
            y0 = min(max(math.floor(box[1] / stride), 0), rows - 1)
            x1 = max(min(math.ceil(box[2] / stride) - 1, cols - 1), x0)
            y1 = max(min(math.ceil(box[3] / stride) - 1, rows - 1), y0)
            value = 1.0 / ((x1 - x0 + 1) * (y1 - y0 + 1))
            region = fg[i, y0:y1 + 1, x0:x1 + 1]
            fg[i, y0:y1 + 1, x0:x1 + 1] = torch.clamp(region, min=value)
        background = torch.zeros(h, w, dtype=torch.bool)
        background[:rows, :cols] = True
        background &= fg[i] == 0
        if background.any():
            bg[i][background] = 1.0 / background.sum().item()
    return fg.float(), bg.float()
