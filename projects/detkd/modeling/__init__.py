"""detkd's models: the DistillRCNN meta-architecture, the teacher and PAFPN (the batch the
methods read is :mod:`detkd.batch`)."""

from .distill_rcnn import DistillRCNN, inherit_from_teacher
from .pafpn import PAFPN, build_resnet_pafpn_backbone
from .teacher import (
    TeacherWeightsError,
    build_teacher,
    freeze,
    load_teacher_weights,
    teacher_from_config,
    teacher_of,
)
