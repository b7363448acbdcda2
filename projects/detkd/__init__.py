"""detkd: distil large frozen detectron2 teachers into small Faster R-CNN students.

Importing detkd registers ``DistillRCNN`` (META_ARCH_REGISTRY) and
``build_resnet_pafpn_backbone`` (BACKBONE_REGISTRY).
"""

from . import modeling  # noqa: F401  (registers the meta-architecture and backbone)
from .config import add_detkd_config, load_config

__version__ = "0.1.0"
