"""Chen et al. 2017 on the CPU demo, as LazyConfig (= configs/demo/distill_chen.yaml):
hints on res4 and p3, class-weighted soft CE and teacher-bounded regression on RPN and RCN."""

from detectron2.config import LazyCall as L

from detkd.distillers import BoundedRegressionDistiller, HintDistiller, SoftCEDistiller
from detkd.modeling import DistillRCNN

from .demo_common import dataloader, lr_multiplier, optimizer, student, teacher, train  # noqa: F401

model = L(DistillRCNN)(
    student=student,
    teacher=teacher,
    distillers=[
        # ResNet-18 res4 has 256 channels, ResNet-34's too; the FPN maps have 64 and 128
        L(HintDistiller)(
            student_features=["res4", "p3"],
            teacher_features=["res4", "p3"],
            student_channels=[256, 64],
            teacher_channels=[256, 128],
            weight=0.5,
            kernel_size=1,
            norm="l2",
        ),
        L(SoftCEDistiller)(targets=["rpn", "rcn"], mu=0.5, temperature=1.0, background_weight=1.5),
        L(BoundedRegressionDistiller)(targets=["rpn", "rcn"], nu=0.5, margin=0.0),
    ],
    # Chen Sec. 4.1: set to 0.5 (and drop "rpn" from the targets) for a half-resolution student
    student_input_scale=1.0,
)
train.output_dir = "output/demo/lazy_distill_chen"
