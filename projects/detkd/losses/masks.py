"""Ground-truth boxes -> masks on a feature grid, for all images and boxes at once.

Box-to-cell mapping (used by FGD and the MSSD Gaussian mask)
----------------------------------------------------------
Boxes are XYXY in input-image pixels (the resized, un-padded image the network sees). A
feature map of stride ``s`` has cell ``(i, j)`` covering pixels ``[j*s, (j+1)*s) x [i*s, (i+1)*s)``
of the *padded* input, whose top-left corner is the image's. A box covers the cells it
intersects:

    x0 = floor(x1 / s),  x1_cell = ceil(x2 / s) - 1   (inclusive), likewise for y,

clamped to the cells that hold image content (``ceil(h / s)`` rows, ``ceil(w / s)`` columns),
and a box always covers at least the cell of its top-left corner, so tiny and zero-size boxes
are one cell. Padding cells are neither foreground nor background.

FGD's official code instead divides by the un-padded image size and multiplies by the padded
feature size, and includes the cell at ``ceil(x2)``; with padding that stretches boxes over
the padded area and adds one cell on each far side. We keep the geometric mapping above, so a
box lands on the same cells whatever the batch's padding.

Everything here is vectorized: boxes of the batch are packed into ``(N, K, 4)`` with a
validity mask and cut into row segments with one ragged arange. The FGD scale mask (a max of
constants over rectangles) then uses a backwards sparse table over columns
(:func:`segment_max`); the Gaussian mask, whose value changes per cell, enumerates the covered
cells (:func:`box_cells`) and takes the per-cell max with one ``scatter_reduce``. No Python loop
over boxes; work grows with box rows or covered cells, not with boxes x grid.
"""
from typing import List, NamedTuple, Sequence, Tuple

import torch
from torch.nn.utils.rnn import pad_sequence

__all__ = [
    "infer_stride",
    "pack_boxes",
    "box_cell_ranges",
    "box_row_segments",
    "segment_max",
    "box_cells",
    "valid_cells",
    "fgd_masks",
    "gaussian_target_mask",
]


def infer_stride(image_sizes: Sequence[Tuple[int, int]], feat_hw: Tuple[int, int]) -> float:
    """Stride of a feature map, as the power of two nearest to (largest image side / grid side).

    Exact for detectron2 backbones, whose strides are powers of two and whose inputs are padded to a
    multiple of the coarsest stride.
    """
    max_h = max(int(h) for h, _ in image_sizes)
    max_w = max(int(w) for _, w in image_sizes)
    ratio = max(max_h / feat_hw[0], max_w / feat_hw[1])
    return float(2 ** round(torch.log2(torch.tensor(float(ratio))).item()))


def pack_boxes(gt_boxes: List[torch.Tensor], device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pack per-image boxes ``[K_i, 4]`` into ``(N, K, 4)`` plus a ``(N, K)`` validity mask."""
    per_image = list(gt_boxes)  # one [K_i, 4] tensor per image; nothing below loops over boxes
    if device is None:
        device = per_image[0].device if per_image else "cpu"
    for i, image_boxes in enumerate(per_image):
        if image_boxes.dim() != 2 or image_boxes.shape[-1] != 4:
            raise ValueError(f"gt_boxes[{i}] must have shape [K, 4] (XYXY pixels), got {tuple(image_boxes.shape)}")
    lengths = torch.as_tensor([int(t.shape[0]) for t in per_image], device=device)
    k = max(int(lengths.max()) if per_image else 0, 1)
    packed = torch.zeros(len(per_image), k, 4, device=device, dtype=torch.float32)
    if per_image:
        padded = pad_sequence([t.to(device=device, dtype=torch.float32) for t in per_image], batch_first=True)
        packed[:, : padded.shape[1]] = padded
    valid = torch.arange(k, device=device)[None, :] < lengths[:, None]
    return packed, valid


def valid_cells(image_sizes, feat_hw, stride, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Number of rows and columns of each image's content on the grid: two ``(N,)`` long tensors."""
    sizes = torch.as_tensor([[int(h), int(w)] for h, w in image_sizes], device=device, dtype=torch.float64)
    rows = torch.ceil(sizes[:, 0] / stride).long().clamp(1, feat_hw[0])
    cols = torch.ceil(sizes[:, 1] / stride).long().clamp(1, feat_hw[1])
    return rows, cols


def box_cell_ranges(boxes: torch.Tensor, stride: float, rows: torch.Tensor, cols: torch.Tensor):
    """Inclusive cell ranges ``(x0, y0, x1, y1)`` of packed boxes ``(N, K, 4)``; each ``(N, K)`` long.

    ``rows``/``cols`` (``(N,)``) bound each image's content cells.
    """
    cells = boxes.double() / stride
    max_x = (cols - 1)[:, None]
    max_y = (rows - 1)[:, None]
    x0 = torch.minimum(torch.floor(cells[..., 0]).long().clamp(min=0), max_x)
    y0 = torch.minimum(torch.floor(cells[..., 1]).long().clamp(min=0), max_y)
    x1 = torch.minimum(torch.ceil(cells[..., 2]).long() - 1, max_x)
    y1 = torch.minimum(torch.ceil(cells[..., 3]).long() - 1, max_y)
    x1 = torch.maximum(x1, x0)
    y1 = torch.maximum(y1, y0)
    return x0, y0, x1, y1


def box_row_segments(x0, y0, x1, y1, valid, rows_per_image):
    """Every row of every real box as a segment, enumerated with one ragged arange (no loop).

    Returns ``(seg_box, grid_row, seg_row)``: the flat box index, the row in the stacked
    ``(N * H)`` grid, and the row within the image, each ``(S,)`` with ``S`` the sum of box heights.
    """
    heights = ((y1 - y0 + 1) * valid).flatten()
    device = heights.device
    seg_box = torch.repeat_interleave(torch.arange(heights.numel(), device=device), heights)
    seg_first = torch.cumsum(heights, 0) - heights
    seg_row = y0.flatten()[seg_box] + torch.arange(seg_box.numel(), device=device) - seg_first[seg_box]
    image = torch.div(seg_box, x0.shape[1], rounding_mode="floor")
    return seg_box, image * rows_per_image + seg_row, seg_row


def segment_max(grid_rows, start, stop, values, n_rows: int, width: int) -> torch.Tensor:
    """``(n_rows, width)``: per cell, the max of the values of the segments ``[start, stop]`` on it.

    A sparse table run backwards: a segment of length ``L`` writes its value into the two blocks
    of length ``2^floor(log2 L)`` that cover it exactly, then each level is pushed down into the
    two halves of the level below. Cost: two scatters over the segments plus ``log2(max L)``
    dense passes, independent of how many boxes overlap a cell.
    """
    length = stop - start + 1
    level = torch.floor(torch.log2(length.double())).long()
    n_levels = int(level.max()) + 1 if level.numel() else 1
    table = torch.zeros(n_levels, n_rows, width, dtype=values.dtype, device=values.device)
    base = (level * n_rows + grid_rows) * width
    flat = table.view(-1)
    flat.scatter_reduce_(0, base + start, values, reduce="amax", include_self=True)
    flat.scatter_reduce_(0, base + stop + 1 - (1 << level), values, reduce="amax", include_self=True)
    for lvl in range(n_levels - 1, 0, -1):  # over log2 levels, not boxes
        half = 1 << (lvl - 1)
        below, above = table[lvl - 1], table[lvl]
        torch.maximum(below, above, out=below)
        torch.maximum(below[:, half:], above[:, : width - half], out=below[:, half:])
    return table[0]


def box_cells(x0, y0, x1, y1, valid, feat_hw, per_cell_values):
    """Flat cell index into ``(N, H, W)`` and value of every cell covered by every real box.

    Row segments (:func:`box_row_segments`), then the cells of every segment with a second ragged
    arange; work proportional to the covered cells. ``per_cell_values(box, row, col)`` gives the
    values.
    """
    h, w = feat_hw
    seg_box, grid_row, seg_row = box_row_segments(x0, y0, x1, y1, valid, h)
    seg_width = ((x1 - x0 + 1) * valid).flatten()[seg_box]
    device = seg_box.device
    seg_offset = grid_row * w + x0.flatten()[seg_box] - (torch.cumsum(seg_width, 0) - seg_width)
    cell_seg = torch.repeat_interleave(torch.arange(seg_box.numel(), device=device), seg_width)
    flat = seg_offset[cell_seg] + torch.arange(cell_seg.numel(), device=device)
    return flat, per_cell_values(seg_box[cell_seg], seg_row[cell_seg], flat % w)


def _scatter_max(flat, values, n, feat_hw):
    """``(N, H, W)`` holding, per cell, the largest of the values enumerated on it (0 elsewhere)."""
    h, w = feat_hw
    out = torch.zeros(n * h * w, device=values.device, dtype=values.dtype)
    out.scatter_reduce_(0, flat, values, reduce="amax", include_self=True)
    return out.reshape(n, h, w)


class _Grid(NamedTuple):
    h: int
    w: int
    stride: float
    boxes: torch.Tensor
    valid: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    x0: torch.Tensor
    y0: torch.Tensor
    x1: torch.Tensor
    y1: torch.Tensor


def _on_grid(gt_boxes, image_sizes, feat_hw, stride) -> _Grid:
    """Pack the boxes and map them to inclusive cell ranges of one feature grid."""
    h, w = int(feat_hw[0]), int(feat_hw[1])
    device = gt_boxes[0].device if len(gt_boxes) else "cpu"
    if stride is None:
        stride = infer_stride(image_sizes, (h, w))
    boxes, valid = pack_boxes(gt_boxes, device)
    rows, cols = valid_cells(image_sizes, (h, w), stride, device)
    return _Grid(h, w, stride, boxes, valid, rows, cols, *box_cell_ranges(boxes, stride, rows, cols))


def _rank_dtype(n_ranks: int) -> torch.dtype:
    """Smallest integer dtype holding ``0..n_ranks`` (ranks plus the padding sentinel; small tables
    are cheaper to push down)."""
    if n_ranks <= torch.iinfo(torch.uint8).max:
        return torch.uint8
    if n_ranks <= torch.iinfo(torch.int16).max:
        return torch.int16
    return torch.int32


def fgd_masks(gt_boxes: List[torch.Tensor], image_sizes, feat_hw, stride=None):
    """FGD's focal masks (Yang et al. CVPR 2022, Sec. 3.1, Eqs. 2-4) on one feature grid.

    Returns ``(fg_scale, bg_scale)``, each ``(N, H, W)`` float:

    * ``fg_scale = M * S`` on the foreground: ``1 / (H_r * W_r)`` where ``H_r x W_r`` is the box's
      size in cells; where boxes overlap the smallest box wins (largest value).
    * ``bg_scale = (1 - M) / N_bg`` on the image's content cells outside every box, where ``N_bg``
      counts those cells; 0 on padding and 0 everywhere for a fully covered image.

    An image with no boxes is all background.

    The max over boxes is taken on ranks, not values: within each image the boxes are ranked by
    ``1 / area`` (1 = largest box, 0 = no box), the per-cell max rank comes from
    :func:`segment_max` on a ``uint8`` table (``int16`` past 254 boxes: the padding sentinel needs a
    value too), and one gather turns ranks back into values. A byte table is a quarter of the memory
    traffic of a float one.
    """
    g = _on_grid(gt_boxes, image_sizes, feat_hw, stride)
    h, w, x0, y0, x1, y1 = g.h, g.w, g.x0, g.y0, g.x1, g.y1
    n, k = x0.shape
    inv_area = torch.where(g.valid, 1.0 / ((x1 - x0 + 1) * (y1 - y0 + 1)).float(), -1.0)
    rank = torch.argsort(torch.argsort(inv_area, dim=1), dim=1) + 1  # (N, K); padded boxes rank lowest
    # lookups by rank: 0 = background, 1..k = boxes, k + 1 = padding
    rank_to_value = torch.zeros(n, k + 2, device=inv_area.device)
    rank_to_value.scatter_(1, rank, inv_area.clamp(min=0.0))
    rank_is_background = torch.zeros(n, k + 2, device=inv_area.device)
    rank_is_background[:, 0] = 1.0
    seg_box, grid_row, _ = box_row_segments(x0, y0, x1, y1, g.valid, h)
    cell_rank = segment_max(grid_row, x0.flatten()[seg_box], x1.flatten()[seg_box],
                            rank.flatten()[seg_box].to(_rank_dtype(k + 1)), n * h, w)
    # padding cells get the sentinel rank k + 1 (boxes never reach them), so both masks are lookups
    ys = torch.arange(h, device=inv_area.device)
    xs = torch.arange(w, device=inv_area.device)
    cell_rank = cell_rank.view(n, h, w)
    cell_rank.masked_fill_((ys[None, :] >= g.rows[:, None])[:, :, None], k + 1)
    cell_rank.masked_fill_((xs[None, :] >= g.cols[:, None])[:, None, :], k + 1)
    cell_rank = cell_rank.view(n, h * w).long()
    fg_scale = torch.gather(rank_to_value, 1, cell_rank)
    bg_scale = torch.gather(rank_is_background, 1, cell_rank)
    bg_scale /= bg_scale.sum(dim=1, keepdim=True).clamp(min=1.0)
    fg_scale, bg_scale = fg_scale.view(n, h, w), bg_scale.view(n, h, w)
    return fg_scale, bg_scale


def gaussian_target_mask(gt_boxes: List[torch.Tensor], image_sizes, feat_hw, stride=None):
    """MSSD's Gaussian target mask (Jia et al. 2024): ``(N, H, W)`` in [0, 1].

    Each box is a 2-D Gaussian over its own cells, centred on the cell holding the box centre,
    with standard deviation ``(box extent in cells) / 6`` per axis, so the peak is exactly 1 at the
    centre cell and the box edge is about 3 sigma away. Cells outside every box are 0; where boxes
    overlap the larger value wins.
    """
    g = _on_grid(gt_boxes, image_sizes, feat_hw, stride)
    h, w, x0, y0, x1, y1 = g.h, g.w, g.x0, g.y0, g.x1, g.y1
    centre = (g.boxes[..., :2] + g.boxes[..., 2:]) / 2.0 / g.stride
    cx = torch.minimum(torch.maximum(torch.floor(centre[..., 0]).long(), x0), x1).flatten().float()
    cy = torch.minimum(torch.maximum(torch.floor(centre[..., 1]).long(), y0), y1).flatten().float()
    sigma_x = (x1 - x0 + 1).flatten().float() / 6.0
    sigma_y = (y1 - y0 + 1).flatten().float() / 6.0

    def gaussian(box, rows, cols):
        dy2 = (rows.float() - cy[box]) ** 2 / (2 * sigma_y[box] ** 2)
        dx2 = (cols.float() - cx[box]) ** 2 / (2 * sigma_x[box] ** 2)
        return torch.exp(-(dx2 + dy2))

    flat, values = box_cells(x0, y0, x1, y1, g.valid, (h, w), gaussian)
    return _scatter_max(flat, values, len(gt_boxes), (h, w))
