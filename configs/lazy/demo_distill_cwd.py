"""CWD on the CPU demo, as LazyConfig (the same model as configs/demo/distill_cwd.yaml)."""

from detectron2.config import LazyCall as L

from detkd.distillers import CWDDistiller
from detkd.modeling import DistillRCNN

from .demo_common import dataloader, lr_multiplier, optimizer, student, teacher, train  # noqa: F401

model = L(DistillRCNN)(
    student=student,
    teacher=teacher,
    distillers=[
        L(CWDDistiller)(
            in_features=["p2", "p3", "p4", "p5", "p6"],
            student_channels=[64] * 5,
            teacher_channels=[128] * 5,
            temperature=1.0,
            weight=10.0,
        )
    ],
)
train.output_dir = "output/demo/lazy_distill_cwd"
train.global_grad_clip_norm = 35.0
