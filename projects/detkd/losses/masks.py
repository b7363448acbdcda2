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
No Python loop over boxes. The boxes of all images are concatenated and mapped to cells together
(:func:`_boxes_on_grid`); a box is cut into its rows (and, for the Gaussian, its cells) by a ragged
expansion (:func:`_expand_ragged`).

* FGD's scale mask is ``1 / area`` of the smallest box over each cell: the minimum of per-box areas
  over each cell, :func:`_min_over_rectangles` (its docstring says how, and why not cell by cell).
* The Gaussian mask changes value per cell, so box rows are expanded into cells and the per-cell
  maximum is one ``scatter_reduce``.
"""

import math
from typing import List, NamedTuple, Sequence, Tuple

import torch

__all__ = ["infer_stride", "fgd_masks", "gaussian_target_mask"]

# box areas (in cells) are held in float32; larger boxes are refused rather than silently rounded
MAX_BOX_CELLS = 2**30


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
    """The boxes of a batch on one grid: per box, its image and its cells (``long``)."""

    n: int
    h: int
    w: int
    stride: float
    content: torch.Tensor  # (N, 2) rows and columns of each image's content cells
    boxes: torch.Tensor  # (M, 4) XYXY pixels, float64
    image: torch.Tensor  # (M,) the image of each box
    x0: torch.Tensor  # (M,) first covered column
    y0: torch.Tensor  # (M,) first covered row
    width: torch.Tensor  # (M,) covered columns (>= 1)
    height: torch.Tensor  # (M,) covered rows (>= 1)


def _boxes_on_grid(gt_boxes: List[torch.Tensor], image_sizes, feat_hw, stride) -> _BoxesOnGrid:
    """Concatenate the per-image boxes and map them to cells (module docstring), all at once."""
    h, w = int(feat_hw[0]), int(feat_hw[1])
    if len(gt_boxes) != len(image_sizes):
        raise ValueError(f"{len(gt_boxes)} gt_boxes tensors for {len(image_sizes)} image sizes")
    for i, image_boxes in enumerate(gt_boxes):
        if image_boxes.dim() != 2 or image_boxes.shape[-1] != 4:
            raise ValueError(
                f"gt_boxes[{i}] must have shape [K, 4] (XYXY pixels), "
                f"got {tuple(image_boxes.shape)}"
            )
    stride = float(infer_stride(image_sizes, (h, w)) if stride is None else stride)
    n = len(gt_boxes)
    device = gt_boxes[0].device if n else torch.device("cpu")
    boxes = torch.cat(list(gt_boxes)).double() if n else torch.zeros(0, 4, dtype=torch.float64)
    if not torch.isfinite(boxes).all():
        raise ValueError("gt_boxes hold NaN or infinite coordinates")
    content = torch.tensor(
        [
            [min(max(math.ceil(ih / stride), 1), h), min(max(math.ceil(iw / stride), 1), w)]
            for ih, iw in image_sizes
        ],
        device=device,
    ).reshape(n, 2)
    per_image = list(gt_boxes)  # one (K_i, 4) tensor per image
    counts = torch.tensor([len(image) for image in per_image], device=device)
    image = torch.repeat_interleave(torch.arange(n, device=device), counts)
    last_row = (content[image, 0] - 1).double()
    last_col = (content[image, 1] - 1).double()
    # a box covers the cells it intersects, within the image's content, and at least one cell
    x0 = torch.minimum(torch.floor(boxes[:, 0] / stride).clamp(min=0), last_col)
    y0 = torch.minimum(torch.floor(boxes[:, 1] / stride).clamp(min=0), last_row)
    x1 = torch.maximum(torch.minimum(torch.ceil(boxes[:, 2] / stride) - 1, last_col), x0)
    y1 = torch.maximum(torch.minimum(torch.ceil(boxes[:, 3] / stride) - 1, last_row), y0)
    return _BoxesOnGrid(
        n,
        h,
        w,
        stride,
        content,
        boxes,
        image,
        x0.long(),
        y0.long(),
        (x1 - x0 + 1).long(),
        (y1 - y0 + 1).long(),
    )


def _expand_ragged(payload: torch.Tensor, counts: torch.Tensor):
    """Row ``i`` of ``payload`` repeated ``counts[i]`` times, and each copy's index
    ``0..counts[i]-1``."""
    repeated = payload.repeat_interleave(counts, dim=0)
    first_copy = (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    return repeated, torch.arange(len(repeated), device=payload.device) - first_copy


def _min_over_rectangles(top, left, height, width, value, n_rows: int, n_cols: int) -> torch.Tensor:
    """``(n_rows, n_cols)``: per cell, the smallest ``value`` of the rectangles (``top``, ``left``,
    ``height``, ``width`` in cells) that cover it; ``inf`` where none does.

    Why not cell by cell (expand every rectangle into its cells, one scatter-min): that costs the
    boxes' total area, which grows with the number of boxes times their size. Instead every row of a
    rectangle, a segment of length ``L``, is covered exactly by two blocks of ``2^k`` cells,
    ``k = floor(log2 L)``: ``[start, start + 2^k)`` and ``[start + L - 2^k, start + L)``. A block's
    value is written at its first cell on level ``k``, and levels are merged from the widest down: a
    block of ``2^(k+1)`` cells starting at ``x`` is the two blocks of ``2^k`` starting at ``x`` and
    at ``x + 2^k``. Cost: two scatters per rectangle row and one pass over the grid per level
    (``log2`` of the widest rectangle), so 500 boxes per image cost about 2-3x what 10 do
    (``bench_fgd.py``). Rectangles are sorted by level before their rows are expanded, so each
    level is a slice (a mask per level cost as much as all the scatters).
    """
    if n_rows * n_cols >= 2**31:
        raise ValueError(f"a grid of {n_rows} x {n_cols} cells is more than the int32 indices hold")
    grid = torch.full((n_rows, n_cols), math.inf, device=value.device)
    if top.numel() == 0:
        return grid
    level = torch.frexp(width.double())[1] - 1  # floor(log2 width): width = m * 2^e, m in [0.5, 1)
    level, order = torch.sort(level, descending=True)
    height = height[order]
    # every rectangle row, in int32 (half the bytes of int64: these arrays are what grows with the
    # boxes, and on a CPU their allocation and page faults are most of the cost): its rectangle,
    # then its first cell and where its second block starts, by one gather of a per-rectangle table
    rect = torch.repeat_interleave(
        torch.arange(len(order), dtype=torch.int32, device=height.device), height
    )
    per_rect = torch.stack(
        [
            (top * n_cols + left)[order],
            width[order] - (1 << level),
            torch.cumsum(height, 0) - height,
        ],
        1,
    ).to(torch.int32)[rect]
    row_in_rect = torch.arange(len(rect), dtype=torch.int32, device=rect.device) - per_rect[:, 2]
    first_cell = per_rect[:, 0] + row_in_rect * n_cols
    starts = torch.empty(
        2 * len(rect), dtype=torch.int64, device=rect.device
    )  # a row's blocks together
    starts[0::2] = first_cell
    starts[1::2] = first_cell + per_rect[:, 1]
    values = value[order][rect].unsqueeze(1).expand(-1, 2).reshape(-1)
    per_level = torch.zeros(int(level[0]) + 1, dtype=torch.long, device=level.device)
    per_level = per_level.index_add_(0, level, height).tolist()  # rows per level, one sync
    begin = 0
    for k in range(len(per_level) - 1, -1, -1):  # over log2 levels, not over boxes
        if k < len(per_level) - 1:
            half = 1 << k
            # blocks of 2^(k+1) cells pushed down: the one starting 2^k cells to the left covers x
            grid[:, half:] = torch.minimum(grid[:, half:], grid[:, :-half])
        end = begin + 2 * per_level[k]
        grid.view(-1).scatter_reduce_(0, starts[begin:end], values[begin:end], reduce="amin")
        begin = end
    return grid


def fgd_masks(gt_boxes: List[torch.Tensor], image_sizes, feat_hw, stride=None):
    """FGD's focal masks (Yang et al. CVPR 2022, Sec. 3.1, Eqs. 2-4) on one feature grid.

    Returns ``(fg_scale, bg_scale)``, each ``(N, H, W)`` float:

    * ``fg_scale = M * S`` on the foreground: ``1 / (H_r * W_r)`` where ``H_r x W_r`` is the box's
      size in cells; where boxes overlap the smallest box wins (largest value).
    * ``bg_scale = (1 - M) / N_bg`` on the image's content cells outside every box, where ``N_bg``
      counts those cells; 0 on padding and 0 everywhere for a fully covered image.

    An image with no boxes is all background.
    """
    g = _boxes_on_grid(gt_boxes, image_sizes, feat_hw, stride)
    area = g.width * g.height
    if area.numel() and int(area.max()) > MAX_BOX_CELLS:
        raise ValueError(
            f"a box covers {int(area.max())} grid cells, more than the 2^30 the masks hold"
        )
    # the images' grids stacked into one (N * H, W) grid
    smallest_area = _min_over_rectangles(
        g.image * g.h + g.y0, g.x0, g.height, g.width, area.float(), g.n * g.h, g.w
    ).view(g.n, g.h, g.w)
    fg_scale = smallest_area.reciprocal()  # 1 / inf = 0 where no box
    rows_in = torch.arange(g.h, device=area.device).view(1, -1, 1) < g.content[:, 0].view(-1, 1, 1)
    cols_in = torch.arange(g.w, device=area.device).view(1, 1, -1) < g.content[:, 1].view(-1, 1, 1)
    background = ((fg_scale == 0) & rows_in & cols_in).float()
    bg_scale = background / background.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
    return fg_scale, bg_scale


def gaussian_target_mask(gt_boxes: List[torch.Tensor], image_sizes, feat_hw, stride=None):
    """MSSD's Gaussian target mask (Jia et al. 2024): ``(N, H, W)`` in [0, 1].

    Each box is a 2-D Gaussian over its own cells, centred on the cell holding the box centre,
    with standard deviation ``(box extent in cells) / 6`` per axis, so the peak is exactly 1 at the
    centre cell and the box edge is about 3 sigma away. Cells outside every box are 0; where boxes
    overlap the larger value wins.
    """
    g = _boxes_on_grid(gt_boxes, image_sizes, feat_hw, stride)
    centre_x = torch.floor((g.boxes[:, 0] + g.boxes[:, 2]) / (2.0 * g.stride))
    centre_y = torch.floor((g.boxes[:, 1] + g.boxes[:, 3]) / (2.0 * g.stride))
    centre_x = torch.minimum(torch.maximum(centre_x, g.x0.double()), (g.x0 + g.width - 1).double())
    centre_y = torch.minimum(torch.maximum(centre_y, g.y0.double()), (g.y0 + g.height - 1).double())
    # per box: its first cell (flat), width, the centre's offsets from the first cell,
    # 2 sigma^2 per axis
    per_box = torch.stack(
        [
            ((g.image * g.h + g.y0) * g.w + g.x0).double(),
            g.width.double(),
            centre_x - g.x0,
            centre_y - g.y0,
            2.0 * (g.width / 6.0) ** 2,
            2.0 * (g.height / 6.0) ** 2,
        ],
        1,
    )
    rows, row_in_box = _expand_ragged(per_box, g.height)
    rows[:, 0] += row_in_box * g.w
    rows[:, 3] -= row_in_box  # y offset of the centre from this row
    cells, col_in_row = _expand_ragged(rows, rows[:, 1].long())
    dx, dy = col_in_row - cells[:, 2], cells[:, 3]
    values = torch.exp(-(dx * dx / cells[:, 4] + dy * dy / cells[:, 5])).float()
    out = torch.zeros(g.n * g.h * g.w, device=g.boxes.device)
    out.scatter_reduce_(0, cells[:, 0].long() + col_in_row, values, reduce="amax")
    return out.view(g.n, g.h, g.w)
