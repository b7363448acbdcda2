"""DistillRCNN: behaves as the student in eval, as a student + distillers in training."""

import pytest
import torch
from conftest import REPO, make_cfg, train_batch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import SimpleTrainer
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.utils.events import EventStorage

from detkd.modeling import DistillRCNN

DETECTOR_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}


def test_eval_equals_plain_generalized_rcnn(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_fgd.yaml")
    model = build_model(cfg).eval()
    plain_cfg = make_cfg("configs/demo/Base-Shapes.yaml")
    plain = build_model(plain_cfg).eval()
    assert type(plain) is GeneralizedRCNN
    incompatible = plain.load_state_dict(model.student.state_dict())
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    data = train_batch(cfg)
    with torch.no_grad():
        ours, theirs = model(data), plain(data)
    for a, b in zip(ours, theirs):
        assert len(a["instances"]) == len(b["instances"]) > 0
        assert torch.equal(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor)
        assert torch.equal(a["instances"].scores, b["instances"].scores)


def test_no_method_trains_as_the_student():
    cfg = make_cfg("configs/demo/student.yaml")
    model = build_model(cfg).train()
    assert model.teacher is None and len(model.distillers) == 0
    with EventStorage():
        losses = model(train_batch(cfg))
    assert set(losses) == DETECTOR_LOSSES


def test_every_term_is_logged_in_event_storage(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_all.yaml", "SOLVER.BASE_LR", 0.001)
    from detkd.engine import DistillTrainer

    model = build_model(cfg)
    data = [train_batch(cfg)]
    trainer = SimpleTrainer(model, iter(data * 2), DistillTrainer.build_optimizer(cfg, model))
    with EventStorage() as storage:
        trainer.iter = 0
        trainer.run_step()
        logged = storage.latest()
    with EventStorage():
        terms = model(data[0])
    expected = {
        "loss_hint_res4",
        "loss_hint_p3",
        "loss_soft_ce_rpn",
        "loss_soft_ce_rcn",
        "loss_bounded_reg_rpn",
        "loss_bounded_reg_rcn",
        "loss_fgd_fg_p2",
        "loss_fgd_bg_p6",
        "loss_fgd_attention_p4",
        "loss_fgd_global_p5",
        "loss_mssd_sd_p3",
        "loss_mssd_mask_p2",
    }
    assert expected <= set(terms)
    assert set(terms) <= set(logged), set(terms) - set(logged)
    assert "grad_global_norm" in logged and "distill/rcn_bound_active" in logged
    assert all(torch.isfinite(v) for v in terms.values())


def test_soft_ce_scales_the_hard_loss(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_chen.yaml", "MODEL.DISTILL.SOFT_CE.MU", 0.25)
    model = build_model(cfg).train()
    plain_cfg = distill_cfg(
        "configs/demo/distill_chen.yaml", "MODEL.DISTILL.SOFT_CE.ENABLED", False
    )
    data = train_batch(cfg)
    torch.manual_seed(3)
    with EventStorage():
        with_ce = model(data)
    model_plain = build_model(plain_cfg).train()
    model_plain.student.load_state_dict(model.student.state_dict())
    torch.manual_seed(3)
    with EventStorage():
        without = model_plain(data)
    for key in ("loss_rpn_cls", "loss_cls"):
        assert torch.allclose(with_ce[key], 0.75 * without[key], rtol=1e-5), key


def test_inherit_copies_matching_teacher_weights(distill_cfg):
    cfg = distill_cfg(
        "configs/demo/distill_fgd.yaml",
        "MODEL.DISTILL.INHERIT.ENABLED",
        True,
        "MODEL.DISTILL.INHERIT.PREFIXES",
        ["roi_heads.box_predictor."],
    )
    model = build_model(cfg)
    # the teacher's FC is 512 wide, the student's 256: only the same-shaped bias of the class
    # predictor can be inherited; everything inherited equals the teacher's
    assert model.inherited == [
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.bbox_pred.bias",
    ]
    t = model.teacher.state_dict()
    for k in model.inherited:
        assert torch.equal(model.student.state_dict()[k], t[k])
    cfg = distill_cfg(
        "configs/demo/distill_fgd.yaml",
        "MODEL.DISTILL.INHERIT.ENABLED",
        True,
        "MODEL.DISTILL.INHERIT.PREFIXES",
        ["no_such_module."],
    )
    with pytest.raises(ValueError, match="no student parameter"):
        build_model(cfg)


@pytest.mark.parametrize(
    "name,terms",
    [
        ("demo_distill_fgd", {"loss_fgd_fg_p2", "loss_fgd_global_p6"}),
        (
            "demo_distill_chen",
            {"loss_hint_res4", "loss_hint_p3", "loss_soft_ce_rpn", "loss_bounded_reg_rcn"},
        ),
        ("demo_distill_mssd", {"loss_mssd_sd_p3", "loss_mssd_mask_p5"}),
        ("demo_distill_pkd", {"loss_pkd_p2", "loss_pkd_p5"}),
        ("demo_distill_cwd", {"loss_cwd_p2", "loss_cwd_p6"}),
        ("demo_distill_mgd", {"loss_mgd_p2", "loss_mgd_p6"}),
        ("demo_distill_cross_head", {"loss_cross_head_cls"}),
    ],
)
def test_lazyconfigs_build_and_train(teacher_weights, name, terms):
    cfg = LazyConfig.load(f"{REPO}/configs/lazy/{name}.py")
    if cfg.model.get("teacher") is not None:
        cfg.model.teacher.weights = teacher_weights
    model = instantiate(cfg.model).train()
    assert isinstance(model, DistillRCNN)
    assert model.teacher is None or not model.teacher.training
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.mapper.augmentations[0].short_edge_length = (64,)
    cfg.dataloader.train.mapper.augmentations[0].max_size = 96
    data = next(iter(instantiate(cfg.dataloader.train)))
    with EventStorage():
        losses = model(data)
    assert terms <= set(losses) and DETECTOR_LOSSES <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
