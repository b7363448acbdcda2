"""The teacher-feature measurement of the demo (``python -m detkd.demo.features``): FGD's feature
terms and their shares by hand, the whole measurement on a demo teacher's maps (random weights:
its scale matters here, not its skill), and an FGD student's maps read back through its align
layers."""

import math

import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model

from detkd.data.register import register_shapes_datasets
from detkd.demo import features
from detkd.demo.experiments import CONFIG_DIR
from detkd.demo.training import demo_config, demo_data
from detkd.modeling.heads import run_backbone


def test_fgd_feature_terms_and_shares_by_hand():
    # |T| = 1 everywhere: both attentions are 1, so the terms weigh T^2 = 1 by the masks alone.
    # One image, 2 channels, cells (object, background): per channel alpha on the object's cell
    # (scale 1: a one-cell box) and beta on the background's (1 / one background cell)
    t = torch.tensor([[[[1.0, -1.0]], [[-1.0, 1.0]]]])
    fg, bg = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    a, b = 5e-5, 2.5e-5  # the paper's alpha = 2 beta
    w = dict(alpha=a, beta=b, temperature=0.5)
    terms = features.fgd_feature_terms(t, fg, bg, **w)
    assert terms["total"].item() == pytest.approx(2 * (a + b))
    assert terms["bg"].item() == pytest.approx(2 * b)
    assert terms["channels"].tolist() == pytest.approx([a + b, a + b])
    assert terms["cells"].tolist() == pytest.approx([2 * a, 2 * b])
    shares = features.term_shares([terms])
    assert shares["bg"] == pytest.approx(b / (a + b))  # 1/3 at the paper's alpha = 2 beta
    assert shares["channel"] == pytest.approx(0.5)
    assert shares["top_cells"] == pytest.approx(a / (a + b))  # one cell of two: the object's
    # the plain squared error: every image cell alike, T^2 = 1 on each of 2 channels x 2 cells
    plain = features.term_shares([features.squared_error_terms(t, fg, bg)])
    assert plain == pytest.approx({"bg": 0.5, "channel": 0.5, "top_cells": 0.5})
    # against a student map: (T - S)^2, the attention still the teacher's
    half = features.fgd_feature_terms(t, fg, bg, t / 2, **w)
    assert half["total"].item() == pytest.approx(2 * (a + b) / 4)
    assert half["cells"].tolist() == pytest.approx([2 * a / 4, 2 * b / 4])
    # a channel 10x louder takes (nearly) everything: its attention and its square both grow
    loud = t.clone()
    loud[:, 0] *= 10
    assert features.term_shares([features.fgd_feature_terms(loud, fg, bg, **w)])["channel"] > 0.99


def test_teacher_feature_stats_on_a_demo_teacher():
    data = demo_data("shapes")
    register_shapes_datasets(kind=data.kind)
    cfg = demo_config(f"{CONFIG_DIR}/teacher.yaml", data.opts(teacher=False))
    torch.manual_seed(0)
    model = build_model(cfg)
    stats = features.teacher_feature_stats(model, DatasetCatalog.get(data.val)[:4], cfg, 2)
    assert list(stats) == list(features.LEVELS)
    for lvl, s in stats.items():
        assert all(math.isfinite(v) for v in s.values()), lvl
        for key in ("bg", "channel", "top_cells"):
            for kind in ("raw", "norm", "mse", "mse_norm"):
                assert 0 < s[f"{kind}_{key}"] <= 1 + 1e-6, (lvl, kind, key)
        # standardized, no channel holds more than a few of the teacher's channels' share
        assert s["norm_channel"] < 0.1 and s["mse_norm_channel"] < 0.1, lvl
        assert s["fg_q99"] >= s["fg_mean"] > 0 and s["bg_q99"] >= s["bg_mean"] > 0
    text = features.format_feature_stats(stats, "t")
    assert text.count("\n| p") == len(features.LEVELS)
    assert all(line.count("|") == 8 for line in text.splitlines() if line.startswith("| p"))


def test_student_maps_through_the_saved_align_layers(tmp_path):
    """An FGD run's checkpoint (student weights under ``student.``, one align layer per level under
    ``distillers.fgd.levels``) read back: the student's FPN maps through that layer; a run without
    FGD, or without its student's weights, is refused by name."""
    data = demo_data("shapes")
    register_shapes_datasets(kind=data.kind)
    cfg = demo_config(f"{CONFIG_DIR}/student.yaml", data.opts(teacher=False))
    torch.manual_seed(1)
    student = build_model(cfg).student.eval()
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    conv = torch.nn.Conv2d(student.backbone.output_shape()["p3"].channels, 5, 1)
    state["distillers.fgd.levels.p3.align.weight"] = conv.weight.detach()
    state["distillers.fgd.levels.p3.align.bias"] = conv.bias.detach()
    torch.save({"model": state}, tmp_path / "model_final.pth")
    maps = features.fgd_student_maps(str(tmp_path), data)
    batch = [{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)}]
    with torch.no_grad():
        expected = conv(student.backbone(student.preprocess_image(batch).tensor)["p3"])
        got = maps(batch)
    assert list(got) == ["p3"] and torch.allclose(got["p3"], expected, atol=1e-5)
    del state["student.backbone.fpn_lateral2.weight"]
    torch.save({"model": state}, tmp_path / "model_final.pth")
    with pytest.raises(SystemExit, match="lacks student weights"):
        features.fgd_student_maps(str(tmp_path), data)
    torch.save({"model": {"student.x": torch.zeros(1)}}, tmp_path / "model_final.pth")
    with pytest.raises(SystemExit, match="no FGD align layers"):
        features.fgd_student_maps(str(tmp_path), data)


def test_linear_r2_by_hand():
    """A target that is an exact linear map of the input (plus a bias) is predicted fully; one
    channel of pure noise the input cannot reach is not: its variance share is what the total
    misses, and it counts as one channel of two in the per-channel mean."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g)
    exact = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 3.0
    noise = 2.0 * torch.randn(400, 1, generator=g)
    r2 = features.linear_r2(x[:200], exact[:200], x[200:], exact[200:])
    assert r2 == pytest.approx({"total": 1.0, "channel": 1.0}, abs=1e-6)
    y = torch.cat([exact, noise], dim=1)
    r2 = features.linear_r2(x[:200], y[:200], x[200:], y[200:])
    var_exact, var_noise = 1 + 4 + 0.25, 4.0  # the channels' variances
    assert r2["total"] == pytest.approx(var_exact / (var_exact + var_noise), abs=0.08)
    assert r2["channel"] == pytest.approx(0.5, abs=0.03)
    # a constant input predicts nothing beyond the fitted mean: R² near 0, not above
    flat = features.linear_r2(torch.ones(200, 1), exact[:200], torch.ones(200, 1), exact[200:])
    assert -0.1 < flat["total"] <= 0.0 + 1e-9


def test_teacher_from_student_r2_on_demo_models(tmp_path):
    """On a demo teacher and a saved demo student (random weights), every level and region gets a
    finite R² of at most 1; the teacher's maps from themselves (a student that is the teacher) are
    predicted fully."""
    data = demo_data("shapes")
    register_shapes_datasets(kind=data.kind)
    cfg = demo_config(f"{CONFIG_DIR}/teacher.yaml", data.opts(teacher=False))
    torch.manual_seed(0)
    teacher = build_model(cfg)
    dicts = DatasetCatalog.get(data.train)[:24]  # the suite registers 8 val images
    student_cfg = demo_config(f"{CONFIG_DIR}/student.yaml", data.opts(teacher=False))
    torch.manual_seed(1)
    student = build_model(student_cfg).student
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    torch.save({"model": state}, tmp_path / "model_final.pth")
    r2 = features.teacher_from_student_r2(
        teacher, features.student_maps(str(tmp_path), data), dicts, cfg, 3
    )
    assert list(r2) == list(features.LEVELS)
    fitted = [
        (lvl, region)
        for lvl, v in r2.items()
        for region in ("fg", "bg")
        if v[f"{region}_cells"] >= features.MIN_CELLS_PER_INPUT * (64 + 1)
    ]
    assert ("p2", "fg") in fitted and ("p2", "bg") in fitted, r2  # enough cells on the finest level
    for lvl, v in r2.items():
        assert set(v) == {f"{r}_{k}" for r in ("fg", "bg") for k in ("total", "channel", "cells")}
        for region in ("fg", "bg"):
            values = (v[f"{region}_total"], v[f"{region}_channel"])
            if (lvl, region) in fitted:
                assert all(math.isfinite(x) and x <= 1 + 1e-9 for x in values), (lvl, region)
            else:  # too few cells to fit 65 weights per channel: left out, not overfitted
                assert all(math.isnan(x) for x in values), (lvl, region)

    def itself(batch):
        return run_backbone(teacher.backbone, teacher.preprocess_image(batch).tensor)

    own = features.teacher_from_student_r2(teacher, itself, dicts, cfg, 3)
    own_fitted = [
        x
        for v in own.values()
        for k, x in v.items()
        if not k.endswith("_cells") and not math.isnan(x)
    ]
    assert not math.isnan(own["p2"]["bg_total"]) and len(own_fitted) >= 2
    assert all(x == pytest.approx(1.0, abs=1e-3) for x in own_fitted)
    text = features.format_r2(r2, "t")
    assert text.count("\n| p") == len(features.LEVELS) and "too few cells" in text


def test_pan_scale_of_a_saved_pafpn_student(tmp_path):
    """A PAFPN student's checkpoint (student weights under ``student.``) is read back as a PAFPN
    detector; per level of its bottom-up path the mean squares of ``N_l`` and ``P_l`` and their
    distance equal the same sums taken by hand over the images' maps, and an FPN student is refused
    by ``--pafpn``."""
    data = demo_data("shapes")
    register_shapes_datasets(kind=data.kind)
    opts = data.opts(teacher=False) + ["MODEL.BACKBONE.NAME", "build_resnet_pafpn_backbone"]
    cfg = demo_config(f"{CONFIG_DIR}/student.yaml", opts)
    torch.manual_seed(2)
    student = build_model(cfg).student.eval()
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    torch.save({"model": state}, tmp_path / "model_final.pth")
    detector, _ = features.student_detector(str(tmp_path), data)
    dicts = DatasetCatalog.get(data.val)[:3]
    scale = features.pan_scale(detector, dicts, cfg)
    assert list(scale) == ["p3", "p4", "p5"]  # N_2 = P_2: left out
    mapper = DatasetMapper(cfg, is_train=False)
    with torch.no_grad():
        maps = [student.backbone(student.preprocess_image([mapper(d)]).tensor) for d in dicts]

    def standardized(x):  # each channel over the image's own H*W, by hand
        x = x.double()
        mean = x.mean(dim=(2, 3), keepdim=True)
        return (x - mean) / x.var(dim=(2, 3), unbiased=False, keepdim=True).sqrt()

    for lvl, v in scale.items():
        n = torch.cat([m[lvl].flatten() for m in maps]).double()
        p = torch.cat([m[f"fpn_{lvl}"].flatten() for m in maps]).double()
        assert v["pan"] == pytest.approx(n.pow(2).mean().item(), rel=1e-5)
        assert v["fpn"] == pytest.approx(p.pow(2).mean().item(), rel=1e-5)
        assert v["distance"] == pytest.approx(
            ((n - p).pow(2).sum() / p.pow(2).sum()).item(), rel=1e-5
        )
        assert v["distance"] > 0
        norm_d2 = (
            sum((standardized(m[lvl]) - standardized(m[f"fpn_{lvl}"])).pow(2).sum() for m in maps)
            / n.numel()
        )
        assert v["norm_distance"] == pytest.approx(norm_d2.item(), rel=1e-5)
        assert 0 < v["norm_distance"] < 4
    text = features.format_pan_scale(scale, "t")
    assert text.count("\n| p") == 3
    assert "| distance | standardized distance |" in text
    fpn = build_model(demo_config(f"{CONFIG_DIR}/student.yaml", data.opts(teacher=False))).student
    torch.save(
        {"model": {f"student.{k}": v for k, v in fpn.state_dict().items()}},
        tmp_path / "model_final.pth",
    )
    with pytest.raises(SystemExit, match="FPN student, not a PAFPN one"):
        features.main(["--dataset", "shapes", "--pafpn", str(tmp_path), "--images", "1"])
