"""A user's distillation method, defined in this file (outside projects/detkd), registered and
trained from a yaml through train_net.py with no edit to detkd: in-process, and from the command
line with ``--import`` as a user runs it."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TEACHER_YAML, make_cfg, short_run
from detectron2.config import configurable
from detectron2.modeling import build_model
from torch import nn

from detkd.distillers import DISTILLER_REGISTRY, Distiller, Param, feature_shape
from detkd.distillers.params import non_negative

sys.path.insert(0, REPO)
import train_net  # noqa: E402


# ----- the user's method: this is all a user writes ----------------------------------------------
@DISTILLER_REGISTRY.register()
class L1FeatureDistiller(Distiller):
    """weight * mean |adapt(S) - T| on one feature map."""

    config_block = "L1_FEATURE"  # MODEL.DISTILL.L1_FEATURE
    name = "l1_feature"  # its terms: loss_l1_feature_<feature>
    teacher_needs = frozenset({"features"})
    params = (Param("FEATURE", "p3"), Param("WEIGHT", 1.0, non_negative))  # keys, defaults, checks

    @configurable
    def __init__(self, *, student_channels, teacher_channels, **params):
        super().__init__()
        self.set_params(params)  # self.feature, self.weight, checked
        self.adapt = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    @classmethod
    def shape_args(cls, cfg, student_shapes, teacher_shapes):
        f = cfg.MODEL.DISTILL.L1_FEATURE.FEATURE
        return dict(
            student_channels=feature_shape(student_shapes, f, "student", cls.config_block).channels,
            teacher_channels=feature_shape(teacher_shapes, f, "teacher", cls.config_block).channels,
        )

    def teacher_features(self):
        return [self.feature]

    def forward(self, batch):
        s, t = batch.feature_pair(self.feature, self.feature)
        return {self.term(self.feature): self.weight * (self.adapt(s) - t).abs().mean()}


# --------------------------------------------------------------------------------------------------


def _user_yaml(tmp_path, teacher_weights):
    path = tmp_path / "my_method.yaml"
    path.write_text(
        f'_BASE_: "{REPO}/configs/demo/student.yaml"\n'
        "MODEL:\n  DISTILL:\n"
        f'    TEACHER:\n      CONFIG_FILE: "{TEACHER_YAML}"\n      WEIGHTS: "{teacher_weights}"\n'
        "    L1_FEATURE:\n      ENABLED: True\n      FEATURE: p4\n      WEIGHT: 0.25\n"
    )
    return str(path)


def test_the_method_declares_its_block_and_builds_from_yaml(tmp_path, teacher_weights):
    default = make_cfg("configs/demo/student.yaml")
    assert default.MODEL.DISTILL.L1_FEATURE == {
        "ENABLED": False,
        "BALANCE_FACTOR": 1.0,
        "FEATURE": "p3",
        "WEIGHT": 1.0,
    }
    model = build_model(make_cfg(_user_yaml(tmp_path, teacher_weights)))
    (method,) = model.distillers.values()
    assert (
        isinstance(method, L1FeatureDistiller) and method.feature == "p4" and method.weight == 0.25
    )
    assert method.adapt.in_channels == 64 and method.adapt.out_channels == 128
    # its checks come with its declaration, naming the key
    with pytest.raises(ValueError, match="MODEL.DISTILL.L1_FEATURE.WEIGHT must be a non-negative"):
        build_model(
            make_cfg(_user_yaml(tmp_path, teacher_weights), "MODEL.DISTILL.L1_FEATURE.WEIGHT", -1.0)
        )


def test_trains_through_train_net(tmp_path, teacher_weights):
    out = tmp_path / "run"
    train_net.invoke(
        short_run(_user_yaml(tmp_path, teacher_weights), out, 2, "DATASETS.TEST", "()")
    )
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    values = [r["loss_l1_feature_p4"] for r in rows if "loss_l1_feature_p4" in r]
    assert values and all(0 < v < float("inf") for v in values)
    saved = torch.load(out / "model_final.pth", weights_only=True)["model"]
    # its layers are checkpointed with the student, under its name
    assert "distillers.l1_feature.adapt.weight" in saved


def test_a_term_named_against_the_convention_is_refused(tmp_path, teacher_weights):
    model = build_model(make_cfg(_user_yaml(tmp_path, teacher_weights))).train()
    (method,) = model.distillers.values()
    method.forward = lambda batch: {"loss_other_p4": torch.zeros(())}
    from conftest import train_batch
    from detectron2.utils.events import EventStorage

    with EventStorage(), pytest.raises(RuntimeError, match="named loss_l1_feature_<term>"):
        model(train_batch(make_cfg(_user_yaml(tmp_path, teacher_weights))))


@pytest.mark.slow
def test_trains_from_the_command_line_with_import(tmp_path, teacher_weights):
    """What a user types: train_net.py --import their file (which registers the method)."""
    # this file imports the tests' helpers, so their folder is on the path (a user's file would
    # not need it)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), REPO]),
    )
    cmd = [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--import",
        os.path.abspath(__file__),
        *short_run(
            _user_yaml(tmp_path, teacher_weights),
            tmp_path / "cli",
            1,
            "DATASETS.TEST",
            "()",
            "DATASETS.TRAIN",
            "('detkd_shapes_train',)",
        ),  # fmt: skip
    ]
    env["DETECTRON2_DATASETS"] = str(tmp_path / "data")
    proc = subprocess.run(
        cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss_l1_feature_p4" in (tmp_path / "cli" / "metrics.json").read_text()
