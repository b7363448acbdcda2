"""The demo teacher (configs/demo/teacher.yaml: ResNet-34, FPN-128, FC-512) as LazyConfig, e.g. for
``MODEL.DISTILL.TEACHER.CONFIG_FILE: configs/lazy/demo_teacher.py`` or ``teacher_from_config``."""

from detectron2.layers import ShapeSpec

from .demo_common import student as model

model.backbone.bottom_up.stages.depth = 34
model.backbone.out_channels = 128
model.proposal_generator.head.in_channels = 128
model.roi_heads.box_head.input_shape = ShapeSpec(channels=128, height=7, width=7)
model.roi_heads.box_head.fc_dims = [512, 512]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=512)
