"""Global-norm clipping, evaluator choice, and the embedded dataset."""

import json

import pytest
import torch
from conftest import make_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from detkd.data import ShapesSpec, ensure_shapes_dataset, register_coco_json, register_voc_folder
from detkd.engine import DistillTrainer, add_global_norm_clipping, build_evaluator
from detkd.engine.export import student_config


def test_global_norm_clipping_scales_the_whole_gradient():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = add_global_norm_clipping(
        torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0), max_norm=1.0
    )
    a.grad = torch.tensor([3.0, 0.0])
    b.grad = torch.tensor([4.0])  # global norm 5: every gradient is scaled by 1/5, across groups
    opt.step()
    assert torch.allclose(a, torch.tensor([-0.6, 0.0])) and torch.allclose(b, torch.tensor([-0.8]))
    assert type(opt).__name__ == "SGDWithGlobalNormClip"
    with pytest.raises(ValueError, match="GLOBAL_GRAD_CLIP_NORM"):
        add_global_norm_clipping(torch.optim.SGD([a], lr=1.0), 0.0)


def test_global_norm_clipping_keeps_every_group_s_settings():
    """The clipping optimizer is a new one over the same groups, each with its own settings; an
    optimizer that has stepped (its state would be lost) is refused."""
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(1))
    given = torch.optim.SGD(
        [{"params": [a], "weight_decay": 0.1}, {"params": [b], "lr": 0.5}], lr=1.0, momentum=0.9
    )
    opt = add_global_norm_clipping(given, 10.0)
    assert [g["params"] for g in opt.param_groups] == [[a], [b]]
    assert [(g["lr"], g["weight_decay"], g["momentum"]) for g in opt.param_groups] == [
        (1.0, 0.1, 0.9),
        (0.5, 0.0, 0.9),
    ]
    a.grad, b.grad = torch.ones(2), torch.ones(1)
    given.step()
    with pytest.raises(ValueError, match="this one has stepped"):
        add_global_norm_clipping(given, 10.0)


def test_evaluator_follows_the_dataset():
    assert isinstance(build_evaluator("detkd_shapes_val", None), COCOEvaluator)
    assert isinstance(build_evaluator("detkd_shapes_voc_val", None), PascalVOCDetectionEvaluator)
    MetadataCatalog.get("detkd_no_type").set(thing_classes=["a"])
    # as stock detectron2: NotImplementedError, which DefaultTrainer.test turns into a warning
    with pytest.raises(NotImplementedError, match="No evaluator for dataset 'detkd_no_type'"):
        build_evaluator("detkd_no_type", None)


def test_shapes_dataset_is_reproducible_and_in_both_formats(tmp_path):
    spec = ShapesSpec({"train": 6, "val": 3}, image_size=(48, 64), seed=5)
    ensure_shapes_dataset(str(tmp_path / "a"), spec)
    ensure_shapes_dataset(str(tmp_path / "b"), spec)
    a = json.loads((tmp_path / "a/annotations/instances_train.json").read_text())
    b = json.loads((tmp_path / "b/annotations/instances_train.json").read_text())
    assert a == b and len(a["images"]) == 6 and len(a["categories"]) == 5
    other = ensure_shapes_dataset(
        str(tmp_path / "c"), ShapesSpec({"train": 6, "val": 3}, image_size=(48, 64), seed=6)
    )
    assert json.loads((tmp_path / "c/annotations/instances_train.json").read_text()) != a
    assert other.endswith("c")
    sizes = {(im["height"], im["width"]) for im in a["images"]}
    assert sizes <= {(48, 64), (64, 48)}  # non-square, both orientations
    register_coco_json(
        "detkd_test_coco",
        str(tmp_path / "a/annotations/instances_train.json"),
        str(tmp_path / "a/images/train"),
    )
    register_voc_folder(
        "detkd_test_voc",
        str(tmp_path / "a/voc"),
        "train",
        ["square", "circle", "triangle", "cross", "diamond"],
    )
    coco, voc = DatasetCatalog.get("detkd_test_coco"), DatasetCatalog.get("detkd_test_voc")
    assert len(coco) == len(voc) == 6
    # the same boxes in both formats (VOC's 1-based corners are converted back by detectron2's
    # loader)
    box_c = sorted(tuple(round(v) for v in ann["bbox"]) for ann in coco[0]["annotations"])
    box_v = sorted(
        tuple(
            round(v)
            for v in (
                ann["bbox"][0],
                ann["bbox"][1],
                ann["bbox"][2] - ann["bbox"][0],
                ann["bbox"][3] - ann["bbox"][1],
            )
        )
        for ann in voc[0]["annotations"]
    )
    assert box_c == box_v


# ----- non-finite numbers stop the run ------------------------------------------------------------
def test_infinite_gradient_norm_raises_with_iteration_and_names(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_fgd.yaml", "SOLVER.GLOBAL_GRAD_CLIP_NORM", 35.0)
    model = build_model(cfg)
    optimizer = DistillTrainer.build_optimizer(cfg, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    model.student.roi_heads.box_predictor.cls_score.weight.grad[0, 0] = float("inf")
    with (
        EventStorage(start_iter=7),
        pytest.raises(
            FloatingPointError,
            match=r"iteration 7: the global gradient norm is inf.*1 parameters.*"
            r"student\.roi_heads\.box_predictor\.cls_score\.weight",
        ),
    ):
        optimizer.step()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_nan_gradient_norm_raises_outside_training_loop():
    a = torch.nn.Parameter(torch.ones(2))
    opt = add_global_norm_clipping(torch.optim.SGD([a], lr=1.0), 1.0, {id(a): "a"})
    a.grad = torch.tensor([float("nan"), 0.0])
    with pytest.raises(
        FloatingPointError, match=r"iteration \?: the global gradient norm is nan.*first: a"
    ):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(2))


def test_non_finite_clip_norm_is_refused(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_fgd.yaml", "SOLVER.GLOBAL_GRAD_CLIP_NORM", float("nan"))
    with pytest.raises(ValueError, match="GLOBAL_GRAD_CLIP_NORM must be >= 0 and finite"):
        DistillTrainer.build_optimizer(cfg, build_model(cfg))


# ----- evaluation of a dataset without evaluator_type ---------------------------------------------
def test_dataset_without_evaluator_type_is_skipped_with_a_warning(caplog):
    name = "detkd_no_evaluator_val"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get("detkd_shapes_val")[:2])
        MetadataCatalog.get(name).set(
            thing_classes=MetadataCatalog.get("detkd_shapes_val").thing_classes
        )
    cfg = make_cfg("configs/demo/student.yaml", "DATASETS.TEST", (name,))
    model = build_model(cfg)
    with caplog.at_level("WARNING"):
        res = DistillTrainer.test(cfg, model)
    assert res == {name: {}} or res == {}
    assert any(name in r.getMessage() and "not evaluated" in r.getMessage() for r in caplog.records)


# ----- export, DDP-saved files, unreadable last_checkpoint ----------------------------------------
def test_exported_low_resolution_student_keeps_its_input_size():
    cfg = make_cfg("configs/demo/lowres_student.yaml")
    assert cfg.MODEL.DISTILL.STUDENT_INPUT_SCALE == 0.5
    out = student_config(cfg)
    assert out.INPUT.MIN_SIZE_TEST == round(cfg.INPUT.MIN_SIZE_TEST / 2)
    assert out.INPUT.MAX_SIZE_TEST == round(cfg.INPUT.MAX_SIZE_TEST / 2)
    assert out.INPUT.MIN_SIZE_TRAIN == tuple(round(x / 2) for x in cfg.INPUT.MIN_SIZE_TRAIN)
