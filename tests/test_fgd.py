"""FGD: masks, attentions and every loss term against hand-computed values and a loop reference."""

import math

import pytest
import torch
from reference_masks import loop_fgd_masks

from detkd.distillers import FGDDistiller
from detkd.losses import FGDLoss, GcBlock, channel_attention, fgd_masks, spatial_attention


def test_mask_cells_of_a_box_hand_checked():
    # stride 4, 8x8 grid, image 32x32: box [4, 4, 12, 8] covers columns 1..2, row 1
    fg, bg = fgd_masks([torch.tensor([[4.0, 4.0, 12.0, 8.0]])], [(32, 32)], (8, 8), stride=4)
    expected = torch.zeros(8, 8)
    expected[1, 1:3] = 0.5
    assert torch.equal(fg[0], expected)
    assert bg[0].sum().item() == pytest.approx(1.0)
    assert bg[0, 0, 0].item() == pytest.approx(1 / 62) and bg[0, 1, 1].item() == 0


def test_overlap_smallest_box_wins_and_border_boxes():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 16.0, 16.0],  # 4x4 cells -> 1/16
            [4.0, 4.0, 8.0, 8.0],  # one cell (1,1) -> 1, inside the big box
            [28.0, 28.0, 40.0, 40.0],  # crosses the image border: clamped to the last cell (7,7)
            [-5.0, 20.0, 2.0, 24.0],  # starts left of the image: column 0, row 5
        ]
    )
    fg, _ = fgd_masks([boxes], [(32, 32)], (8, 8), stride=4)
    assert (
        fg[0, 1, 1] == 1.0
        and fg[0, 0, 0] == pytest.approx(1 / 16)
        and fg[0, 3, 3] == pytest.approx(1 / 16)
    )
    assert fg[0, 7, 7] == 1.0 and fg[0, 5, 0] == 1.0
    assert fg[0, 4, 4] == 0


def test_empty_image_is_all_background_and_padding_is_excluded():
    # two images padded to one 8x8 grid; the second is 16 px wide: columns 4..7 are padding
    boxes = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 4.0, 4.0]])]
    fg, bg = fgd_masks(boxes, [(32, 32), (32, 16)], (8, 8), stride=4)
    assert fg[0].sum() == 0 and torch.allclose(bg[0], torch.full((8, 8), 1 / 64))
    assert fg[1, 0, 0] == 1.0 and fg[1].sum() == 1.0
    assert (bg[1, :, 4:] == 0).all()
    assert bg[1, :, :4].sum().item() == pytest.approx(1.0) and bg[1, 0, 1].item() == pytest.approx(
        1 / 31
    )


def test_tiny_and_degenerate_boxes_take_one_cell():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [9.0, 1.0, 9.5, 1.2]])
    fg, _ = fgd_masks([boxes], [(32, 32)], (8, 8), stride=4)
    assert fg[0, 1, 1] == 1.0 and fg[0, 0, 2] == 1.0 and fg[0].sum() == 2.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_equal_loop_reference_on_random_batches(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [(100, 150), (128, 96), (60, 200)]
    boxes = []
    for h, w in sizes:
        k = int(torch.randint(0, 40, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) - 8
        wh = torch.rand(k, 2, generator=g) * 60
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    for stride in (4, 8, 16, 32):
        hw = (math.ceil(128 / stride), math.ceil(224 / stride))
        fg, bg = fgd_masks(boxes, sizes, hw, stride=stride)
        rfg, rbg = loop_fgd_masks(boxes, sizes, hw, stride)
        assert torch.allclose(fg, rfg, atol=1e-6) and torch.allclose(bg, rbg, atol=1e-6)


def test_stride_is_inferred_with_padding():
    fg_inferred, _ = fgd_masks([torch.tensor([[10.0, 10.0, 30.0, 20.0]])], [(100, 70)], (28, 20))
    fg_given, _ = fgd_masks(
        [torch.tensor([[10.0, 10.0, 30.0, 20.0]])], [(100, 70)], (28, 20), stride=4
    )
    assert torch.equal(fg_inferred, fg_given)


def test_attentions_hand_values():
    feat = torch.zeros(1, 2, 1, 2)
    feat[0, 0, 0, 0] = (
        1.0  # |F| channel-mean: [0.5, 0] over positions; spatial-mean: [0.5, 0] over channels
    )
    T = 0.5
    sa = spatial_attention(feat, T)
    e = math.exp(1.0)
    assert torch.allclose(sa, torch.tensor([[[2 * e / (e + 1), 2 / (e + 1)]]]))
    ca = channel_attention(feat, T)
    assert torch.allclose(ca, torch.tensor([[2 * e / (e + 1), 2 / (e + 1)]]))
    assert sa.sum().item() == pytest.approx(2.0) and ca.sum().item() == pytest.approx(2.0)


def _reference_fgd_terms(loss: FGDLoss, s, t, boxes, sizes, stride, alpha, beta, gamma, lambda_):
    """Each FGD term written out from the paper's equations, with its weight."""
    n, c, h, w = t.shape
    fg, bg = loop_fgd_masks(boxes, sizes, (h, w), stride)
    T = loss.temperature
    a_s_t = h * w * torch.softmax(t.abs().mean(1).reshape(n, -1) / T, 1).reshape(n, h, w)
    a_c_t = c * torch.softmax(t.abs().mean((2, 3)) / T, 1)
    sa = loss.align(s) if loss.align is not None else s
    a_s_s = h * w * torch.softmax(sa.abs().mean(1).reshape(n, -1) / T, 1).reshape(n, h, w)
    a_c_s = c * torch.softmax(sa.abs().mean((2, 3)) / T, 1)
    fg_sum = bg_sum = 0.0
    for i in range(n):
        for ch in range(c):
            d2 = (t[i, ch] - sa[i, ch]) ** 2 * a_s_t[i] * a_c_t[i, ch]
            fg_sum = fg_sum + (d2 * fg[i]).sum()
            bg_sum = bg_sum + (d2 * bg[i]).sum()
    att = (a_s_t - a_s_s).abs().sum() + (a_c_t - a_c_s).abs().sum()
    glob = ((loss.gc_teacher(t) - loss.gc_student(sa)) ** 2).sum()
    return {
        "loss_fgd_fg": alpha * fg_sum / n,
        "loss_fgd_bg": beta * bg_sum / n,
        "loss_fgd_attention": gamma * att / n,
        "loss_fgd_global": lambda_ * glob / n,
    }


@pytest.mark.parametrize("channels", [(4, 4), (3, 6)])
def test_fgd_terms_match_the_equations(channels):
    torch.manual_seed(0)
    cs, ct = channels
    loss = FGDLoss(cs, ct)
    weights = {"fg": 2.0, "bg": 3.0, "attention": 5.0, "global": 7.0}  # applied by the distiller
    for gc in (loss.gc_student, loss.gc_teacher):  # make the global term non-trivial
        torch.nn.init.normal_(gc.transform[-1].weight)
    s = torch.randn(2, cs, 6, 8)
    t = torch.randn(2, ct, 6, 8)
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 12.0], [8.0, 4.0, 20.0, 20.0]]), torch.zeros(0, 4)]
    sizes = [(24, 32), (20, 28)]
    ours = {f"loss_fgd_{k}": weights[k] * v for k, v in loss(s, t, boxes, sizes, stride=4).items()}
    ref = _reference_fgd_terms(loss, s, t, boxes, sizes, 4, *weights.values())
    assert set(ours) == set(ref)
    for k in ours:
        assert ours[k].item() == pytest.approx(ref[k].item(), rel=1e-5), k


def test_fgd_gradients_reach_student_align_and_gcblocks_not_teacher():
    loss = FGDLoss(3, 6)
    torch.nn.init.normal_(loss.gc_student.transform[-1].weight)
    s = torch.randn(1, 3, 4, 4, requires_grad=True)
    t = torch.randn(1, 6, 4, 4, requires_grad=True)
    total = sum(loss(s, t, [torch.tensor([[0.0, 0.0, 8.0, 8.0]])], [(16, 16)], stride=4).values())
    total.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    assert loss.align.weight.grad.abs().sum() > 0
    assert loss.gc_student.context_conv.weight.grad is not None


def test_fgd_normalize_is_fgd_on_channel_standardized_maps_and_scale_free():
    """NORMALIZE: every term equals FGD's on the maps standardized per channel over N*H*W, so a
    teacher channel scaled by 100 and shifted (the heavy-tailed channel that otherwise takes FGD's
    whole loss) changes nothing, where raw FGD's feature terms grow by orders of magnitude."""
    torch.manual_seed(0)
    plain, normed = FGDLoss(4, 4), FGDLoss(4, 4, normalize=True)
    for gc in (plain.gc_student, plain.gc_teacher):
        torch.nn.init.normal_(gc.transform[-1].weight)
    normed.load_state_dict(plain.state_dict())
    s, t = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 12.0]]), torch.tensor([[8.0, 4.0, 20.0, 20.0]])]
    sizes = [(24, 32), (24, 32)]

    def z(x):  # zero mean, unit population variance per channel over N*H*W, by hand
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        return (x - mean) / ((x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)).sqrt()

    ours = normed(s, t, boxes, sizes, stride=4)
    ref = plain(z(s), z(t), boxes, sizes, stride=4)
    for k in ref:
        assert ours[k].item() == pytest.approx(ref[k].item(), rel=1e-5), k
    loud = t.clone()
    loud[:, 0] = 100 * loud[:, 0] + 7
    louder = normed(s, loud, boxes, sizes, stride=4)
    for k in ours:
        assert louder[k].item() == pytest.approx(ours[k].item(), rel=1e-4), k
    raw, raw_loud = plain(s, t, boxes, sizes, stride=4), plain(s, loud, boxes, sizes, stride=4)
    assert raw_loud["fg"].item() > 100 * raw["fg"].item()
    # with an align layer: the student is standardized after it
    aligned = FGDLoss(3, 4, normalize=True)
    aligned.gc_student.load_state_dict(plain.gc_student.state_dict())
    aligned.gc_teacher.load_state_dict(plain.gc_teacher.state_dict())
    s3 = torch.randn(2, 3, 6, 8, requires_grad=True)
    t4 = torch.randn(2, 4, 6, 8, requires_grad=True)
    with torch.no_grad():
        ref = plain(z(aligned.align(s3)), z(t4), boxes, sizes, stride=4)
    ours = aligned(s3, t4, boxes, sizes, stride=4)
    for k in ref:
        assert ours[k].item() == pytest.approx(ref[k].item(), rel=1e-5), k
    # gradients reach the student (through the standardization) and its align layer, not T
    sum(ours.values()).backward()
    assert s3.grad.abs().sum() > 0 and aligned.align.weight.grad.abs().sum() > 0
    assert t4.grad is None


def test_fgd_defaults_and_bad_weights():
    """The loss has no weights (it returns unweighted terms); the distiller holds the paper's
    Faster R-CNN release weights, on standardized maps by default (docs/METHODS.md), and refuses
    bad ones by key."""
    loss = FGDLoss(4, 4)
    assert loss.temperature == 0.5 and loss.align is None
    fgd = FGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4])
    assert fgd.weights == {"fg": 5e-5, "bg": 2.5e-5, "attention": 5e-5, "global": 5e-7}
    assert fgd.levels["p3"].temperature == 0.5 and fgd.levels["p3"].normalize is True
    assert FGDDistiller.balance_factor == 3.0
    paper = FGDDistiller(
        in_features=["p3"], student_channels=[4], teacher_channels=[4], normalize=False
    )
    assert paper.levels["p3"].normalize is False
    with pytest.raises(ValueError, match="NORMALIZE"):
        FGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4], normalize=2)
    with pytest.raises(ValueError, match="ALPHA"):
        FGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4], alpha=-1.0)
    with pytest.raises(ValueError, match="GAMMA"):
        FGDDistiller(
            in_features=["p3"], student_channels=[4], teacher_channels=[4], gamma=float("nan")
        )


def test_gcblock_starts_as_identity_and_has_paper_structure():
    block = GcBlock(8)
    x = torch.randn(2, 8, 3, 5)
    assert torch.equal(block(x), x)
    convs = [m for m in block.transform if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8]
    assert isinstance(block.transform[1], torch.nn.LayerNorm)


@pytest.mark.parametrize("n_boxes", [254, 255, 300])
def test_masks_with_many_boxes_match_the_loop(n_boxes):
    """Hundreds of boxes in one image next to an image with a few: still the per-box loop, padding
    included."""
    g = torch.Generator().manual_seed(n_boxes)
    sizes = [(60, 90), (64, 70)]
    boxes = []
    for h, w in sizes:
        xy = torch.rand(n_boxes, 2, generator=g) * torch.tensor([w, h])
        boxes.append(torch.cat([xy, xy + 1 + torch.rand(n_boxes, 2, generator=g) * 30], dim=1))
    boxes[1] = boxes[1][:7]  # images with very different box counts in one batch
    fg, bg = fgd_masks(boxes, sizes, (16, 24), stride=4)
    rfg, rbg = loop_fgd_masks(boxes, sizes, (16, 24), 4)
    assert torch.allclose(fg, rfg, atol=1e-6) and torch.allclose(bg, rbg, atol=1e-6)


@pytest.mark.parametrize("grid_w", [1, 2, 3, 130, 256, 300])
def test_masks_with_rows_of_every_length_match_the_loop(grid_w):
    """Box rows of every length 1..grid_w, so every level of the sparse table is written and pushed
    down (up to 2^8 cells); all images share one content size with a padded column and row (the
    batch-wide padding path)."""
    g = torch.Generator().manual_seed(grid_w)
    width_px = 4 * grid_w - 2  # ceil(width / 4) = grid_w: the last column is partly image
    sizes = [(38, width_px)] * 3
    lengths = torch.arange(1, grid_w + 1, dtype=torch.float32)
    x0 = (torch.rand(grid_w, generator=g) * (grid_w - lengths + 1)).floor()
    y0 = torch.randint(0, 9, (grid_w,), generator=g).float()
    boxes = torch.stack([x0 * 4, y0 * 4, (x0 + lengths) * 4, (y0 + 1 + (lengths % 3)) * 4], 1)
    batch = [boxes, boxes.flip(0)[: grid_w // 2], torch.zeros(0, 4)]
    fg, bg = fgd_masks(batch, sizes, (11, grid_w + 1), stride=4)
    rfg, rbg = loop_fgd_masks(batch, sizes, (11, grid_w + 1), 4)
    assert torch.allclose(fg, rfg, atol=1e-6) and torch.allclose(bg, rbg, atol=1e-6)
    assert (bg[:, 10] == 0).all() and (bg[:, :, grid_w] == 0).all()  # the padded row and column
    assert bg[2].sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("side", [(127, 129), (128, 128)])
def test_masks_with_a_box_of_about_2_to_the_14_cells(side):
    """Boxes just under and at 2^14 cells (the limit of an earlier int16 table) equal the loop, and
    a one-cell box inside still wins."""
    w, h = side
    boxes = [torch.tensor([[0.0, 0.0, 4.0 * w, 4.0 * h], [8.0, 8.0, 12.0, 12.0]])]
    fg, bg = fgd_masks(boxes, [(4 * 130, 4 * 130)], (130, 130), stride=4)
    rfg, rbg = loop_fgd_masks(boxes, [(4 * 130, 4 * 130)], (130, 130), 4)
    assert torch.allclose(fg, rfg, atol=1e-9) and torch.allclose(bg, rbg, atol=1e-9)
    assert fg[0, 0, 0].item() == pytest.approx(1 / (w * h), rel=1e-7) and fg[0, 2, 2] == 1.0
    assert fg[0, h - 1, w - 1] > 0 and fg[0, h, w] == 0 and bg[0, h, w] > 0


def test_masks_refuse_a_box_over_2_to_the_30_cells():
    with pytest.raises(ValueError, match="more than the 2\\^30"):
        fgd_masks(
            [torch.tensor([[0.0, 0.0, 4e5, 4e5]])], [(400000, 400000)], (100000, 100000), stride=4
        )


def test_masks_with_a_box_of_36100_cells():
    """A box of 190 x 190 = 36100 cells: the same masks as the loop, with smaller boxes inside it
    still winning."""
    boxes = [
        torch.tensor(
            [[0.0, 0.0, 760.0, 760.0], [40.0, 40.0, 48.0, 60.0], [700.0, 8.0, 799.0, 12.0]]
        ),
        torch.tensor([[4.0, 4.0, 8.0, 8.0]]),
    ]
    sizes = [(800, 800), (800, 600)]
    fg, bg = fgd_masks(boxes, sizes, (200, 200), stride=4)
    rfg, rbg = loop_fgd_masks(boxes, sizes, (200, 200), 4)
    assert torch.allclose(fg, rfg, atol=1e-9) and torch.allclose(bg, rbg, atol=1e-9)
    assert fg[0, 0, 0].item() == pytest.approx(1 / 36100) and fg[0, 12, 10].item() == pytest.approx(
        1 / 10
    )
    assert fg[1, 1, 1] == 1.0 and (bg[1, :, 150:] == 0).all()


def test_wide_box_rows_do_not_leak_into_the_next_grid_row():
    """Rows end and start next to each other in memory: a wide box on the last columns of one row
    and a narrow one at column 0 of the next must not see each other when blocks are pushed
    down."""
    boxes = torch.tensor(
        [
            [4.0, 0.0, 64.0, 4.0],  # row 0, columns 1..15 (level 3)
            [0.0, 4.0, 8.0, 8.0],
        ]
    )  # row 1, columns 0..1
    fg, bg = fgd_masks([boxes], [(8, 64)], (2, 16), stride=4)
    expected = torch.zeros(2, 16)
    expected[0, 1:] = 1 / 15
    expected[1, :2] = 1 / 2
    assert torch.equal(fg[0], expected)
    assert bg[0, 0, 0].item() == pytest.approx(1 / 15) and bg[0].sum().item() == pytest.approx(1.0)


def test_ragged_expansion_with_empty_rows():
    from detkd.losses.masks import _expand_ragged

    payload = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    repeated, index = _expand_ragged(payload, torch.tensor([2, 0, 3, 0]))
    assert repeated.flatten().tolist() == [10.0, 10.0, 30.0, 30.0, 30.0] and index.tolist() == [
        0,
        1,
        0,
        1,
        2,
    ]
    repeated, index = _expand_ragged(payload, torch.zeros(4, dtype=torch.long))
    assert repeated.shape == (0, 1) and index.numel() == 0


def test_masks_reject_bad_boxes_with_the_cause():
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="NaN or infinite"):
            fgd_masks(
                [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, bad, 4.0]])],
                [(32, 32)] * 2,
                (8, 8),
                stride=4,
            )
    with pytest.raises(ValueError, match=r"shape \[K, 4\]"):
        fgd_masks([torch.zeros(3)], [(32, 32)], (8, 8), stride=4)
    with pytest.raises(ValueError, match="2 gt_boxes tensors for 1 image sizes"):
        fgd_masks([torch.zeros(0, 4)] * 2, [(32, 32)], (8, 8), stride=4)
