"""What the GPU check needs, tested on the CPU: its scripts parse, the COCO step benchmark runs
(at a small size), AMP benchmarking refuses a CPU, and the CUDA tests are collected and skipped
here with their reason."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", ["device_prep.sh", "device_check.sh"])
def test_scripts_parse(script):
    path = os.path.join(REPO, "scripts", script)
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", path], check=True)


def test_device_prep_pins_detectron2_and_every_missing_wheel():
    text = open(os.path.join(REPO, "scripts/device_prep.sh")).read()
    assert "DETECTRON2_COMMIT=02b5c4e295e990042a714712c21dc79b731e8833" in text
    for wheel in ("fvcore", "iopath", "yacs", "pycocotools", "omegaconf", "hydra-core", "antlr4"):
        assert wheel in text, wheel


def test_coco_step_benchmark_runs_every_shipped_config(tmp_path):
    table = tmp_path / "coco.md"
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks/bench_coco_step.py"), "--device", "cpu",
         "--steps", "1", "--size", "96,128", "--table", str(table)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in table.read_text().splitlines() if line.startswith("| distill_")]
    assert len(rows) == 6 and all("R50_R101" in r for r in rows)


def test_amp_benchmark_needs_cuda():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import bench_distill

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(ValueError, match="--amp needs a CUDA device"):
        bench_distill.build_step("student", "", "cpu", amp=True)


def test_cuda_tests_are_skipped_here_with_their_reason():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-q", "-rs",
         "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and "needs a CUDA GPU" in done.stdout
    assert " skipped" in done.stdout.splitlines()[-1] and "passed" not in done.stdout
