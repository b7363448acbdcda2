"""The demo pipeline, the visualize command and the benchmarks' helpers, on tiny schedules."""

import json
import os

import pytest
from conftest import TINY

from detkd import demo
from detkd.visualize import visualize

pytestmark = pytest.mark.slow


def test_demo_pipeline_writes_table_and_plots(tmp_path):
    # two runs at a time in worker processes (the default of `make demo`)
    rows = demo.run_demo(
        str(tmp_path),
        ["baseline", "chen"],
        seeds=2,
        teacher_iters=2,
        student_iters=2,
        eval_points=1,
        extra_opts=TINY,
        jobs=2,
    )
    assert set(rows) == {"teacher", "baseline", "chen"} and len(rows["chen"]) == 2
    for r in rows["chen"]:
        assert set(demo.COLUMNS) <= set(r) and r["params_M"] > 0 and r["ms_per_image"] > 0
    text = (tmp_path / "results.md").read_text()
    assert "| chen | 2 |" in text and "VOC_AP50" in text and "Per-seed AP" in text
    assert (tmp_path / "results.png").stat().st_size > 1000 and (
        tmp_path / "ap_curves.png"
    ).stat().st_size > 1000
    # the teacher is cached: a second run does not train it again
    mtime = os.path.getmtime(tmp_path / "teacher" / "model_final.pth")
    # and finished runs are read back: a new method trains in this process (jobs=1), the others
    # not at all
    cached_run = tmp_path / "chen" / "seed1" / "run.json"
    run_mtime = os.path.getmtime(cached_run)
    rows = demo.run_demo(
        str(tmp_path),
        ["baseline", "chen", "fgd"],
        seeds=2,
        teacher_iters=2,
        student_iters=2,
        eval_points=1,
        extra_opts=TINY,
    )
    assert os.path.getmtime(tmp_path / "teacher" / "model_final.pth") == mtime
    assert os.path.getmtime(cached_run) == run_mtime and len(rows["fgd"]) == 2


def test_demo_without_a_distilling_method_trains_no_teacher(tmp_path):
    # MSSD distils the student into itself: a survey of it and its baseline reads no teacher, so
    # the demo neither trains one nor reports a teacher row or a share of its gap
    rows = demo.run_demo(
        str(tmp_path),
        ["baseline_pafpn", "mssd"],
        seeds=2,
        teacher_iters=2,
        student_iters=2,
        eval_points=1,
        extra_opts=TINY,
    )
    assert set(rows) == {"baseline_pafpn", "mssd"} and len(rows["mssd"]) == 2
    assert not (tmp_path / "teacher").exists()
    text = (tmp_path / "results.md").read_text()
    assert "no teacher (no method distils from one)" in text and "| teacher |" not in text
    gain = json.loads((tmp_path / "results.json").read_text())["gains"]["mssd"]
    assert gain["n"] == 2 and gain["gap_closed"] != gain["gap_closed"]  # NaN: no gap to close


def test_visualize_writes_every_picture(tmp_path, distill_cfg):
    cfg = distill_cfg("configs/demo/distill_all.yaml")
    files = visualize(cfg, str(tmp_path), "detkd_shapes_val", 0)
    assert files == ["attention.png", "detections.png", "fgd_masks.png", "mssd_gaussian.png"]
    for f in files:
        assert (tmp_path / f).stat().st_size > 2000


@pytest.mark.parametrize("kind", ["teacher_fwd", "mssd"])
def test_benchmark_child_measures_a_step(teacher_weights, kind):
    """bench_distill's per-process measurement: a finite step time and a peak RSS above the imports.
    (The session's teacher is untrained: its features are ~1e3 in size, so teacher-feature losses
    on it are ~1e5 and can overflow a training step; the distillers are timed in `make bench` with
    the trained demo teacher.)"""
    import json
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(repo, "benchmarks/bench_distill.py"),
            "--child",
            kind,
            "--teacher",
            teacher_weights,
            "--steps",
            "1",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < figures["step_s"] < 60 and figures["peak_mb"] > 300


def test_benchmark_interleaves_the_kinds_in_one_process(teacher_weights):
    """bench_distill's timing: one finite time per kind and round, every kind stepped each round
    (the student and a teacher-free method, so the untrained session teacher cannot overflow)."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import bench_distill

    times = bench_distill.interleaved_times(["student", "teacher_fwd", "mssd"], teacher_weights, 2)
    assert set(times) == {"student", "teacher_fwd", "mssd"}
    for seconds in times.values():
        assert len(seconds) == 2 and all(0 < s < 60 for s in seconds)


def test_fgd_benchmark_masks_agree_with_the_loop():
    sys_path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"
    )
    import sys

    sys.path.insert(0, sys_path)
    from bench_fgd import bench_masks

    m = bench_masks(1)  # asserts equality of the two inside
    assert 0 < m["vectorized"] and m["loop"] > 0 and 0 < m["few"] and 0 < m["many"]
    assert m["speedup"] == pytest.approx(m["loop"] / m["vectorized"])
    assert m["many_over_few"] == pytest.approx(m["many"] / m["few"])
