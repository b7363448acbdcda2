"""Legal but hard inputs give finite losses; wrong configurations fail before training, by name."""

import os
import re

import pytest
import torch
from conftest import REPO, make_cfg, train_batch
from detectron2.data import DatasetMapper
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage

from detkd.distillers import FGDDistiller
from detkd.engine import DistillTrainer
from detkd.modeling import DistillRCNN


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8)


def _inputs(h, w, boxes, seed=0, classes=None):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    n = len(inst.gt_boxes)
    inst.gt_classes = torch.as_tensor(
        classes if classes is not None else [i % 5 for i in range(n)], dtype=torch.long
    )
    return {"image": _image(h, w, seed).float(), "height": h, "width": w, "instances": inst}


def _many_boxes(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 4.0, h - 4.0])
    wh = 1 + torch.rand(n, 2, generator=g) * 20
    return torch.cat([xy, xy + wh], 1)


HARD_BATCHES = {
    "no_boxes": [_inputs(64, 96, []), _inputs(80, 64, [], seed=1)],
    "border_boxes": [_inputs(64, 96, [[-10, -5, 20, 30], [80, 50, 120, 90], [0, 0, 96, 64]])],
    "tiny_boxes": [_inputs(64, 96, [[10, 10, 10.5, 10.4], [40, 30, 41, 31], [5, 5, 60, 40]])],
    "degenerate_boxes": [_inputs(64, 96, [[10, 10, 10, 30], [20, 20, 40, 20], [5, 5, 60, 40]])],
    "many_boxes": [_inputs(96, 128, _many_boxes(600, 96, 128))],
    "mixed_sizes": [
        _inputs(64, 96, [[5, 5, 30, 40]]),
        _inputs(96, 48, [[2, 60, 40, 90]], seed=2),
        _inputs(70, 70, [], seed=3),
    ],
    "batch_of_one": [_inputs(64, 64, [[16, 16, 48, 48]])],
}


@pytest.mark.parametrize("case", sorted(HARD_BATCHES))
def test_hard_inputs_give_finite_losses_and_gradients(distill_cfg, case):
    cfg = distill_cfg("configs/demo/distill_all.yaml")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(HARD_BATCHES[case])
    bad = {k: v.item() for k, v in losses.items() if not torch.isfinite(v)}
    assert not bad, bad
    sum(losses.values()).backward()
    for name, p in list(model.named_parameters()):
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def test_degenerate_boxes_through_the_data_mapper(distill_cfg):
    """detectron2's mapper drops empty boxes; the rest trains."""
    cfg = distill_cfg("configs/demo/distill_chen.yaml")
    mapper = DatasetMapper(cfg, is_train=True)
    import tempfile

    import numpy as np
    from PIL import Image

    path = tempfile.mktemp(suffix=".png")
    Image.fromarray(np.zeros((64, 96, 3), dtype=np.uint8)).save(path)
    record = {
        "file_name": path,
        "height": 64,
        "width": 96,
        "image_id": 0,
        "annotations": [
            {"bbox": [10, 10, 0, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},
            {"bbox": [10, 10, 30, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
        ],
    }
    data = [mapper(record)]
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(data)
    assert all(torch.isfinite(v) for v in losses.values())


# ----- wrong configurations -------------------------------------------------------------------
def test_rpn_distillation_with_different_anchors(distill_cfg):
    cfg = distill_cfg(
        "configs/demo/distill_chen.yaml",
        "MODEL.DISTILL.TEACHER.OPTS",
        ["MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]"],
    )
    with pytest.raises(ValueError, match="identical anchors"):
        build_model(cfg)
    # the same teacher is fine when only the RCN is distilled
    cfg = distill_cfg(
        "configs/demo/distill_chen.yaml",
        "MODEL.DISTILL.TEACHER.OPTS",
        ["MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]"],
        "MODEL.DISTILL.SOFT_CE.TARGETS",
        ["rcn"],
        "MODEL.DISTILL.BOUNDED_REG.TARGETS",
        ["rcn"],
    )
    assert isinstance(build_model(cfg), DistillRCNN)


def test_unknown_method_name():
    with pytest.raises((KeyError, AssertionError), match="Non-existent key: MODEL.DISTILL.KD"):
        make_cfg("configs/demo/student.yaml", "MODEL.DISTILL.KD.ENABLED", True)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.DISTILL.FGD.ALPHA", -1.0, "FGD.ALPHA must be a non-negative number"),
        ("MODEL.DISTILL.FGD.LAMBDA", float("nan"), "FGD.LAMBDA must be a non-negative number"),
        ("MODEL.DISTILL.HINT.WEIGHT", -0.5, "HINT.WEIGHT must be a non-negative number"),
        (
            "MODEL.DISTILL.SOFT_CE.WEIGHT",
            float("nan"),
            "SOFT_CE.WEIGHT must be a non-negative number",
        ),
        ("MODEL.DISTILL.SOFT_CE.MU", 1.5, "SOFT_CE.MU must be in"),
        ("MODEL.DISTILL.SOFT_CE.TEMPERATURE", 0.0, "SOFT_CE.TEMPERATURE must be > 0"),
        ("MODEL.DISTILL.BOUNDED_REG.NU", -1.0, "BOUNDED_REG.NU must be a non-negative number"),
        (
            "MODEL.DISTILL.SOFT_CE.TARGETS",
            ["rpn", "roi"],
            "SOFT_CE.TARGETS must be a non-empty subset",
        ),
        ("MODEL.DISTILL.STUDENT_INPUT_SCALE", 0.0, "STUDENT_INPUT_SCALE must be in"),
    ],
)
def test_bad_values_are_rejected_by_name(distill_cfg, key, value, message):
    cfg = distill_cfg("configs/demo/distill_all.yaml", key, value)
    with pytest.raises(ValueError, match=message):
        build_model(cfg)


def test_mssd_bad_weights(distill_cfg):
    cfg = make_cfg(
        "configs/demo/distill_mssd.yaml", "MODEL.DISTILL.MSSD.WEIGHTS", [1.0, -1.0, 1.0, 1.0]
    )
    with pytest.raises(ValueError, match="MSSD.WEIGHTS must be a non-negative number"):
        build_model(cfg)


def test_method_needing_a_teacher_without_one():
    cfg = make_cfg("configs/demo/student.yaml", "MODEL.DISTILL.FGD.ENABLED", True)
    with pytest.raises(ValueError, match="FGD is enabled but no teacher is configured"):
        build_model(cfg)


def test_channel_mismatch_without_align_layer(distill_cfg):
    """A LazyConfig-style distiller whose declared channels do not match the models."""
    cfg = distill_cfg("configs/demo/distill_fgd.yaml")
    model = build_model(cfg)
    wrong = FGDDistiller(
        in_features=["p3"], student_channels=[64], teacher_channels=[64]
    )  # teacher has 128
    with pytest.raises(
        ValueError,
        match="teacher feature 'p3' has 128 channels but the align layer output expects 64",
    ):
        DistillRCNN(student=model.student, teacher=model.teacher, distillers=[wrong])


# ----- training faults --------------------------------------------------------------------------
def test_non_finite_loss_raises_with_every_term_and_does_not_step(distill_cfg):
    # the global term sums (R(S) - R(T))^2 over every cell, so with this weight it overflows
    # whatever the batch (the fg term can be ~0: an untrained teacher's attention may peak off the
    # boxes)
    cfg = distill_cfg("configs/demo/distill_fgd.yaml", "MODEL.DISTILL.FGD.LAMBDA", 1e38)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = train_batch(cfg)
    trainer = SimpleTrainer(model, iter([data] * 2), DistillTrainer.build_optimizer(cfg, model))
    with EventStorage(), pytest.raises(FloatingPointError, match="loss_fgd_global_p2") as info:
        trainer.iter = 0
        trainer.run_step()
    assert "loss_cls" in str(info.value)  # every term's value is reported
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.equal(v, before[k]), k


def test_every_test_reliability_md_names_exists():
    """docs/RELIABILITY.md's rows point at tests (``file.py::test``): each is a test function of
    that file (a moved or renamed test leaves no dangling row)."""
    text = open(os.path.join(REPO, "docs", "RELIABILITY.md")).read()
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)", text)
    assert len(named) > 50
    for file, name in named:
        path = os.path.join(REPO, "tests", file)
        assert os.path.isfile(path), file
        assert re.search(rf"^def {name}\b", open(path).read(), re.M), f"{file}::{name}"
