"""MSSD on the CPU demo, as LazyConfig (= configs/demo/distill_mssd.yaml): no teacher; a PAFPN
student with MSSD's Gaussian mask term on its PAN outputs, its self-distillation (the top-down FPN
maps teach the bottom-up PAN outputs) off as it ships: ``weights`` 0.1 per level turns it on."""

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
            weights=[0.0, 0.0, 0.0, 0.0],
            mask_weights=[1.0, 1.0, 1.0, 1.0],
        ),
    ],
)
train.output_dir = "output/demo/lazy_distill_mssd"
