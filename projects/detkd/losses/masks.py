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

How the masks are built
-----------------------
No Python loop over boxes; the loops below go over images or over the ``log2`` levels of a table.
Boxes of all images are concatenated into one ``(M, 4)`` tensor and mapped to cells together
(:func:`_boxes_on_grid`); a box is then cut into its rows with one ragged expansion
(``repeat_interleave``), so the work grows with box rows, not with boxes x grid.

* FGD's scale mask is ``1 / area`` of the smallest box over each cell: a min of per-box areas over
  rectangles. Each box row (a segment of length ``L``) is written into the two blocks of length
  ``2^floor(log2 L)`` that cover it exactly (a sparse table run backwards), and the table is pushed
  down level by level: one ``torch.minimum`` pass per level, ping-ponging between two buffers.
  The table holds integer areas, ``int16`` while the batch's largest box has fewer than ``2^14``
  cells (else ``int32``), so each pass moves half the bytes of a float table; "no box" is a power of
  two above every area (``2^14`` or ``2^30``), so after the conversion to float and the reciprocal it
  is exactly ``1 / no_box``, below every real ``1 / area``, and one threshold sets it to 0. Every grid
  row carries ``2^(top-1)`` guard cells on its left so a pass is one op with no edge case. Cost: two
  scatters per box row plus ``log2(widest box)`` dense passes, however many boxes overlap.
* The Gaussian mask changes value per cell, so the rows are expanded again into cells and the
  per-cell max is one ``scatter_reduce``.
"""
import math
from typing import List, NamedTuple, Sequence, Tuple

import torch

__all__ = ["infer_stride", "fgd_masks", "gaussian_target_mask"]


def infer_stride(image_sizes: Sequence[Tuple[int, int]], feat_hw: Tuple[int, int]) -> float:
    """Stride of a feature map, as the power of two nearest to (largest image side / grid side).

    Exact for detectron2 backbones, whose strides are powers of two and whose inputs are padded to a
    multiple of the coarsest stride.
    """
    max_h = max(int(h) for h, _ in image_sizes)
    max_w = max(int(w) for _, w in image_sizes)
    ratio = max(max_h / feat_hw[0], max_w / feat_hw[1])
    return float(2 ** round(math.log2(ratio)))


class _BoxesOnGrid(NamedTuple):
    """The boxes of a batch on one grid. Per-box tensors are ``float64`` (exact integers)."""

    n: int
    h: int
    w: int
    stride: float
    content: List[Tuple[int, int]]  # per image: content rows, content columns
    boxes: torch.Tensor  # (M, 4) XYXY pixels
    first: torch.Tensor  # (M, 2) x, y of the top-left covered cell
    size: torch.Tensor  # (M, 2) width, height in cells (>= 1)
    grid_row: torch.Tensor  # (M,) row of the top-left cell in the (N * H) rows of the batch's grid


def _boxes_on_grid(gt_boxes: List[torch.Tensor], image_sizes, feat_hw, stride) -> _BoxesOnGrid:
    """Concatenate the per-image boxes and map them to cells (module docstring), all at once."""
    per_image = list(gt_boxes)  # one [K_i, 4] tensor per image
    h, w = int(feat_hw[0]), int(feat_hw[1])
    if len(per_image) != len(image_sizes):
        raise ValueError(f"{len(per_image)} gt_boxes tensors for {len(image_sizes)} image sizes")
    for i, image_boxes in enumerate(per_image):
        if image_boxes.dim() != 2 or image_boxes.shape[-1] != 4:
            raise ValueError(f"gt_boxes[{i}] must have shape [K, 4] (XYXY pixels), got {tuple(image_boxes.shape)}")
    if stride is None:
        stride = infer_stride(image_sizes, (h, w))
    stride = float(stride)
    n = len(per_image)
    device = per_image[0].device if n else torch.device("cpu")
    content = [(min(max(math.ceil(int(ih) / stride), 1), h), min(max(math.ceil(int(iw) / stride), 1), w))
               for ih, iw in image_sizes]
    # per image: bounds of (floor(x1/s), floor(y1/s), -ceil(x2/s), -ceil(y2/s)) and the image's first grid row
    image_rows = torch.tensor([[0, 0, -cols, -rows, cols - 1, rows - 1, math.inf, math.inf, i * h]
                               for i, (rows, cols) in enumerate(content)], dtype=torch.float64, device=device)
    counts = [int(t.shape[0]) for t in per_image]
    per_box = image_rows.reshape(n, 9).repeat_interleave(  # (M, 9): each box its image's row
        torch.tensor(counts, device=device), dim=0, output_size=sum(counts))
    boxes = torch.cat(per_image).to(dtype=torch.float64) if n else torch.zeros(0, 4, dtype=torch.float64)
    # a sum is finite exactly when every coordinate is (pixel coordinates cannot overflow float64)
    if not math.isfinite(float(boxes.sum())):
        raise ValueError("gt_boxes hold NaN or infinite coordinates")
    # ceil(x / s) = -floor(-x / s): one floor for all four coordinates, one clamp for both ends
    cells = torch.floor(boxes / boxes.new_tensor([stride, stride, -stride, -stride]))
    cells = torch.clamp(cells, min=per_box[:, :4], max=per_box[:, 4:8])
    first = cells[:, :2]
    size = cells[:, 2:].add(first).neg_().clamp_(min=1.0)  # last cell = max(ceil - 1, first)
    return _BoxesOnGrid(n, h, w, stride, content, boxes, first, size, per_box[:, 8] + first[:, 1])


def _expand_ragged(payload: torch.Tensor, counts: torch.Tensor):
    """Row ``i`` of ``payload`` repeated ``counts[i]`` times, and each copy's index ``0..counts[i]-1``."""
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1]) if counts.numel() else 0
    repeated = payload.repeat_interleave(counts, dim=0, output_size=total)
    first_copy = (ends - counts).repeat_interleave(counts, output_size=total)
    return repeated, torch.arange(total, device=payload.device) - first_copy


def _zero_padding(grid: torch.Tensor, content: List[Tuple[int, int]]) -> None:
    """Zero the cells of ``grid`` (N, H, W) outside each image's content: a slice or two per image,
    or per batch when every image has the same content size."""
    h, w = grid.shape[-2:]
    groups = [(slice(None), content[0])] if len(set(content)) == 1 else list(enumerate(content))
    for index, (rows, cols) in groups:
        if rows < h:
            grid[index, rows:] = 0.0
        if cols < w:
            grid[index, :rows, cols:] = 0.0


class _AreaTable(NamedTuple):
    """The two ping-pong buffers of the scale mask's sparse table: ``(2, grid rows, guard + width)``
    box areas, ``no_box`` (a power of two above every area) where no block starts."""

    buffers: torch.Tensor
    guard: int
    no_box: int


def _area_table(grid_rows: int, width: int, top_level: int, max_area: int, device) -> _AreaTable:
    """An empty table for rows of ``width`` cells whose blocks reach ``2^top_level`` cells, holding
    areas up to ``max_area``: ``int16`` below ``2^14`` (half the bytes per pass), else ``int32``."""
    if max_area < 2 ** 14:
        dtype, no_box = torch.int16, 2 ** 14
    elif max_area < 2 ** 30:
        dtype, no_box = torch.int32, 2 ** 30
    else:
        raise ValueError(f"a box covers {max_area} grid cells, more than the 2^30 the area table holds")
    guard = (1 << top_level) >> 1  # the farthest a pass looks left of a row
    buffers = torch.empty(2, grid_rows, guard + width, dtype=dtype, device=device)
    buffers[0].fill_(no_box)
    buffers[1, :, :guard].fill_(no_box)  # the rest of the spare buffer is written by each push-down
    return _AreaTable(buffers, guard, no_box)


def _push_down(above: torch.Tensor, below: torch.Tensor, guard: int, level: int):
    """One level of the sparse table pushed down: a block of ``2^(level+1)`` cells starting at a cell is
    the two blocks of ``2^level`` starting there and ``2^level`` cells on, so a cell's block at
    ``level`` is the min of the blocks above that start on it or ``2^level`` cells to its left (guard
    cells, never written, on the left of each row). Writes ``below``; returns ``(below, above)``."""
    half = 1 << level
    width = above.shape[-1] - guard
    torch.minimum(above[:, guard:], above[:, guard - half:guard - half + width], out=below[:, guard:])
    return below, above


def _scale_masks(areas: torch.Tensor, no_box: int, content: List[Tuple[int, int]]):
    """``(fg_scale, bg_scale)`` from the smallest box area over each cell (``areas``: (N, H, W) ints,
    ``no_box`` where no box covers the cell). One float allocation holds both."""
    n, h, w = areas.shape
    out = torch.empty(2, n, h, w, device=areas.device)
    fg_scale, bg_scale = out[0], out[1]
    fg_scale.copy_(areas).reciprocal_()
    # no_box is a power of two above every area: its reciprocal is exact and the only value not above it
    torch.nn.functional.threshold(fg_scale, 1.0 / no_box, 0.0, inplace=True)
    torch.eq(fg_scale, 0.0, out=bg_scale)
    _zero_padding(bg_scale, content)
    per_image = bg_scale.view(n, h * w)
    per_image.mul_(per_image.sum(dim=1, keepdim=True).clamp_(min=1.0).reciprocal_())
    return fg_scale, bg_scale


def fgd_masks(gt_boxes: List[torch.Tensor], image_sizes, feat_hw, stride=None):
    """FGD's focal masks (Yang et al. CVPR 2022, Sec. 3.1, Eqs. 2-4) on one feature grid.

    Returns ``(fg_scale, bg_scale)``, each ``(N, H, W)`` float:

    * ``fg_scale = M * S`` on the foreground: ``1 / (H_r * W_r)`` where ``H_r x W_r`` is the box's
      size in cells; where boxes overlap the smallest box wins (largest value).
    * ``bg_scale = (1 - M) / N_bg`` on the image's content cells outside every box, where ``N_bg``
      counts those cells; 0 on padding and 0 everywhere for a fully covered image.

    An image with no boxes is all background. ``fg_scale`` and ``bg_scale`` are the two halves of
    one allocation.
    """
    g = _boxes_on_grid(gt_boxes, image_sizes, feat_hw, stride)
    n, h, w = g.n, g.h, g.w
    device = g.size.device
    # a row of width L is two blocks of 2^level cells, level = floor(log2 L) (frexp: L = m * 2^e, m in [0.5, 1))
    level, order = torch.sort(torch.frexp(g.size[:, 0])[1] - 1, descending=True)  # top level first
    per_box = torch.stack([g.first[:, 0], g.grid_row, g.size[:, 0], g.size[:, 1]], 1).index_select(0, order)
    column, row, width, height = per_box.long().unbind(1)
    area = width * height
    # box rows per level and the largest area, with one sync
    stats = torch.zeros(w.bit_length() + 1, dtype=torch.long, device=device).index_add_(0, level, height)
    if area.numel():
        stats[-1] = area.max()
    *rows_per_level, max_area = stats.tolist()
    top = max((lvl for lvl, count in enumerate(rows_per_level) if count), default=0)
    table = _area_table(n * h, w, top, max_area, device)
    pitch = table.guard + w
    # every box row, numbered 0.. over all boxes: its first block (flat index in the guarded table), its
    # second block's offset, its area. Row k of a box whose rows are numbered from r0 has its first block
    # at (row + k) * pitch + guard + column = (row - r0 + number) * pitch + guard + column.
    box_first_row = torch.cumsum(height, 0) - height
    top_row_block = (row - box_first_row) * pitch + column + table.guard
    total_rows = sum(rows_per_level)
    rows = torch.stack([top_row_block, width - torch.pow(2, level), area], 1).repeat_interleave(
        height, dim=0, output_size=total_rows)
    blocks = rows[:, :2].clone()
    blocks[:, 0] += torch.arange(total_rows, device=device) * pitch
    blocks[:, 1] += blocks[:, 0]
    blocks = blocks.view(-1)  # (first, second) per row, rows grouped by level
    areas = rows[:, 2:].expand(-1, 2).to(table.buffers.dtype).reshape(-1)
    above, below = table.buffers[0], table.buffers[1]
    begin = 0
    for lvl in range(top, -1, -1):  # over log2 levels, not boxes
        if lvl < top:
            above, below = _push_down(above, below, table.guard, lvl)
        end = begin + 2 * rows_per_level[lvl]
        if end > begin:
            above.view(-1).scatter_reduce_(0, blocks[begin:end], areas[begin:end], reduce="amin")
        begin = end
    return _scale_masks(above[:, table.guard:].view(n, h, w), table.no_box, g.content)


def gaussian_target_mask(gt_boxes: List[torch.Tensor], image_sizes, feat_hw, stride=None):
    """MSSD's Gaussian target mask (Jia et al. 2024): ``(N, H, W)`` in [0, 1].

    Each box is a 2-D Gaussian over its own cells, centred on the cell holding the box centre,
    with standard deviation ``(box extent in cells) / 6`` per axis, so the peak is exactly 1 at the
    centre cell and the box edge is about 3 sigma away. Cells outside every box are 0; where boxes
    overlap the larger value wins.
    """
    g = _boxes_on_grid(gt_boxes, image_sizes, feat_hw, stride)
    last = g.first + g.size - 1
    centre = torch.floor((g.boxes[:, :2] + g.boxes[:, 2:]) / (2.0 * g.stride))
    centre = torch.minimum(torch.maximum(centre, g.first), last)
    two_sigma_sq = 2.0 * (g.size / 6.0) ** 2
    # per box: top-left flat cell, width, then offsets of the centre from the top-left and 2 sigma^2
    start = g.grid_row * g.w + g.first[:, 0]
    per_box = torch.cat([start[:, None], g.size[:, :1], centre - g.first, two_sigma_sq], 1)
    rows, row_in_box = _expand_ragged(per_box, g.size[:, 1].long())
    rows[:, 0] += row_in_box * g.w
    rows[:, 3] -= row_in_box  # y offset of the centre from this row
    cells, col_in_row = _expand_ragged(rows, rows[:, 1].long())
    dx = col_in_row - cells[:, 2]
    dy = cells[:, 3]
    values = torch.exp(-(dx * dx / cells[:, 4] + dy * dy / cells[:, 5])).float()
    out = torch.zeros(g.n * g.h * g.w, device=g.size.device)
    out.scatter_reduce_(0, cells[:, 0].long() + col_in_row, values, reduce="amax")
    return out.view(g.n, g.h, g.w)
