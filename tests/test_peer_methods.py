"""PKD, CWD, MGD and the head cross-forward: hand-computed values on tiny tensors, gradients, the
degenerate cases, and training steps with a heterogeneous pair and a low-resolution student."""

import math
import socket
import time

import pytest
import torch
from conftest import train_batch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from detkd.batch import DistillBatch, SideOutputs
from detkd.distillers import CrossHeadDistiller, MGDDistiller
from detkd.losses import (
    channel_standardize,
    channel_wise_divergence,
    cross_head_box_l1,
    cross_head_kl,
    mgd_loss,
    pkd_loss,
    random_position_mask,
)
from detkd.modeling.heads import run_backbone


# ----- PKD ----------------------------------------------------------------------------------------
def test_pkd_hand_values_and_pearson_identity():
    s = torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 2)  # standardized: [-1, 1]
    t = torch.tensor([2.0, 0.0]).reshape(1, 1, 1, 2)  # standardized: [1, -1], r = -1
    assert pkd_loss(s, t).item() == pytest.approx(2.0, rel=1e-5)  # mean((-2)^2, 2^2) / 2 = 1 - r
    assert pkd_loss(s, 5 * s + 7).item() == pytest.approx(0.0, abs=1e-6)  # scale and shift removed
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    r = [
        torch.corrcoef(torch.stack([s[:, c].flatten(), t[:, c].flatten()]))[0, 1] for c in range(3)
    ]
    assert pkd_loss(s, t).item() == pytest.approx((1 - torch.stack(r)).mean().item(), rel=1e-4)


def test_pkd_standardizes_over_batch_and_positions():
    x = torch.randn(3, 2, 4, 4) * torch.tensor([1.0, 10.0]).view(1, 2, 1, 1) + 5
    z = channel_standardize(x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.var(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-4)


# two processes' maps of different sizes, and the weights of a loss sum(w * norm(x)) on each
_SPLIT = [(2, 3, 4, 5), (1, 3, 6, 2)]


def _split_maps():
    g = torch.Generator().manual_seed(3)
    scale = torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64).view(1, 3, 1, 1)
    maps = [torch.randn(*shape, generator=g, dtype=torch.float64) * scale + 2 for shape in _SPLIT]
    weights = [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in _SPLIT]
    return maps, weights


def _standardize_one_part(rank, out_dir, port):
    """One of two gloo processes (gloo on any machine: the maps are CPU tensors); it returns
    without tearing the group down, as detectron2's launched workers do."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    maps, weights = _split_maps()
    x = maps[rank].requires_grad_(True)
    z = channel_standardize(x)
    (weights[rank] * z).sum().backward()
    torch.save({"z": z.detach(), "grad": x.grad}, f"{out_dir}/{rank}.pth")
    dist.barrier()


@pytest.mark.slow
def test_standardization_under_ddp_is_the_whole_batchs(tmp_path):
    """Two processes holding maps of different sizes standardize over the positions of both, and
    the gradient of the summed loss reaches each process's maps as one process holding every
    position computes it (DDP then averages the parameters' gradients)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workers = torch.multiprocessing.spawn(
        _standardize_one_part, args=(str(tmp_path), port), nprocs=2, join=False
    )
    deadline = time.monotonic() + 120
    while not workers.join(timeout=5):
        if time.monotonic() > deadline:
            for p in workers.processes:
                p.kill()
            pytest.fail("the two gloo processes did not finish within 120 s")
    maps, weights = _split_maps()
    # the reference: one process, every position of both maps in one (1, C, 1, n) map
    xs = [m.clone().requires_grad_(True) for m in maps]
    flat = torch.cat([x.permute(1, 0, 2, 3).reshape(3, -1) for x in xs], dim=1)
    z = channel_standardize(flat.view(1, 3, 1, -1)).view(3, -1)
    sizes = [m.numel() // 3 for m in maps]
    for x, w, zp in zip(xs, weights, z.split(sizes, dim=1)):
        (w.permute(1, 0, 2, 3).reshape(3, -1) * zp).sum().backward(retain_graph=True)
    for rank, (x, zp) in enumerate(zip(xs, z.split(sizes, dim=1))):
        got = torch.load(tmp_path / f"{rank}.pth")
        want = zp.detach().view(3, x.shape[0], x.shape[2], x.shape[3]).permute(1, 0, 2, 3)
        assert torch.allclose(got["z"], want, atol=1e-10)
        assert torch.allclose(got["grad"], x.grad, atol=1e-10)
    # each process's own moments would differ: the split matters without the all-reduce
    assert not torch.allclose(channel_standardize(maps[1]), got["z"], atol=1e-3)


def test_pkd_gradient_and_constant_maps():
    s = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: pkd_loss(x, t), (s,))
    pkd_loss(s, t).backward()
    assert t.grad is None  # the teacher is detached
    # a constant student map standardizes to 0: loss = mean(norm(T)^2) / 2 = 1/2, gradients finite
    const = torch.full((2, 2, 3, 3), 4.0, requires_grad=True)
    loss = pkd_loss(const, t.detach().float())
    assert loss.item() == pytest.approx(0.5, rel=1e-4)
    loss.backward()
    assert torch.isfinite(const.grad).all()
    assert pkd_loss(const, torch.full((2, 2, 3, 3), -1.0)).item() == 0.0  # both constant


# ----- CWD ----------------------------------------------------------------------------------------
def test_cwd_hand_value_and_temperature():
    s = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)
    t = torch.tensor([2.0, 0.0]).reshape(1, 1, 1, 2)

    def kl(tau):
        pt = torch.softmax(t.flatten() / tau, 0)
        ps = torch.softmax(s.flatten() / tau, 0)
        return tau**2 * (pt * (pt.log() - ps.log())).sum().item()

    e = math.e
    # tau = 1: p_t = [e^2, 1] / (e^2 + 1), p_s = [1, e] / (1 + e)
    p0, p1 = e**2 / (e**2 + 1), 1 / (e**2 + 1)
    by_hand = p0 * (math.log(p0) - math.log(1 / (1 + e))) + p1 * (
        math.log(p1) - math.log(e / (1 + e))
    )
    assert channel_wise_divergence(s, t).item() == pytest.approx(by_hand, rel=1e-5)
    assert channel_wise_divergence(s, t, temperature=2.0).item() == pytest.approx(kl(2.0), rel=1e-5)
    assert channel_wise_divergence(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_cwd_is_a_mean_over_images_and_channels_with_gradient():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(1, 1, 3, 3, generator=g), torch.randn(1, 1, 3, 3, generator=g)
    one = channel_wise_divergence(s, t)
    # the same channel 2 images x 3 channels over: the same value (sum / (N * C))
    assert channel_wise_divergence(
        s.expand(2, 3, 3, 3), t.expand(2, 3, 3, 3)
    ).item() == pytest.approx(one.item(), rel=1e-5)
    x = s.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: channel_wise_divergence(y, t.double(), 1.5), (x,))


# ----- MGD ----------------------------------------------------------------------------------------
def test_mgd_masks_ratio_and_extremes():
    g = torch.Generator().manual_seed(0)
    mask = random_position_mask(4, 50, 50, 0.45, g, "cpu")
    assert mask.shape == (4, 1, 50, 50) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (1 - mask).mean().item() == pytest.approx(0.45, abs=0.02)
    assert random_position_mask(2, 3, 3, 0.0, g, "cpu").eq(1).all()  # nothing masked
    assert random_position_mask(2, 3, 3, 1.0, g, "cpu").eq(0).all()  # everything masked


def test_mgd_loss_hand_value():
    generated = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(2, 1, 1, 2)
    teacher = torch.tensor([0.0, 2.0, 1.0, 1.0]).reshape(2, 1, 1, 2)
    assert mgd_loss(generated, teacher).item() == pytest.approx((1 + 0 + 4 + 9) / 2)


def _mgd_batch(s, t):
    return DistillBatch(
        student=SideOutputs({"p3": s}),
        teacher=SideOutputs({"p3": t}),
        gt_boxes=[],
        image_sizes=[],
        strides={"p3": 8.0},
    )


def test_mgd_distiller_masks_are_seeded_and_gradients_reach_student_and_generator():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    t = torch.randn(2, 8, 6, 6, generator=g)
    config = dict(
        in_features=["p3"],
        student_channels=[4],
        teacher_channels=[8],
        alpha=2.0,
        seed=5,
        normalize=False,
    )
    a, b = MGDDistiller(**config), MGDDistiller(**config)
    b.load_state_dict(a.state_dict())
    first = [a(_mgd_batch(s, t))["loss_mgd_p3"] for _ in range(2)]
    assert first[0].item() != first[1].item()  # a new mask every step
    assert [b(_mgd_batch(s, t))["loss_mgd_p3"].item() for _ in range(2)] == [
        x.item() for x in first
    ]
    # the paper's form (NORMALIZE False; the default standardizes the maps first): the term is
    # alpha * sum((T - G(align(S) * M))^2) / N, with this step's mask
    c = MGDDistiller(
        in_features=["p3"],
        student_channels=[4],
        teacher_channels=[8],
        alpha=2.0,
        seed=5,
        normalize=False,
    )
    c.load_state_dict(a.state_dict())
    mask = random_position_mask(2, 6, 6, 0.45, torch.Generator().manual_seed(5), "cpu")
    expected = 2.0 * ((t - c.generators["p3"](c.align["p3"](s) * mask)) ** 2).sum() / 2
    assert c(_mgd_batch(s, t))["loss_mgd_p3"].item() == pytest.approx(expected.item(), rel=1e-5)
    first[0].backward()
    assert s.grad.abs().sum() > 0 and a.generators["p3"][0].weight.grad.abs().sum() > 0
    assert a.align["p3"].weight.grad.abs().sum() > 0
    # everything masked: the generator sees zeros, the term stays finite; nothing masked: plain
    for ratio in (0.0, 1.0):
        d = MGDDistiller(
            in_features=["p3"], student_channels=[4], teacher_channels=[8], mask_ratio=ratio
        )
        assert torch.isfinite(d(_mgd_batch(s.detach(), t))["loss_mgd_p3"])
    with pytest.raises(ValueError, match="MGD.MASK_RATIO must be in"):
        MGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[8], mask_ratio=1.5)


def test_mgd_normalize_standardizes_both_maps_per_channel():
    """NORMALIZE: alpha * sum((z(T) - z(G(align(S) * M)))^2) / N with z the per-channel
    standardization over N*H*W; a teacher channel scaled by 100 and shifted changes nothing."""
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    t = torch.randn(2, 8, 6, 6, generator=g)

    def normalized():  # one seed and weights: two of them draw the same masks
        return MGDDistiller(
            in_features=["p3"],
            student_channels=[4],
            teacher_channels=[8],
            alpha=2.0,
            seed=5,
            normalize=True,
        )

    a = normalized()
    mask = random_position_mask(2, 6, 6, 0.45, torch.Generator().manual_seed(5), "cpu")

    def z(x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        return (x - mean) / ((x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)).sqrt()

    expected = 2.0 * ((z(t) - z(a.generators["p3"](a.align["p3"](s) * mask))) ** 2).sum() / 2
    term = a(_mgd_batch(s, t))["loss_mgd_p3"]
    assert term.item() == pytest.approx(expected.item(), rel=1e-5)
    # scale-free in the teacher: the same mask (a fresh distiller of the same seed and weights)
    b = normalized()
    b.load_state_dict(a.state_dict())
    loud = t.clone()
    loud[:, 0] = 100 * loud[:, 0] + 7
    assert b(_mgd_batch(s, loud))["loss_mgd_p3"].item() == pytest.approx(term.item(), rel=1e-4)
    term.backward()
    assert s.grad.abs().sum() > 0 and a.generators["p3"][0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="NORMALIZE"):
        MGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[8], normalize="y")


# ----- head cross-forward -------------------------------------------------------------------------
def test_cross_head_kl_and_box_hand_values():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    e = math.e
    p, q = e / (e + 1), 1 / (e + 1)  # row 2 at T = 1: teacher [q, p], cross [p, q]
    row2 = q * math.log(q / p) + p * math.log(p / q)
    assert cross_head_kl(x, t, 1.0).item() == pytest.approx(row2 / 2, rel=1e-5)
    tau = 3.0
    pt, px = torch.softmax(t / tau, 1), torch.softmax(x.detach() / tau, 1)
    expected = tau**2 * (pt * (pt.log() - px.log())).sum() / 2
    assert cross_head_kl(x, t, tau).item() == pytest.approx(expected.item(), rel=1e-5)
    cross_head_kl(x, t, tau).backward()
    assert x.grad.abs().sum() > 0
    empty = torch.zeros(0, 2, requires_grad=True)
    zero = cross_head_kl(empty, torch.zeros(0, 2), tau)
    assert zero.item() == 0.0 and zero.requires_grad  # no proposals: 0, still in the graph
    d = torch.tensor([[1.0, 0.0, -1.0, 2.0]])
    assert cross_head_box_l1(d, torch.zeros(1, 4), normalizer=8).item() == pytest.approx(4 / 8)


def _cross_batch(model, data, proposals):
    """A DistillBatch whose student region features are the teacher's own, pooled at
    ``proposals`` (teacher pixels = student pixels here), with the teacher's RCN outputs on them."""
    heads = model.teacher.roi_heads
    with torch.no_grad():
        t_feats = run_backbone(model.teacher.backbone, model.teacher_images(data).tensor)
        pooled = heads.box_pooler(
            [t_feats[f] for f in heads.box_in_features], [p.proposal_boxes for p in proposals]
        )
        scores, deltas = heads.box_predictor(heads.box_head(pooled))
    return DistillBatch(
        student=SideOutputs(rcn_pooled=pooled),
        teacher=SideOutputs(t_feats, rcn_scores=scores, rcn_deltas=deltas),
        gt_boxes=[],
        image_sizes=[],
        strides={},
        rcn_proposals=proposals,
        num_classes=5,
        teacher_roi_heads=heads,
    )


def _proposals(data, n=None):
    out = []
    for x in data:
        inst = Instances(x["image"].shape[-2:])
        gt = x["instances"]
        inst.proposal_boxes = Boxes(gt.gt_boxes.tensor[:n])
        inst.gt_classes = gt.gt_classes[:n]
        inst.gt_boxes = Boxes(gt.gt_boxes.tensor[:n])
        out.append(inst)
    return out


def test_cross_head_is_zero_when_the_student_sees_the_teachers_features(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_cross_head.yaml")
    model = build_model(cfg)
    data = train_batch(cfg)
    same = CrossHeadDistiller(
        in_features=["p2", "p3", "p4", "p5"],
        student_channels=128,
        teacher_channels=128,
        box_weight=1.0,
    )
    terms = same(_cross_batch(model, data, _proposals(data)))
    assert terms["loss_cross_head_cls"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["loss_cross_head_box"].item() == pytest.approx(0.0, abs=1e-6)
    # no proposals at all: finite zeros
    terms = same(_cross_batch(model, data, _proposals(data, n=0)))
    assert all(v.item() == 0.0 for v in terms.values())


def test_cross_head_needs_one_pooled_size(distill_cfg):
    cfg = distill_cfg(
        "configs/demo/distill_cross_head.yaml", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 5
    )
    with pytest.raises(ValueError, match=r"they pool \(5, 5\) and \(7, 7\)"):
        build_model(cfg)


@pytest.mark.parametrize(
    "method,terms",
    [
        ("pkd", ["loss_pkd_p2", "loss_pkd_p5"]),
        ("cwd", ["loss_cwd_p2", "loss_cwd_p6"]),
        ("mgd", ["loss_mgd_p2", "loss_mgd_p6"]),
        ("cross_head", ["loss_cross_head_cls"]),
    ],
)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_training_step_with_a_heterogeneous_pair(distill_cfg, method, terms, scale):
    """Student FPN 64 channels, teacher 128; at scale 0.5 the maps differ in size too."""
    cfg = distill_cfg(
        f"configs/demo/distill_{method}.yaml", "MODEL.DISTILL.STUDENT_INPUT_SCALE", scale
    )
    model = build_model(cfg).train()
    (distiller,) = model.distillers.values()
    aligns = (
        distiller.align.values()
        if isinstance(distiller.align, torch.nn.ModuleDict)
        else [distiller.align]
    )
    assert any(m.in_channels == 64 and m.out_channels == 128 for m in aligns)
    with EventStorage():
        losses = model(train_batch(cfg))
    assert set(terms) <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.parameters())
    # the method's own layers are not part of the student (left out of the exported student)
    assert not any(k.startswith("distillers") for k in model.student.state_dict())
