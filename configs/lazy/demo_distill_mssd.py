"""MSSD self-distillation on the CPU demo, as LazyConfig (= configs/demo/distill_mssd.yaml):
no teacher; a PAFPN student whose top-down FPN maps teach its bottom-up PAN outputs."""

from detectron2.config import LazyCall as L

from detkd.distillers import MSSDDistiller
from detkd.modeling import PAFPN, DistillRCNN

from .demo_common import dataloader, lr_multiplier, optimizer, student, train  # noqa: F401

student.backbone = L(PAFPN)(fpn=student.backbone, norm="")
model = L(DistillRCNN)(
    student=student,
    teacher=None,
    distillers=[
        L(MSSDDistiller)(
            in_features=["p2", "p3", "p4", "p5"],
            channels=64,
            weights=[0.1, 0.1, 0.1, 0.1],
            mask_weights=[1.0, 1.0, 1.0, 1.0],
        ),
    ],
)
train.output_dir = "output/demo/lazy_distill_mssd"
