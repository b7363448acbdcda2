"""FGD on the CPU demo, as LazyConfig (the same model as configs/demo/distill_fgd.yaml)."""

from detectron2.config import LazyCall as L

from detkd.distillers import FGDDistiller
from detkd.modeling import DistillRCNN

from .demo_common import dataloader, lr_multiplier, optimizer, student, teacher, train  # noqa: F401

LEVELS = ["p2", "p3", "p4", "p5", "p6"]
model = L(DistillRCNN)(
    student=student,
    teacher=teacher,
    distillers=[
        L(FGDDistiller)(
            in_features=LEVELS,
            student_channels=[64] * 5,
            teacher_channels=[128] * 5,
            temperature=0.5,
            alpha=5e-5,
            beta=2.5e-5,
            gamma=5e-5,
            lambda_=5e-7,
        )
    ],
)
train.output_dir = "output/demo/lazy_distill_fgd"
train.global_grad_clip_norm = 35.0
