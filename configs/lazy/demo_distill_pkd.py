"""PKD on the CPU demo, as LazyConfig (the same model as configs/demo/distill_pkd.yaml)."""

import os

from detectron2.config import LazyCall as L

from detkd.distillers import PKDDistiller
from detkd.modeling import DistillRCNN, teacher_from_config

from .demo_common import dataloader, lr_multiplier, optimizer, student, train  # noqa: F401

model = L(DistillRCNN)(
    student=student,
    teacher=L(teacher_from_config)(
        # the teacher config next to the yaml demo configs, wherever this runs from
        config_file=os.path.join(os.path.dirname(__file__), "../demo/teacher.yaml"),
        weights="output/demo/teacher/model_final.pth",
    ),
    distillers=[
        L(PKDDistiller)(
            in_features=["p2", "p3", "p4", "p5"],
            student_channels=[64] * 4,
            teacher_channels=[128] * 4,
            weight=6.0,
        )
    ],
)
train.output_dir = "output/demo/lazy_distill_pkd"
train.global_grad_clip_norm = 35.0
