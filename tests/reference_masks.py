"""Straightforward per-box loops: the references the vectorized masks are checked (and timed)
against."""

import math

import torch


def _content_cells(image_size, stride, feat_hw):
    """Rows and columns of the grid that hold the image."""
    rows = min(max(math.ceil(image_size[0] / stride), 1), feat_hw[0])
    cols = min(max(math.ceil(image_size[1] / stride), 1), feat_hw[1])
    return rows, cols


def _box_cells(box, stride, rows, cols):
    """Inclusive cell range (x0, y0, x1, y1) of one box, with the mapping of detkd.losses.masks."""
    x0 = min(max(math.floor(box[0] / stride), 0), cols - 1)
    y0 = min(max(math.floor(box[1] / stride), 0), rows - 1)
    x1 = max(min(math.ceil(box[2] / stride) - 1, cols - 1), x0)
    y1 = max(min(math.ceil(box[3] / stride) - 1, rows - 1), y0)
    return x0, y0, x1, y1


def loop_fgd_masks(gt_boxes, image_sizes, feat_hw, stride):
    """FGD's fg scale and bg masks box by box, on the boxes' device."""
    n = len(gt_boxes)
    h, w = feat_hw
    device = gt_boxes[0].device if n else torch.device("cpu")
    fg = torch.zeros(n, h, w, dtype=torch.float64, device=device)
    bg = torch.zeros(n, h, w, dtype=torch.float64, device=device)
    for i in range(n):
        rows, cols = _content_cells(image_sizes[i], stride, feat_hw)
        for box in gt_boxes[i].tolist():
            x0, y0, x1, y1 = _box_cells(box, stride, rows, cols)
            value = 1.0 / ((x1 - x0 + 1) * (y1 - y0 + 1))
            region = fg[i, y0 : y1 + 1, x0 : x1 + 1]
            fg[i, y0 : y1 + 1, x0 : x1 + 1] = torch.clamp(region, min=value)
        background = torch.zeros(h, w, dtype=torch.bool, device=device)
        background[:rows, :cols] = True
        background &= fg[i] == 0
        if background.any():
            bg[i][background] = 1.0 / background.sum().item()
    return fg.float(), bg.float()


def loop_gaussian_mask(gt_boxes, image_sizes, feat_hw, stride):
    """MSSD's Gaussian mask box by box: the same cells as FGD, a Gaussian centred on the cell of the
    box centre with sigma = extent / 6 per axis, the larger value where boxes overlap."""
    n = len(gt_boxes)
    h, w = feat_hw
    out = torch.zeros(n, h, w, dtype=torch.float64)
    ys = torch.arange(h, dtype=torch.float64)[:, None]
    xs = torch.arange(w, dtype=torch.float64)[None, :]
    for i in range(n):
        rows, cols = _content_cells(image_sizes[i], stride, feat_hw)
        for box in gt_boxes[i].tolist():
            x0, y0, x1, y1 = _box_cells(box, stride, rows, cols)
            cx = min(max(math.floor((box[0] + box[2]) / 2 / stride), x0), x1)
            cy = min(max(math.floor((box[1] + box[3]) / 2 / stride), y0), y1)
            sx, sy = (x1 - x0 + 1) / 6, (y1 - y0 + 1) / 6
            g = torch.exp(-((xs - cx) ** 2 / (2 * sx**2) + (ys - cy) ** 2 / (2 * sy**2)))
            region = out[i, y0 : y1 + 1, x0 : x1 + 1]
            out[i, y0 : y1 + 1, x0 : x1 + 1] = torch.maximum(region, g[y0 : y1 + 1, x0 : x1 + 1])
    return out.float()
