"""End to end through train_net.py: yaml on COCO- and VOC-form data, LazyConfig, eval, export."""

import math
import os
import sys

import pytest
import torch
from conftest import REPO, TEACHER_YAML, TINY
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

sys.path.insert(0, REPO)
import train_net  # noqa: E402

pytestmark = pytest.mark.slow


def run(config, tmp_path, *opts, flags=()):
    argv = [
        "--config-file",
        os.path.join(REPO, config),
        *flags,
        *[str(o) for o in TINY],
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.STEPS",
        "()",
        "SOLVER.WARMUP_ITERS",
        "1",
        "OUTPUT_DIR",
        str(tmp_path),
        *[str(o) for o in opts],
    ]
    return train_net.invoke(argv)


def _finite_numbers(d):
    return all(isinstance(v, float) and not math.isnan(v) for v in d.values())


def test_train_then_evaluate_coco_form(tmp_path, teacher_weights):
    res = run(
        "configs/demo/distill_fgd.yaml",
        tmp_path,
        "MODEL.DISTILL.TEACHER.CONFIG_FILE",
        TEACHER_YAML,
        "MODEL.DISTILL.TEACHER.WEIGHTS",
        teacher_weights,
        # after 3 iterations every score may sit under the default 0.05: keep every detection, so
        # the evaluator has predictions to score
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        0.0,
    )
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(res["bbox"])
    assert _finite_numbers({k: res["bbox"][k] for k in ("AP", "AP50", "AP75")})
    assert os.path.isfile(tmp_path / "model_final.pth")
    metrics = (tmp_path / "metrics.json").read_text()
    assert "loss_fgd_fg_p2" in metrics and "loss_fgd_global_p6" in metrics
    # the teacher was checked before the first step, once
    assert (tmp_path / "log.txt").read_text().count("TEACHER SANITY CHECK FAILED") == 1
    assert "teacher/sanity_recall" in metrics


def test_train_then_evaluate_voc_form(tmp_path, teacher_weights):
    res = run(
        "configs/demo/distill_chen.yaml",
        tmp_path,
        "MODEL.DISTILL.TEACHER.CONFIG_FILE",
        TEACHER_YAML,
        "MODEL.DISTILL.TEACHER.WEIGHTS",
        teacher_weights,
        "DATASETS.TRAIN",
        "('detkd_shapes_voc_train',)",
        "DATASETS.TEST",
        "('detkd_shapes_voc_val',)",
    )
    assert {"AP", "AP50", "AP75"} <= set(res["bbox"]) and _finite_numbers(res["bbox"])


def test_eval_teacher_and_eval_only(tmp_path, teacher_weights):
    common = (
        "MODEL.DISTILL.TEACHER.CONFIG_FILE",
        TEACHER_YAML,
        "MODEL.DISTILL.TEACHER.WEIGHTS",
        teacher_weights,
    )
    res = run("configs/demo/distill_fgd.yaml", tmp_path, *common, flags=["--eval-teacher"])
    assert "AP" in res["bbox"]
    run("configs/demo/distill_fgd.yaml", tmp_path / "train", *common)
    res = run(
        "configs/demo/distill_fgd.yaml",
        tmp_path / "eval",
        *common,
        "MODEL.WEIGHTS",
        tmp_path / "train" / "model_final.pth",
        flags=["--eval-only"],
    )
    assert "AP" in res["bbox"]


def test_lazyconfig_training_run(tmp_path, teacher_weights):
    argv = [
        "--config-file",
        os.path.join(REPO, "configs/lazy/demo_distill_fgd.py"),
        f"model.teacher.weights={teacher_weights}",
        "train.max_iter=3",
        f"train.output_dir={tmp_path}",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "lr_multiplier.scheduler.num_updates=3",
        "lr_multiplier.scheduler.milestones=[1,2]",
    ]
    train_net.invoke(argv)
    assert os.path.isfile(tmp_path / "model_final.pth")
    metrics = (tmp_path / "metrics.json").read_text()
    assert "loss_fgd_attention_p3" in metrics and "teacher/sanity_recall" in metrics
    assert (tmp_path / "log.txt").read_text().count("TEACHER SANITY CHECK FAILED") == 1


def test_export_round_trip_loads_in_stock_detectron2(tmp_path, teacher_weights):
    run(
        "configs/demo/distill_all.yaml",
        tmp_path,
        "MODEL.DISTILL.TEACHER.CONFIG_FILE",
        TEACHER_YAML,
        "MODEL.DISTILL.TEACHER.WEIGHTS",
        teacher_weights,
        "MODEL.BACKBONE.NAME",
        "build_resnet_fpn_backbone",
        "MODEL.DISTILL.MSSD.ENABLED",
        False,
    )
    from detkd.engine.export import main as export_main

    export_main(
        [
            "--config-file",
            os.path.join(REPO, "configs/demo/distill_all.yaml"),
            "--output",
            str(tmp_path / "export"),
            "MODEL.WEIGHTS",
            str(tmp_path / "model_final.pth"),
            "MODEL.BACKBONE.NAME",
            "build_resnet_fpn_backbone",
            "MODEL.DISTILL.MSSD.ENABLED",
            "False",
        ]
    )
    cfg = get_cfg()  # stock config: no detkd keys
    cfg.merge_from_file(str(tmp_path / "export" / "config_student.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    model = build_model(cfg)
    exported = str(tmp_path / "export" / "model_student.pth")
    DetectionCheckpointer(model).load(exported)  # the stock path
    # strict: no missing, no unexpected key (no teacher, no adaptation/align/GcBlock layers)
    model.load_state_dict(torch.load(exported)["model"], strict=True)
    trained = torch.load(tmp_path / "model_final.pth")["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained["student." + k]), k
