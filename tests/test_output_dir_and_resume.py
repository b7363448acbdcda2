"""One run per output directory (the lock train_net.py and the demo take), a resume that cannot go
on says why, and distillers held by name in checkpoints (positional files still load)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import REPO, short_run
from detectron2.modeling import build_model

import train_net
from detkd.checkpoint import Checkpointer, ResumeMismatchError, WeightsMismatchError
from detkd.engine import OutputDirLocked, hold_output_dir
from detkd.engine.output_lock import HOLDER_FILE, holder_of

FGD = os.path.join(REPO, "configs/demo/distill_fgd.yaml")
MGD = os.path.join(REPO, "configs/demo/distill_mgd.yaml")


# ----- the lock ----------------------------------------------------------------------------------
def test_lock_names_its_holder_and_is_released_with_its_record(tmp_path):
    out = str(tmp_path / "run")
    with hold_output_dir(out, "training a.yaml") as record:
        assert holder_of(out) == record and record["pid"] == os.getpid()
        with pytest.raises(OutputDirLocked) as e:
            with hold_output_dir(out, "training b.yaml"):
                pass
        message = str(e.value)
        assert out in message and f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert record["started"] in message and "training a.yaml" in message
    assert not os.path.exists(os.path.join(out, HOLDER_FILE))  # a clean release removes it
    with hold_output_dir(out):  # and the directory is free again
        pass


def test_a_killed_holders_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    out = str(tmp_path / "run")
    code = textwrap.dedent(
        f"""
        import sys, time
        from detkd.engine import hold_output_dir
        with hold_output_dir({out!r}, "training killed.yaml"):
            print("held", flush=True)
            time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirLocked, match=f"pid {proc.pid} "):
            with hold_output_dir(out):
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert holder_of(out)["pid"] == proc.pid  # the killed process left its record
    with caplog.at_level(logging.WARNING, logger="detkd.engine.output_lock"):
        with hold_output_dir(out, "training next.yaml") as record:
            assert record["pid"] == os.getpid()
    taken = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert len(taken) == 1 and f"pid {proc.pid} " in taken[0] and "killed.yaml" in taken[0]


@pytest.mark.slow
def test_a_second_train_net_into_a_held_directory_fails_while_the_first_trains(
    tmp_path, teacher_weights, shapes_data
):
    out = tmp_path / "run"
    env = dict(os.environ, DETECTRON2_DATASETS=os.path.dirname(shapes_data), OMP_NUM_THREADS="1")
    # both read the tests' tiny data set: the first trains long enough to be caught running
    common = ["MODEL.DISTILL.TEACHER.WEIGHTS", teacher_weights, "DATASETS.TEST", "()"]
    data = ["DATASETS.TRAIN", "('detkd_shapes_train',)"]

    # each process writes its log to a file: a pipe nobody reads while it trains fills (64 KiB;
    # the full-config dump alone is about that) and blocks the process
    def train(config, iters, log):
        argv = short_run(config, out, iters, *common, *data)
        with open(log, "w") as f:
            return subprocess.Popen(
                [sys.executable, os.path.join(REPO, "train_net.py"), *argv],
                cwd=REPO,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                text=True,
            )

    first_path, second_path = tmp_path / "first.log", tmp_path / "second.log"
    first = train(FGD, 60, first_path)
    try:
        deadline = time.time() + 240
        while not (out / "metrics.json").exists():  # the first is training
            assert first.poll() is None and time.time() < deadline, first_path.read_text()[-3000:]
            time.sleep(0.5)
        second = train(os.path.join(REPO, "configs/demo/distill_cwd.yaml"), 5, second_path)
        second.wait(timeout=240)
        second_log = second_path.read_text()
        assert first.poll() is None  # the first is still training
        first.wait(timeout=600)
        first_log = first_path.read_text()
    finally:
        first.kill()
    assert second.returncode != 0
    assert "OutputDirLocked" in second_log and f"{out} is held by another run" in second_log
    assert f"pid {first.pid} on {socket.gethostname()}" in second_log
    assert "distill_fgd.yaml" in second_log  # what the holder runs
    assert "Starting training" not in second_log  # it stopped before building a model
    assert first.returncode == 0, first_log[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "loss_cwd" in str(r)] == []  # no line of the second
    assert rows[-1]["iteration"] == 59 and (out / "model_final.pth").exists()


def test_eval_only_into_a_held_directory_is_refused(tmp_path, teacher_weights):
    out = tmp_path / "run"
    with hold_output_dir(str(out), "training x.yaml"):
        with pytest.raises(OutputDirLocked, match="training x.yaml"):
            train_net.invoke(
                [
                    "--eval-only",
                    *short_run(FGD, out, 1, "MODEL.WEIGHTS", teacher_weights),
                ]
            )
    assert not (out / "inference").exists()


def test_a_lazyconfig_run_into_a_held_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    config = os.path.join(REPO, "configs/lazy/demo_distill_fgd.py")
    with hold_output_dir(str(out), "training y.yaml"):
        with pytest.raises(OutputDirLocked, match=f"{out} is held by another run"):
            train_net.invoke(["--config-file", config, f"train.output_dir={out}"])
    assert sorted(os.listdir(out)) == [".detkd.lock"]  # nothing written


# ----- resume ------------------------------------------------------------------------------------
def _train(config, out, iters, teacher_weights, *opts, resume=False):
    argv = short_run(
        config,
        out,
        iters,
        "MODEL.DISTILL.TEACHER.WEIGHTS",
        teacher_weights,
        "DATASETS.TEST",
        "()",
        "SOLVER.CHECKPOINT_PERIOD",
        2,
        *opts,
    )
    return train_net.invoke((["--resume"] if resume else []) + argv)


@pytest.mark.slow
def test_resume_with_other_methods_fails_before_any_step_naming_both_sets(
    tmp_path, teacher_weights
):
    out = tmp_path / "run"
    _train(FGD, out, 2, teacher_weights, "MODEL.DISTILL.PKD.ENABLED", "True")
    saved = torch.load(out / "model_final.pth", weights_only=True)
    assert saved["distill_methods"] == ["fgd", "pkd"]  # the record
    assert any(k.startswith("distillers.fgd.") for k in saved["model"])  # keys by name
    lines = (out / "metrics.json").read_text()
    with pytest.raises(ResumeMismatchError) as e:
        _train(MGD, out, 4, teacher_weights, resume=True)
    message = str(e.value)
    assert "checkpoint: fgd, pkd; config: mgd" in message
    assert f"MODEL.WEIGHTS {out / 'model_final.pth'}" in message and "without --resume" in message
    assert (out / "metrics.json").read_text() == lines  # no step was taken


@pytest.mark.slow
def test_resume_with_a_changed_training_key_goes_on_with_one_warning(
    tmp_path, teacher_weights, detkd_log
):
    out = tmp_path / "run"
    _train(FGD, out, 2, teacher_weights, "SOLVER.BASE_LR", "0.01")
    detkd_log.clear()
    _train(FGD, out, 4, teacher_weights, "SOLVER.BASE_LR", "0.005", resume=True)
    warnings = [r.getMessage() for r in detkd_log.records if "changed config" in r.getMessage()]
    assert len(warnings) == 1
    assert "SOLVER.BASE_LR = 0.01 (now 0.005)" in warnings[0]
    assert "SOLVER.MAX_ITER = 2 (now 4)" in warnings[0]
    assert "OUTPUT_DIR" not in warnings[0]  # not what trains the weights
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert rows[-1]["iteration"] == 3  # it went on to the end of the new schedule


def _model_and_file(distill_cfg, tmp_path, *opts, name="model"):
    model = build_model(distill_cfg("configs/demo/distill_fgd.yaml", *opts))
    Checkpointer(model, str(tmp_path)).save(name)
    return model, str(tmp_path / f"{name}.pth")


def test_resume_with_reshaped_distiller_tensors_is_refused(tmp_path, distill_cfg):
    model, path = _model_and_file(distill_cfg, tmp_path, "MODEL.DISTILL.MGD.ENABLED", "True")
    data = torch.load(path, weights_only=True)
    key = next(k for k in data["model"] if k.startswith("distillers.mgd.") and "weight" in k)
    data["model"][key] = torch.zeros(3, 3)
    torch.save(data, path)
    (tmp_path / "last_checkpoint").write_text("model.pth")
    checkpointer = Checkpointer(model, str(tmp_path))
    with pytest.raises(ResumeMismatchError, match=f"other shapes: {key} \\(3, 3\\)"):
        checkpointer.resume_or_load("", resume=True)


# ----- distillers by name ------------------------------------------------------------------------
def test_a_checkpoint_of_other_methods_loads_the_shared_ones_and_says_which(
    tmp_path, distill_cfg, detkd_log
):
    # FGD + MGD saved; loaded into MGD + CWD: MGD's layers load, FGD's are dropped, CWD is new
    source, path = _model_and_file(distill_cfg, tmp_path, "MODEL.DISTILL.MGD.ENABLED", "True")
    target = build_model(
        distill_cfg(
            "configs/demo/distill_mgd.yaml",
            "MODEL.DISTILL.CWD.ENABLED",
            "True",
            "MODEL.DISTILL.CWD.IN_FEATURES",
            ["p2", "p3"],
        )
    )
    assert sorted(target.distillers) == ["cwd", "mgd"]
    Checkpointer(target).load(path)
    for name, tensor in source.distillers["mgd"].state_dict().items():
        assert torch.equal(target.distillers["mgd"].state_dict()[name], tensor)
    messages = " ".join(r.getMessage() for r in detkd_log.records)
    assert "the layers of fgd are not loaded" in messages
    assert "holds no layers of cwd" in messages


def _positional(path, names, out):
    data = torch.load(path, weights_only=True)
    index = {n: i for i, n in enumerate(names)}
    renamed = {}
    for k, v in data["model"].items():
        parts = k.split(".")
        if parts[0] == "distillers":
            k = ".".join(["distillers", str(index[parts[1]]), *parts[2:]])
        renamed[k] = v
    data["model"] = renamed
    del data["distill_methods"]  # as files saved before the record
    torch.save(data, out)
    return data


def test_a_positional_checkpoint_loads_by_the_method_list_it_was_saved_with(tmp_path, distill_cfg):
    source, path = _model_and_file(distill_cfg, tmp_path, "MODEL.DISTILL.MGD.ENABLED", "True")
    legacy = str(tmp_path / "old" / "model_final.pth")
    os.makedirs(os.path.dirname(legacy))
    saved = _positional(path, ["fgd", "mgd"], legacy)
    assert any(k.startswith("distillers.1.") for k in saved["model"])
    # the config.yaml train_net wrote beside it names the methods: mapped onto MGD alone too
    cfg = distill_cfg("configs/demo/distill_fgd.yaml", "MODEL.DISTILL.MGD.ENABLED", "True")
    (tmp_path / "old" / "config.yaml").write_text(cfg.dump())
    target = build_model(distill_cfg("configs/demo/distill_mgd.yaml"))
    Checkpointer(target).load(legacy)
    for name, tensor in source.distillers["mgd"].state_dict().items():
        assert torch.equal(target.distillers["mgd"].state_dict()[name], tensor)
    # without it, the model's own list maps it when the counts agree
    os.remove(tmp_path / "old" / "config.yaml")
    same = build_model(cfg)
    Checkpointer(same).load(legacy)
    for name, tensor in source.state_dict().items():
        assert torch.equal(same.state_dict()[name], tensor), name
    # and a count that does not agree fails naming the keys
    with pytest.raises(WeightsMismatchError, match="distillers.1.") as e:
        Checkpointer(target).load(legacy)
    assert "positional keys" in str(e.value)
