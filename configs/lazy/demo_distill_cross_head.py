"""The head cross-forward (after CrossKD) on the CPU demo, as LazyConfig (the same model as
configs/demo/distill_cross_head.yaml)."""

from detectron2.config import LazyCall as L

from detkd.distillers import CrossHeadDistiller
from detkd.modeling import DistillRCNN

from .demo_common import dataloader, lr_multiplier, optimizer, student, teacher, train  # noqa: F401

model = L(DistillRCNN)(
    student=student,
    teacher=teacher,
    distillers=[
        L(CrossHeadDistiller)(
            in_features=["p2", "p3", "p4", "p5"],
            student_channels=64,  # the FPN width of the student's pooled region features
            teacher_channels=128,  # the width the teacher's box head reads
            temperature=3.0,
            weight=0.5,
        )
    ],
)
train.output_dir = "output/demo/lazy_distill_cross_head"
train.global_grad_clip_norm = 35.0
