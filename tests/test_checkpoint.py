"""Weight files load what they claim or fail by name (detkd.checkpoint): no code runs from a
weight file, a plain detector checkpoint reaches the student, unreadable and foreign files are
named, a resume never starts fresh in silence."""

import logging
import math
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, TEACHER_YAML, TINY, make_cfg, train_batch
from detectron2.modeling import build_model

from detkd.checkpoint import (
    Checkpointer,
    CheckpointReadError,
    UnsafeWeightsError,
    WeightsMismatchError,
    load_weights_file,
)
from detkd.config import student_only_config
from detkd.engine import DistillTrainer
from detkd.engine.export import student_config
from detkd.modeling import TeacherWeightsError, teacher_from_config

sys.path.insert(0, REPO)
import train_net  # noqa: E402


def _same(a, b):
    """Nested result dicts equal, NaN equal to NaN (COCO reports NaN for empty size ranges)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


# ----- files whose unpickling would run code ----------------------------------------------------
class _Bomb:
    """Unpickling this creates ``marker`` (a stand-in for any command a file could run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bomb_pth(path, marker, state):
    torch.save({"model": state, "extra": _Bomb(marker)}, str(path))
    return str(path)


def _bomb_pkl(path, marker, state):
    with open(path, "wb") as f:
        pickle.dump(
            {
                "model": {k: v.numpy() for k, v in state.items()},
                "__author__": "test",
                "extra": _Bomb(marker),
            },
            f,
            protocol=2,
        )
    return str(path)


@pytest.fixture
def bombs(tmp_path, teacher_weights):
    """A .pth and a .pkl, each holding the (valid) teacher weights plus a pickled side effect."""
    state = torch.load(teacher_weights, weights_only=True)["model"]
    marker = tmp_path / "MARKER"
    files = {
        "pth": _bomb_pth(tmp_path / "bomb.pth", marker, state),
        "pkl": _bomb_pkl(tmp_path / "bomb.pkl", marker, state),
    }
    yield files, marker
    assert not marker.exists(), "a weight file ran code"


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_unsafe_file_refused_as_teacher_weights(bombs, kind):
    files, marker = bombs
    with pytest.raises(
        UnsafeWeightsError, match=rf"refused to read .*bomb\.{kind}.*ALLOW_UNSAFE_PICKLE"
    ) as info:
        teacher_from_config(TEACHER_YAML, files[kind])
    # it names what the file asked for
    assert "io.open" in str(info.value)


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_unsafe_file_refused_as_model_weights_and_on_resume(bombs, kind, tmp_path):
    files, _ = bombs
    cfg = make_cfg(
        "configs/demo/student.yaml",
        "MODEL.WEIGHTS",
        files[kind],
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    )
    model = build_model(cfg)
    with pytest.raises(UnsafeWeightsError, match=f"bomb.{kind}"):
        Checkpointer(model).load(files[kind])
    # resume: an unsafe last checkpoint is refused, not skipped
    os.makedirs(cfg.OUTPUT_DIR)
    os.symlink(files[kind], os.path.join(cfg.OUTPUT_DIR, "model_0000009.pth"))
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"), "w") as f:
        f.write("model_0000009.pth")
    with pytest.raises(UnsafeWeightsError):
        Checkpointer(model, cfg.OUTPUT_DIR).resume_or_load("", resume=True)


@pytest.mark.slow
def test_unsafe_file_refused_through_train_net_export_visualize_and_bench(bombs, tmp_path):
    files, _ = bombs
    config = os.path.join(REPO, "configs/demo/distill_fgd.yaml")
    common = ["--config-file", config, *[str(o) for o in TINY], "OUTPUT_DIR", str(tmp_path / "o")]
    with pytest.raises(UnsafeWeightsError):  # MODEL.WEIGHTS
        train_net.invoke(["--eval-only", *common, "MODEL.WEIGHTS", files["pth"]])
    with pytest.raises(UnsafeWeightsError):  # the teacher, when training
        train_net.invoke(
            [*common, "MODEL.DISTILL.TEACHER.WEIGHTS", files["pkl"], "SOLVER.MAX_ITER", "1"]
        )
    from detkd.engine.export import main as export_main
    from detkd.visualize import main as visualize_main

    with pytest.raises(UnsafeWeightsError):
        export_main(
            [
                "--config-file",
                config,
                "--output",
                str(tmp_path / "e"),
                "MODEL.WEIGHTS",
                files["pth"],
            ]
        )
    with pytest.raises(UnsafeWeightsError):
        visualize_main(
            [
                "--config-file",
                config,
                "--output",
                str(tmp_path / "v"),
                "--student-only",
                "MODEL.WEIGHTS",
                files["pkl"],
            ]
        )
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import bench_distill

    with pytest.raises(UnsafeWeightsError):
        bench_distill.measure("teacher_fwd", files["pth"], steps=1)


def test_opt_in_reads_a_trusted_pickle(tmp_path, teacher_weights):
    state = torch.load(teacher_weights, weights_only=True)["model"]
    marker = tmp_path / "MARKER"
    path = _bomb_pkl(tmp_path / "trusted.pkl", marker, state)
    cfg = make_cfg(
        "configs/demo/distill_fgd.yaml",
        "MODEL.DISTILL.TEACHER.CONFIG_FILE",
        TEACHER_YAML,
        "MODEL.DISTILL.TEACHER.WEIGHTS",
        path,
        "MODEL.DISTILL.ALLOW_UNSAFE_PICKLE",
        True,
    )
    model = build_model(cfg)
    assert marker.exists()  # the opt-in is real full unpickling
    assert torch.equal(
        model.teacher.state_dict()["backbone.fpn_lateral3.weight"],
        state["backbone.fpn_lateral3.weight"],
    )


def test_model_zoo_style_pkl_loads_without_opt_in(tmp_path, teacher_weights):
    """detectron2's model-zoo files: numpy arrays in plain dicts, pickled with protocol 2."""
    state = torch.load(teacher_weights, weights_only=True)["model"]
    path = tmp_path / "model_final_zoo.pkl"
    with open(path, "wb") as f:
        pickle.dump(
            {
                "model": {k: v.numpy() for k, v in state.items()},
                "__author__": "Detectron2 Model Zoo",
            },
            f,
            protocol=2,
        )
    teacher = teacher_from_config(TEACHER_YAML, str(path))
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_imagenet_backbone_pkl_loads_partially_and_reports(tmp_path, detkd_log):
    """An ImageNet-style backbone .pkl (no __author__: detectron2's name matching) for a fresh
    student."""
    cfg = make_cfg("configs/demo/distill_fgd.yaml")
    source = build_model(student_config(cfg))
    backbone = {
        k[len("backbone.bottom_up.") :]: v.numpy()
        for k, v in source.state_dict().items()
        if k.startswith("backbone.bottom_up.")
    }
    path = tmp_path / "R-18-like.pkl"
    with open(path, "wb") as f:
        pickle.dump(backbone, f, protocol=2)
    model = build_model(student_only_config(cfg))
    Checkpointer(model).load(str(path))
    for k, v in source.state_dict().items():
        if k.startswith("backbone.bottom_up.") and "num_batches" not in k:
            assert torch.equal(model.student.state_dict()[k], v), k
    report = [r.getMessage() for r in detkd_log.records if "student tensors" in r.getMessage()]
    assert (
        report and "left at their initialisation" in report[0] and "proposal_generator" in report[0]
    )


# ----- the student gets the weights it was given ------------------------------------------------
def _plain_checkpoint(tmp_path, cfg, seed=3):
    torch.manual_seed(seed)
    stock = build_model(student_config(cfg))
    Checkpointer(stock, str(tmp_path)).save("plain")
    return stock, str(tmp_path / "plain.pth")


def _predict(model, batch):
    model.eval()
    with torch.no_grad():
        return [
            o["instances"]
            for o in model([{k: v for k, v in x.items() if k != "instances"} for x in batch])
        ]


def test_plain_checkpoint_predictions_equal_stock(tmp_path):
    cfg = make_cfg("configs/demo/distill_fgd.yaml")
    stock, path = _plain_checkpoint(tmp_path, cfg)
    model = build_model(student_only_config(cfg))
    Checkpointer(model).load(path)
    batch = train_batch(cfg)
    ours, theirs = _predict(model, batch), _predict(stock, batch)
    assert sum(len(x) for x in theirs) > 0
    for a, b in zip(ours, theirs):
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores) and torch.equal(a.pred_classes, b.pred_classes)


def test_weights_of_another_model_are_an_error_naming_the_file(tmp_path):
    path = tmp_path / "classifier.pth"
    torch.save(
        {"features.0.weight": torch.randn(64, 3, 3, 3), "classifier.weight": torch.randn(10, 64)},
        path,
    )
    model = build_model(make_cfg("configs/demo/student.yaml"))
    with pytest.raises(
        WeightsMismatchError, match=r"classifier\.pth does not fit the student.*0\.0%"
    ):
        Checkpointer(model).load(str(path))
    # the teacher (a plain detector) too
    with pytest.raises(TeacherWeightsError, match="classifier.pth"):
        teacher_from_config(TEACHER_YAML, str(path))


def test_export_refuses_a_student_that_was_not_loaded(tmp_path):
    from detkd.engine.export import main as export_main

    config = os.path.join(REPO, "configs/demo/distill_fgd.yaml")
    with pytest.raises(ValueError, match="export needs MODEL.WEIGHTS"):
        export_main(["--config-file", config, "--output", str(tmp_path)])
    path = tmp_path / "other.pth"
    torch.save({"model": {"head.weight": torch.zeros(3)}}, path)
    with pytest.raises(WeightsMismatchError, match="other.pth"):
        export_main(
            ["--config-file", config, "--output", str(tmp_path), "MODEL.WEIGHTS", str(path)]
        )
    assert not (tmp_path / "model_student.pth").exists()


@pytest.mark.slow
def test_eval_only_with_plain_checkpoint_equals_stock_and_needs_no_teacher(tmp_path):
    cfg = make_cfg("configs/demo/distill_fgd.yaml")
    stock, path = _plain_checkpoint(tmp_path, cfg)
    stock_cfg = student_config(cfg)
    stock_cfg.DATASETS.TEST = ("detkd_shapes_val",)
    expected = DistillTrainer.test(stock_cfg, stock)
    out = tmp_path / "eval"
    res = train_net.invoke(
        [
            "--eval-only",
            "--config-file",
            os.path.join(REPO, "configs/demo/distill_fgd.yaml"),
            *[str(o) for o in TINY],
            "OUTPUT_DIR",
            str(out),
            "MODEL.WEIGHTS",
            path,
            # the teacher's weights do not exist: evaluation must not need them
            "MODEL.DISTILL.TEACHER.WEIGHTS",
            str(tmp_path / "no_such_teacher.pth"),
        ]
    )
    assert _same(res, expected) and "AP" in res["bbox"]
    log = (out / "log.txt").read_text()
    assert (
        "plain detector checkpoint: loading it into the student" in log
    )  # detkd's logger reaches log.txt
    assert "Loaded " in log and "student tensors (100.0% of its parameters)" in log
    with pytest.raises(ValueError, match="--eval-only needs MODEL.WEIGHTS"):
        train_net.invoke(
            [
                "--eval-only",
                "--config-file",
                os.path.join(REPO, "configs/demo/distill_fgd.yaml"),
                *[str(o) for o in TINY],
                "OUTPUT_DIR",
                str(out),
            ]
        )


@pytest.mark.slow
def test_visualize_student_only_needs_no_teacher(tmp_path):
    from detkd.visualize import main as visualize_main

    cfg = make_cfg("configs/demo/distill_fgd.yaml")
    _, path = _plain_checkpoint(tmp_path, cfg)
    visualize_main(
        [
            "--config-file",
            os.path.join(REPO, "configs/demo/distill_fgd.yaml"),
            "--output",
            str(tmp_path / "v"),
            "--student-only",
            *[str(o) for o in TINY],
            "MODEL.WEIGHTS",
            path,
            "MODEL.DISTILL.TEACHER.WEIGHTS",
            str(tmp_path / "missing.pth"),
        ]
    )
    assert (tmp_path / "v" / "detections.png").is_file()


# ----- unreadable files and resume ----------------------------------------------------------------
def test_truncated_and_missing_files_are_named(tmp_path, teacher_weights):
    data = open(teacher_weights, "rb").read()
    for name, content in (
        ("half.pth", data[: len(data) // 2]),
        ("empty.pkl", b""),
        ("text.pth", b"hello"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointReadError, match=name):
            load_weights_file(str(tmp_path / name))
    with pytest.raises(CheckpointReadError, match="not found: .*nope.pth"):
        load_weights_file(str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointReadError, match="half.pth"):
        teacher_from_config(TEACHER_YAML, str(tmp_path / "half.pth"))


def test_resume_past_a_broken_last_checkpoint(tmp_path, detkd_log):
    cfg = make_cfg("configs/demo/student.yaml")
    model = build_model(cfg)
    ckpt = Checkpointer(model, str(tmp_path))
    ckpt.save("model_0000004", iteration=4)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    (tmp_path / "model_0000009.pth").write_bytes(b"truncated")
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    extra = Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())
    warning = " ".join(r.getMessage() for r in detkd_log.records if r.levelno == logging.WARNING)
    assert "model_0000009.pth" in warning and "model_0000004.pth" in warning
    # nothing readable: an error naming the broken file and what was tried
    (tmp_path / "model_0000004.pth").write_bytes(b"")
    with pytest.raises(
        CheckpointReadError, match=r"cannot resume .*model_0000009\.pth.*model_0000004\.pth"
    ):
        Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)


def test_weights_file_must_hold_a_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointReadError, match="list.pth holds a list"):
        Checkpointer(build_model(make_cfg("configs/demo/student.yaml"))).load(str(path))
    assert np  # numpy arrays are what .pkl files hold (used above)


def test_ddp_saved_state_dict_and_protocol_5_pickles_load(tmp_path, teacher_weights):
    state = torch.load(teacher_weights, weights_only=True)["model"]
    ddp = tmp_path / "ddp.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}}, ddp)
    teacher = teacher_from_config(TEACHER_YAML, str(ddp))
    assert torch.equal(
        teacher.state_dict()["backbone.fpn_lateral3.weight"], state["backbone.fpn_lateral3.weight"]
    )
    p5 = tmp_path / "p5.pkl"
    with open(p5, "wb") as f:
        pickle.dump(
            {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "x"}, f, protocol=5
        )
    teacher = teacher_from_config(TEACHER_YAML, str(p5))
    assert torch.equal(
        teacher.state_dict()["backbone.fpn_lateral3.weight"], state["backbone.fpn_lateral3.weight"]
    )


def test_unreadable_last_checkpoint_is_not_a_silent_fresh_start(tmp_path):
    model = build_model(make_cfg("configs/demo/student.yaml"))
    Checkpointer(model, str(tmp_path)).save("model_0000004", iteration=4)
    (tmp_path / "last_checkpoint").unlink()
    (tmp_path / "last_checkpoint").mkdir()  # exists, but cannot be read as a file
    extra = Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
