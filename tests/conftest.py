"""Shared fixtures: a tiny embedded dataset and a tiny saved teacher, made once per session; every
test starts from random states seeded by its own name, so a result does not depend on which tests
ran before it (set DETKD_TEST_SEED to draw other states when hunting for flaky tests)."""

import logging
import os
import random
import zlib

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from detkd import load_config
from detkd.data import ShapesSpec, register_shapes_datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# small everything, so a training step takes a fraction of a second on 2 cores
TINY = [
    "INPUT.MIN_SIZE_TRAIN",
    (64,),
    "INPUT.MAX_SIZE_TRAIN",
    96,
    "INPUT.MIN_SIZE_TEST",
    64,
    "INPUT.MAX_SIZE_TEST",
    96,
    "SOLVER.IMS_PER_BATCH",
    2,
    "DATALOADER.NUM_WORKERS",
    0,
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    64,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    200,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    32,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    64,
]
TEACHER_YAML = os.path.join(REPO, "configs/demo/teacher.yaml")


def make_cfg(path, *opts):
    """The config ``path`` (from the repository root) through detkd's loader, made tiny."""
    return load_config(os.path.join(REPO, path), list(TINY) + list(opts))


@pytest.fixture(autouse=True)
def seeded_by_test_name(request):
    """torch, numpy and random seeded from the test's id (numpy's state also seeds detectron2's
    training sampler through ``comm.shared_random_seed``)."""
    seed = (
        zlib.crc32(f"{os.environ.get('DETKD_TEST_SEED', '')}{request.node.nodeid}".encode()) % 2**31
    )
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.fixture(scope="session", autouse=True)
def shapes_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "detkd_shapes")
    register_shapes_datasets(root, ShapesSpec({"train": 24, "val": 8}, image_size=(64, 96)))
    return root


@pytest.fixture(scope="session")
def teacher_weights(tmp_path_factory):
    """A saved (untrained, but fully specified) demo teacher: what matters here is loading it."""
    torch.manual_seed(0)
    cfg = make_cfg("configs/demo/teacher.yaml")
    model = build_model(cfg)
    out = tmp_path_factory.mktemp("teacher")
    DetectionCheckpointer(model, str(out)).save("model_final")
    return str(out / "model_final.pth")


@pytest.fixture
def distill_cfg(teacher_weights):
    def make(path, *opts):
        return make_cfg(
            path,
            "MODEL.DISTILL.TEACHER.CONFIG_FILE",
            TEACHER_YAML,
            "MODEL.DISTILL.TEACHER.WEIGHTS",
            teacher_weights,
            *opts,
        )

    return make


def short_run(config, output_dir, iters, *opts):
    """train_net.py arguments of a tiny run of ``iters`` iterations of ``config`` (a path) into
    ``output_dir``, constant learning rate after one warm-up iteration."""
    return [
        "--config-file", str(config), *[str(o) for o in TINY],
        "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1",
        "OUTPUT_DIR", str(output_dir), *[str(o) for o in opts],
    ]  # fmt: skip


def train_batch(cfg, n=2):
    from detectron2.data import build_detection_train_loader

    return next(iter(build_detection_train_loader(cfg)))


@pytest.fixture
def detkd_log(caplog):
    """Records of the "detkd" logger (train_net's setup stops it from propagating to the root)."""
    logger = logging.getLogger("detkd")
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)
