"""detkd's models: the DistillRCNN meta-architecture, the teacher, distillers and PAFPN."""

from .batch import DistillBatch, SideOutputs
from .distill_rcnn import DistillRCNN, inherit_from_teacher
from .pafpn import PAFPN, build_resnet_pafpn_backbone
from .teacher import (
    TeacherWeightsError,
    build_teacher,
    freeze,
    load_teacher_weights,
    teacher_from_config,
)
