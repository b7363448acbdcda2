"""MSSD: Gaussian target mask by hand, PAFPN shapes, the self-distillation terms."""

import math

import pytest
import torch
from conftest import REPO, make_cfg, train_batch
from detectron2.config import LazyConfig
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from reference_masks import loop_gaussian_mask

from detkd.batch import DistillBatch, SideOutputs
from detkd.distillers import MSSDDistiller
from detkd.losses import MSSDLoss, channel_standardize, gaussian_target_mask


def test_gaussian_peak_at_centre_and_zero_off_boxes():
    # stride 4: box [8, 8, 32, 20] covers columns 2..7 (6 cells), rows 2..4 (3 cells);
    # centre (20, 14) -> cell (col 5, row 3)
    g = gaussian_target_mask(
        [torch.tensor([[8.0, 8.0, 32.0, 20.0]])], [(40, 40)], (10, 10), stride=4
    )[0]
    assert g[3, 5] == 1.0 and g.max() == 1.0
    sx, sy = 6 / 6, 3 / 6
    assert g[3, 2].item() == pytest.approx(math.exp(-9 / (2 * sx**2)), rel=1e-5)
    assert g[2, 5].item() == pytest.approx(math.exp(-1 / (2 * sy**2)), rel=1e-5)
    assert g[4, 6].item() == pytest.approx(math.exp(-1 / 2) * math.exp(-1 / (2 * sy**2)), rel=1e-5)
    inside = torch.zeros(10, 10, dtype=torch.bool)
    inside[2:5, 2:8] = True
    assert (g[~inside] == 0).all() and (g[inside] > 0).all()


def test_gaussian_overlaps_take_max_and_empty_image_is_zero():
    boxes = [torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 8.0, 8.0]]), torch.zeros(0, 4)]
    g = gaussian_target_mask(boxes, [(16, 16), (16, 16)], (4, 4), stride=4)
    assert g[0, 1, 1] == 1.0 and g[0, 2, 2] == 1.0  # small box's peak and big box's peak
    assert g[1].abs().sum() == 0


@pytest.mark.parametrize("stride", [4, 8])
def test_gaussian_mask_equals_a_per_box_loop(stride):
    g = torch.Generator().manual_seed(stride)
    sizes = [(100, 150), (128, 96), (60, 200)]
    boxes = []
    for h, w in sizes:
        xy = torch.rand(25, 2, generator=g) * torch.tensor([w, h]) - 8
        boxes.append(torch.cat([xy, xy + torch.rand(25, 2, generator=g) * 60], dim=1))
    boxes[1] = boxes[1][:0]
    hw = (math.ceil(128 / stride), math.ceil(224 / stride))
    mask = gaussian_target_mask(boxes, sizes, hw, stride=stride)
    assert torch.allclose(mask, loop_gaussian_mask(boxes, sizes, hw, stride), atol=1e-6)
    assert mask[1].sum() == 0


def test_pafpn_shapes_per_level():
    cfg = make_cfg("configs/demo/distill_mssd.yaml")
    model = build_model(cfg)
    backbone = model.student.backbone
    x = torch.randn(2, 3, 64, 96)
    out = backbone(x)
    for level, stride in zip(["p2", "p3", "p4", "p5", "p6"], [4, 8, 16, 32, 64]):
        assert out[level].shape == (2, 64, math.ceil(64 / stride), math.ceil(96 / stride)), level
        assert out[f"fpn_{level}"].shape == out[level].shape
    assert torch.equal(out["p2"], out["fpn_p2"])  # the path starts from P2
    assert not torch.equal(out["p3"], out["fpn_p3"])
    shapes = backbone.output_shape()
    assert shapes["p4"].stride == 16 and shapes["fpn_p4"].channels == 64


def test_mssd_terms_weights_and_detached_teacher():
    mssd = MSSDDistiller(  # the paper's form (NORMALIZE on: test_mssd_normalize_...)
        in_features=["p2", "p3"],
        channels=4,
        weights=[2.0, 0.0],
        mask_weights=[1.0, 3.0],
        normalize=False,
    )
    fpn = {k: torch.randn(1, 4, 4, 4, requires_grad=True) for k in ("p2", "p3")}
    pan = {k: torch.randn(1, 4, 4, 4, requires_grad=True) for k in ("p2", "p3")}
    features = {**pan, **{f"fpn_{k}": v for k, v in fpn.items()}}
    batch = DistillBatch(
        student=SideOutputs(features),
        teacher=None,
        gt_boxes=[torch.tensor([[0.0, 0.0, 8.0, 8.0]])],
        image_sizes=[(16, 16)],
        strides={"p2": 4.0, "p3": 4.0},
    )
    out = mssd(batch)
    # the loss itself is unweighted, student (PAN outputs) first
    plain = MSSDLoss(4, ["p2"])(pan, fpn, batch.gt_boxes, batch.image_sizes, batch.strides)
    assert plain["sd_p2"].item() == pytest.approx(
        ((pan["p2"] - fpn["p2"]) ** 2).mean().item(), rel=1e-6
    )
    assert out["loss_mssd_sd_p2"].item() == pytest.approx(
        2.0 * ((pan["p2"] - fpn["p2"]) ** 2).mean().item(), rel=1e-6
    )
    assert out["loss_mssd_sd_p3"].item() == 0.0
    sum(out.values()).backward()
    assert fpn["p2"].grad is None and pan["p2"].grad.abs().sum() > 0
    with pytest.raises(
        ValueError, match="MSSD.WEIGHTS must give one value per entry of IN_FEATURES"
    ):
        MSSDDistiller(in_features=["p2", "p3"], channels=4, weights=[1.0], mask_weights=[1.0, 1.0])


def test_mssd_ships_with_its_gaussian_mask_term_alone():
    """MSSD's defaults (docs/METHODS.md, `MSSD WEIGHTS`): both terms on standardized maps, the
    self-distillation weighted 0, so the PAN outputs learn from the Gaussian mask term alone; the
    yaml, the LazyConfig and a distiller built from its defaults agree."""
    cfg = make_cfg("configs/demo/student.yaml").MODEL.DISTILL.MSSD
    assert cfg.WEIGHTS == [0.0] * 4 and cfg.MASK_WEIGHTS == [1.0] * 4 and cfg.NORMALIZE
    assert make_cfg("configs/demo/distill_mssd.yaml").MODEL.DISTILL.MSSD.WEIGHTS == [0.0] * 4
    lazy = LazyConfig.load(f"{REPO}/configs/lazy/demo_distill_mssd.py")
    assert lazy.model.distillers[0].weights == [0.0] * 4
    mssd = MSSDDistiller(channels=4)
    levels = ["p2", "p3", "p4", "p5"]
    fpn = {k: torch.randn(1, 4, 8 // 2**i + 1, 8 // 2**i + 1) for i, k in enumerate(levels)}
    pan = {k: torch.randn_like(v, requires_grad=True) for k, v in fpn.items()}
    features = {**pan, **{f"fpn_{k}": v for k, v in fpn.items()}}
    strides = {k: 4.0 * 2**i for i, k in enumerate(levels)}
    batch = DistillBatch(
        student=SideOutputs(features),
        teacher=None,
        gt_boxes=[torch.tensor([[0.0, 0.0, 20.0, 12.0]])],
        image_sizes=[(36, 36)],
        strides=strides,
    )
    out = mssd(batch)
    assert all(out[f"loss_mssd_sd_{k}"].item() == 0.0 for k in levels)
    # the whole loss is the mask term: the sum of each level's MSE to its Gaussian target
    for k in levels:
        hw = pan[k].shape[-2:]
        target = gaussian_target_mask(batch.gt_boxes, batch.image_sizes, hw, strides[k])
        pred = torch.sigmoid(mssd.loss.mask_heads[k](channel_standardize(pan[k]))[:, 0])
        assert out[f"loss_mssd_mask_{k}"].item() == pytest.approx(
            ((pred - target) ** 2).mean().item(), rel=1e-5
        ), k
    total = sum(out.values())
    grads = torch.autograd.grad(total, list(pan.values()), retain_graph=True)
    mask_only = sum(out[f"loss_mssd_mask_{k}"] for k in levels)
    assert all(g.abs().sum() > 0 for g in grads)
    for g, h in zip(grads, torch.autograd.grad(mask_only, list(pan.values()))):
        assert torch.equal(g, h)


def test_mssd_needs_a_pafpn_student():
    cfg = make_cfg(
        "configs/demo/distill_mssd.yaml", "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"
    )
    with pytest.raises(ValueError, match="build_resnet_pafpn_backbone"):
        build_model(cfg)


def test_mssd_training_step_without_teacher_is_finite():
    cfg = make_cfg("configs/demo/distill_mssd.yaml")
    model = build_model(cfg).train()
    assert model.teacher is None
    with EventStorage():
        losses = model(train_batch(cfg))
    assert {"loss_mssd_sd_p5", "loss_mssd_mask_p2"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.distillers["mssd"].loss.mask_heads["p2"].weight.grad.abs().sum() > 0


def test_mssd_adapt_starts_at_the_paper_form_and_trains_the_adapter():
    """With ADAPT the PAN output reaches its FPN map through a 1x1 conv that starts as the
    identity: the first loss equals the plain form's; after one step on the adapter alone the
    loss is mean((W N + b - P)^2) by hand, and the FPN side (the teacher) gets no gradient."""
    g = torch.Generator().manual_seed(0)
    pan = {"p2": torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)}
    fpn = {"p2": torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)}
    args = ([torch.tensor([[0.0, 0.0, 8.0, 8.0]])] * 2, [(16, 16)] * 2, {"p2": 4.0})
    plain = MSSDLoss(3, ["p2"])(pan, fpn, *args)
    adapted_loss = MSSDLoss(3, ["p2"], adapt=True)
    adapted = adapted_loss(pan, fpn, *args)
    assert adapted["sd_p2"].item() == pytest.approx(plain["sd_p2"].item(), rel=1e-6)
    adapted["sd_p2"].backward()
    conv = adapted_loss.adapters["p2"]
    assert conv.weight.grad.abs().sum() > 0 and fpn["p2"].grad is None
    with torch.no_grad():
        conv.weight.mul_(0.5)
        conv.bias.fill_(1.0)
    by_hand = ((0.5 * pan["p2"] + 1.0 - fpn["p2"]) ** 2).mean()
    again = adapted_loss(pan, fpn, *args)["sd_p2"]
    assert again.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert not MSSDLoss(3, ["p2"]).adapters  # off by default: no extra parameters


def test_mssd_adapt_from_config_and_not_in_the_exported_student():
    sd = ("MODEL.DISTILL.MSSD.WEIGHTS", [0.1] * 4)  # the self-distillation it adapts, on
    cfg = make_cfg("configs/demo/distill_mssd.yaml", "MODEL.DISTILL.MSSD.ADAPT", True, *sd)
    model = build_model(cfg).train()
    mssd = model.distillers["mssd"]
    assert set(mssd.loss.adapters) == {"p2", "p3", "p4", "p5"}
    with EventStorage():
        losses = model(train_batch(cfg))
    sum(losses.values()).backward()
    assert mssd.loss.adapters["p3"].weight.grad.abs().sum() > 0
    assert not any("adapters" in k for k in model.student.state_dict())
    with pytest.raises(ValueError, match="MODEL.DISTILL.MSSD.ADAPT"):
        build_model(make_cfg("configs/demo/distill_mssd.yaml", "MODEL.DISTILL.MSSD.ADAPT", 2, *sd))
    # at MSSD's default WEIGHTS 0 there is no self-distillation to adapt: named, not trained idle
    with pytest.raises(
        ValueError, match="ADAPT True adapts the self-distillation term, which WEIGHTS 0"
    ):
        build_model(make_cfg("configs/demo/distill_mssd.yaml", "MODEL.DISTILL.MSSD.ADAPT", True))


def test_mssd_normalize_is_mssd_on_standardized_maps_and_scale_free():
    """With NORMALIZE both terms read the maps standardized per channel: they equal the plain
    form's on standardized inputs, do not change when the PAN output is scaled (so neither term
    can pull on its scale: the gradient along N itself is 0), and the predicted masks agree."""
    g = torch.Generator().manual_seed(1)
    pan = {"p2": (5 * torch.randn(2, 3, 4, 4, generator=g) + 2).requires_grad_(True)}
    fpn = {"p2": torch.randn(2, 3, 4, 4, generator=g)}
    args = ([torch.tensor([[0.0, 0.0, 8.0, 8.0]])] * 2, [(16, 16)] * 2, {"p2": 4.0})
    loss = MSSDLoss(3, ["p2"], normalize=True)
    plain = MSSDLoss(3, ["p2"])
    plain.mask_heads.load_state_dict(loss.mask_heads.state_dict())
    norm = {k: channel_standardize(v) for k, v in pan.items()}
    want = plain(norm, {k: channel_standardize(v) for k, v in fpn.items()}, *args)
    got = loss(pan, fpn, *args)
    for term in ("sd_p2", "mask_p2"):
        assert got[term].item() == pytest.approx(want[term].item(), rel=1e-5), term
    scaled = loss({"p2": 10 * pan["p2"]}, fpn, *args)
    for term in ("sd_p2", "mask_p2"):
        assert scaled[term].item() == pytest.approx(got[term].item(), rel=1e-4), term
    (got["sd_p2"] + got["mask_p2"]).backward()
    along_scale = (pan["p2"].grad * pan["p2"].detach()).sum().item()
    assert abs(along_scale) < 1e-4 * pan["p2"].grad.norm().item() * pan["p2"].norm().item()
    mask = loss.predicted_mask("p2", pan["p2"])
    assert torch.allclose(mask, torch.sigmoid(loss.mask_heads["p2"](norm["p2"]))[:, 0], atol=1e-6)
    # from the config (on by default; False is the paper's form), and a bad value named
    assert build_model(make_cfg("configs/demo/distill_mssd.yaml")).distillers["mssd"].loss.normalize
    cfg = make_cfg("configs/demo/distill_mssd.yaml", "MODEL.DISTILL.MSSD.NORMALIZE", False)
    assert not build_model(cfg).distillers["mssd"].loss.normalize
    with pytest.raises(ValueError, match="MODEL.DISTILL.MSSD.NORMALIZE"):
        build_model(make_cfg("configs/demo/distill_mssd.yaml", "MODEL.DISTILL.MSSD.NORMALIZE", 2))
