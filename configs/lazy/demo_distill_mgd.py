"""MGD on the CPU demo, as LazyConfig (the same model as configs/demo/distill_mgd.yaml)."""

from detectron2.config import LazyCall as L

from detkd.distillers import MGDDistiller
from detkd.modeling import DistillRCNN

from .demo_common import dataloader, lr_multiplier, optimizer, student, teacher, train  # noqa: F401

model = L(DistillRCNN)(
    student=student,
    teacher=teacher,
    distillers=[
        L(MGDDistiller)(
            in_features=["p2", "p3", "p4", "p5", "p6"],
            student_channels=[64] * 5,
            teacher_channels=[128] * 5,
            alpha=5e-7,
            mask_ratio=0.45,
            seed=0,
        )
    ],
)
train.output_dir = "output/demo/lazy_distill_mgd"
train.global_grad_clip_norm = 35.0
