"""The teacher-feature measurement of the demo (``python -m detkd.demo.features``): FGD's feature
terms and their shares by hand, the whole measurement on a demo teacher's maps (random weights:
its scale matters here, not its skill), and an FGD student's maps read back through its align
layers."""

import math

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from detkd.data.register import register_shapes_datasets
from detkd.demo import features
from detkd.demo.experiments import CONFIG_DIR
from detkd.demo.training import demo_config, demo_data


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
