"""The teacher: strict loading, clear errors, frozen through training."""

import copy

import pytest
import torch
from conftest import REPO, TEACHER_YAML, make_cfg, train_batch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from detkd.checkpoint import (
    Checkpointer,
)
from detkd.modeling import TeacherWeightsError, teacher_from_config


def test_missing_weights_file_is_an_error(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(TeacherWeightsError, match="not found.*nope.pth"):
        teacher_from_config(TEACHER_YAML, missing, device="cpu")


def test_empty_weights_is_an_error():
    with pytest.raises(TeacherWeightsError, match="WEIGHTS is empty"):
        teacher_from_config(TEACHER_YAML, "", device="cpu")


def test_checkpoint_with_missing_keys_names_them(teacher_weights, tmp_path):
    ckpt = torch.load(teacher_weights)
    del ckpt["model"]["roi_heads.box_predictor.cls_score.weight"]
    path = tmp_path / "partial.pth"
    torch.save(ckpt, path)
    with pytest.raises(TeacherWeightsError, match=r"roi_heads\.box_predictor\.cls_score\.weight"):
        teacher_from_config(TEACHER_YAML, str(path), device="cpu")


def test_checkpoint_of_another_architecture_is_an_error(tmp_path):
    # a ResNet-18 / 64-channel student saved, loaded into the ResNet-34 / 128-channel teacher
    student = build_model(make_cfg("configs/demo/Base-Shapes.yaml"))
    DetectionCheckpointer(student, str(tmp_path)).save("other")
    with pytest.raises(TeacherWeightsError, match="another architecture") as info:
        teacher_from_config(TEACHER_YAML, str(tmp_path / "other.pth"), device="cpu")
    assert "backbone.fpn_lateral2.weight" in str(info.value)  # a key that exists with another shape


def test_class_count_mismatch_with_logit_method(distill_cfg):
    cfg = distill_cfg(
        "configs/demo/distill_chen.yaml",
        "MODEL.DISTILL.TEACHER.OPTS",
        ["MODEL.ROI_HEADS.NUM_CLASSES", 7],
    )
    with pytest.raises(TeacherWeightsError, match="cls_score"):
        build_model(cfg)  # checkpoint has 5 classes, teacher config 7: the checkpoint does not fit
    cfg = distill_cfg("configs/demo/distill_chen.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 7)
    with pytest.raises(ValueError, match="student has 7 classes and the teacher 5"):
        build_model(cfg)


def test_teacher_is_frozen_and_student_learns(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_all.yaml")
    model = build_model(cfg)
    teacher = model.teacher
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher_before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(model.student.state_dict())
    # never in the checkpoint or the optimizer
    assert not any(k.startswith("teacher") for k in model.state_dict())
    optimizer = build_optimizer(cfg, model)
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in teacher.parameters())

    model.train()
    assert not teacher.training and model.student.training
    data = train_batch(cfg)
    with EventStorage():
        for _ in range(2):
            losses = model(data)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            assert all(p.grad is None for p in teacher.parameters())
            optimizer.step()
    for k, v in teacher.state_dict().items():  # BN running stats included
        assert torch.equal(v, teacher_before[k]), k
    changed = [
        k for k, v in model.student.state_dict().items() if not torch.equal(v, student_before[k])
    ]
    assert any(".bottom_up." in k for k in changed) and any("roi_heads" in k for k in changed)
    # the distillers' own modules receive gradients too
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.distillers.parameters())


def test_lazyconfig_teacher_loads_the_same_checkpoint_strictly(teacher_weights):
    teacher = teacher_from_config(f"{REPO}/configs/lazy/demo_teacher.py", teacher_weights)
    yaml_state = torch.load(teacher_weights)["model"]
    state = teacher.state_dict()
    assert set(state) == set(yaml_state)
    assert all(torch.equal(state[k], yaml_state[k]) for k in state)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_distill_checkpoint_is_accepted_as_teacher(tmp_path, teacher_weights):
    """A DistillRCNN checkpoint whose student has the teacher's architecture teaches."""
    cfg = make_cfg("configs/demo/lowres_student.yaml")
    trained = build_model(cfg)
    Checkpointer(trained, str(tmp_path)).save("distilled")
    teacher = teacher_from_config(TEACHER_YAML, str(tmp_path / "distilled.pth"))
    for k, v in trained.student.state_dict().items():
        assert torch.equal(teacher.state_dict()[k], v), k


def test_unused_teacher_keys_are_an_error_unless_ignored(tmp_path, teacher_weights):
    # a ResNet-34 teacher checkpoint into a ResNet-18 teacher config: blocks res2.2, res3.2, ...
    # unused
    with pytest.raises(
        TeacherWeightsError, match=r"teacher does not use: backbone\.bottom_up\.res2\.2\."
    ):
        teacher_from_config(TEACHER_YAML, teacher_weights, ["MODEL.RESNETS.DEPTH", 18])
    state = torch.load(teacher_weights, weights_only=True)
    state["model"]["roi_heads.mask_head.conv.weight"] = torch.zeros(1)
    path = tmp_path / "with_mask.pth"
    torch.save(state, path)
    with pytest.raises(TeacherWeightsError, match="roi_heads.mask_head.conv.weight"):
        teacher_from_config(TEACHER_YAML, str(path))
    teacher_from_config(TEACHER_YAML, str(path), ignored_key_prefixes=["roi_heads.mask_head."])


@pytest.mark.parametrize(
    "config", ["configs/demo/distill_chen.yaml", "configs/demo/distill_fgd.yaml"]
)
def test_nan_teacher_is_an_error_naming_the_tensor(distill_cfg, config):
    cfg = distill_cfg(config)
    model = build_model(cfg).train()
    with torch.no_grad():
        model.teacher.backbone.fpn_output3.weight.fill_(float("nan"))  # p3 and everything under it
    with (
        EventStorage(),
        pytest.raises(FloatingPointError, match=r"teacher's outputs .*features\['p3'\]"),
    ):
        model(train_batch(cfg))
