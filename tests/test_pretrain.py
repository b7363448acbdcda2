"""The demo's pretrained ResNet trunks: crops of the data set's own generator, a trunk that loads
into a detector and a DistillRCNN student, cached like the teacher."""

import os

import numpy as np
import pytest
import torch
from conftest import REPO, make_cfg
from detectron2.modeling import build_model

from detkd.checkpoint import Checkpointer, WeightsMismatchError
from detkd.data.glyphs import GLYPH_CLASSES, GlyphsSpec
from detkd.demo import runner
from detkd.demo.pretrain import object_crops, pretrain_backbone
from detkd.demo.training import demo_data


def test_crops_are_objects_and_background_from_another_seed():
    spec = GlyphsSpec()
    images, labels = object_crops(spec, 64, size=32)
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
    background = len(GLYPH_CLASSES)
    assert set(labels) <= set(range(background + 1)) and (labels == background).sum() >= 5
    assert (labels < background).sum() >= 30
    again, _ = object_crops(spec, 64, size=32)
    assert np.array_equal(images, again)  # deterministic
    other, _ = object_crops(spec, 64, size=32, seed=7)
    assert not np.array_equal(images, other)


def test_the_trunk_loads_into_a_distill_student(tmp_path, distill_cfg):
    cfg = make_cfg("configs/demo/student.yaml")
    state, summary = pretrain_backbone(cfg, GlyphsSpec(), iters=2, batch=8)
    assert set(summary) >= {"accuracy", "chance", "seconds"} and 0 <= summary["accuracy"] <= 1
    assert all(k.startswith("backbone.bottom_up.") for k in state)
    path = str(tmp_path / "trunk.pth")
    torch.save({"model": state}, path)
    student = build_model(
        distill_cfg(
            "configs/demo/distill_fgd.yaml",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            10,
            "MODEL.DISTILL.TEACHER.OPTS",
            ["MODEL.ROI_HEADS.NUM_CLASSES", "5"],
        )
    )
    Checkpointer(student).load(path)
    loaded = student.student.backbone.bottom_up.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k[len("backbone.bottom_up.") :]], v), k


def test_trunks_are_pretrained_per_depth_and_cached(tmp_path, monkeypatch):
    calls = []

    def fake(cfg, spec, iters):
        calls.append((cfg.MODEL.RESNETS.DEPTH, iters))
        return {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}, {"accuracy": 0.5}

    monkeypatch.setattr("detkd.demo.pretrain.pretrain_backbone", fake)
    data = demo_data("glyphs")
    assert data.pretrained and not demo_data("shapes").pretrained
    assert runner._pretrained_trunks(str(tmp_path), demo_data("shapes"), 5).files == {}
    trunks = runner._pretrained_trunks(str(tmp_path), data, 5)
    assert sorted(calls) == [(18, 5), (34, 5)] and sorted(trunks.files) == [18, 34]
    student = os.path.join(REPO, "configs/demo/student.yaml")
    assert trunks.opts(student) == ["MODEL.WEIGHTS", trunks.files[18]]
    again = runner._pretrained_trunks(str(tmp_path), data, 5)
    assert len(calls) == 2 and again == trunks  # cached
    longer = runner._pretrained_trunks(str(tmp_path), data, 6)
    assert len(calls) == 4 and longer.key != trunks.key  # another schedule: trained again


def test_the_trunk_loads_into_a_pafpn_student(tmp_path):
    """A PAFPN holds its ResNet under its FPN (``backbone.fpn.bottom_up``): the trunk's copy for it
    loads every trunk tensor there (the trunk as saved, ``backbone.bottom_up.*``, covers 0 % of
    it and is refused), written once; an FPN student gets the trunk itself."""
    fpn_cfg = make_cfg("configs/demo/student.yaml")
    state, _ = pretrain_backbone(fpn_cfg, GlyphsSpec(), iters=1, batch=4)
    path = str(tmp_path / "model_final.pth")
    torch.save({"model": state}, path)
    assert runner.trunk_for_backbone(path, fpn_cfg) == path
    pafpn_cfg = make_cfg("configs/demo/student_pafpn.yaml", "MODEL.WEIGHTS", path)
    with pytest.raises(WeightsMismatchError):
        Checkpointer(build_model(pafpn_cfg)).load(path)
    copy = runner.trunk_for_backbone(path, pafpn_cfg)
    assert copy == str(tmp_path / "model_final.fpn.bottom_up.pth")
    student = build_model(pafpn_cfg)
    Checkpointer(student).load(copy)
    loaded = student.student.backbone.fpn.bottom_up.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k[len("backbone.bottom_up.") :]], v), k
    written = os.path.getmtime(copy)
    assert runner.trunk_for_backbone(path, pafpn_cfg) == copy and os.path.getmtime(copy) == written
    torch.save({"model": {"head.w": torch.zeros(1)}}, path)
    os.utime(path, (written + 10, written + 10))
    with pytest.raises(ValueError, match="not a pretrained trunk"):
        runner.trunk_for_backbone(path, pafpn_cfg)
