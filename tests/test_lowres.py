"""Chen et al. 2017 Sec. 4.1: a half-resolution student taught by a full-resolution teacher."""

import pytest
import torch
from conftest import train_batch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from detkd.modeling.heads import capture_output


def test_rpn_distillation_is_refused_with_a_low_resolution_student(distill_cfg):
    cfg = distill_cfg(
        "configs/demo/distill_chen_lowres.yaml", "MODEL.DISTILL.SOFT_CE.TARGETS", ["rpn", "rcn"]
    )
    with pytest.raises(
        ValueError, match="RPN distillation needs the teacher's RPN on the student's anchors"
    ):
        build_model(cfg)


@pytest.mark.parametrize("resize", ["teacher_to_student", "student_to_teacher"])
def test_low_resolution_training_step(distill_cfg, resize):
    cfg = distill_cfg(
        "configs/demo/distill_chen_lowres.yaml",
        "MODEL.DISTILL.FEATURE_RESIZE",
        resize,
        "MODEL.DISTILL.FGD.ENABLED",
        True,
    )
    model = build_model(cfg).train()
    data = train_batch(cfg)
    with (
        capture_output(model.student.backbone) as s_out,
        capture_output(model.teacher.backbone) as t_out,
        EventStorage(),
    ):
        losses = model(data)
    s_p2, t_p2 = s_out["output"]["p2"], t_out["output"]["p2"]
    # the teacher's padded input is twice the student's, so every map is exactly twice as large
    assert (t_p2.shape[-2], t_p2.shape[-1]) == (2 * s_p2.shape[-2], 2 * s_p2.shape[-1])
    assert {"loss_hint_res4", "loss_soft_ce_rcn", "loss_bounded_reg_rcn", "loss_fgd_fg_p3"} <= set(
        losses
    )
    assert "loss_soft_ce_rpn" not in losses
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    hint = model.distillers["hint"].hints["res4"].adaptation
    assert hint.weight.grad.abs().sum() > 0


def test_teacher_box_head_sees_the_student_proposals_at_full_resolution(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_chen_lowres.yaml")
    model = build_model(cfg).train()
    seen = {}
    h1 = model.student.roi_heads.box_pooler.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("s", a[1])
    )
    h2 = model.teacher.roi_heads.box_pooler.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("t", a[1])
    )
    with EventStorage():
        model(train_batch(cfg))
    h1.remove(), h2.remove()
    assert len(seen["s"]) == len(seen["t"]) == 2
    for s_boxes, t_boxes in zip(seen["s"], seen["t"]):
        assert len(s_boxes) > 0 and torch.allclose(t_boxes.tensor, 2 * s_boxes.tensor)


def test_low_resolution_student_predicts_in_original_coordinates(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_chen_lowres.yaml")
    model = build_model(cfg).eval()
    data = train_batch(cfg)
    seen = {}
    hook = model.student.backbone.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("x", a[0])
    )
    with torch.no_grad():
        out = model(data)
    hook.remove()
    for x, o in zip(data, out):
        inst = o["instances"]
        assert inst.image_size == (x["height"], x["width"])
    # the student ran on half-resolution input
    full_h = max(x["image"].shape[1] for x in data)
    assert seen["x"].shape[-2] <= (full_h + 63) // 64 * 32
