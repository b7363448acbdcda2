# ruff: noqa: I001  (the import order below is the methods' registration order)
"""Distillation methods, one module each, registered in :data:`DISTILLER_REGISTRY`.

Importing this package registers detkd's methods; see :mod:`detkd.distillers.base` for how a method
(detkd's or your own, in your own file) declares its config block, its terms and what it needs from
the teacher.
"""

from .base import (
    DISTILLER_REGISTRY,
    Distiller,
    FeatureLevelDistiller,
    StageDistiller,
    build_distillers,
    check_channels,
    check_pair,
    feature_shape,
    registered_distillers,
)
from .params import Param

# The import order is the registration order: the order of the MODEL.DISTILL blocks and of the
# methods in DistillRCNN.distillers (checkpoint keys are their names, distillers.<name>.*).
from .hint import HintDistiller
from .soft_ce import SoftCEDistiller
from .bounded_reg import BoundedRegressionDistiller
from .fgd import FGDDistiller
from .mssd import MSSDDistiller
from .pkd import PKDDistiller
from .cwd import CWDDistiller
from .mgd import MGDDistiller
from .cross_head import CrossHeadDistiller
