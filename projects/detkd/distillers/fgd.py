"""Focal and global distillation (Yang et al., CVPR 2022) on FPN levels; the loss of one level is
:class:`detkd.losses.FGDLoss` (its docstring has the formulas).

Config block ``MODEL.DISTILL.FGD`` (the paper's Faster R-CNN release values); terms
``loss_fgd_{fg,bg,attention,global}_<level>``, weighted by ``ALPHA``, ``BETA``, ``GAMMA``,
``LAMBDA``. ``NORMALIZE`` (on by default; not in the paper) computes them on the maps standardized
per channel; the paper's weights then no longer give the paper's loss scale, the automatic balance
(on by default) does, to 3x the detection loss (``BALANCE_FACTOR`` 3.0). ``NORMALIZE False`` with
``BALANCE_FACTOR 1.0`` is the paper's form; the paired measurements behind the defaults are in
docs/METHODS.md.
"""

from detectron2.config import configurable
from torch import nn

from ..losses import FGDLoss
from .base import DISTILLER_REGISTRY, FeatureLevelDistiller
from .params import Param, non_negative, one_of, positive, unique

__all__ = ["FGDDistiller"]


@DISTILLER_REGISTRY.register()
class FGDDistiller(FeatureLevelDistiller):
    """One :class:`FGDLoss` (its own align layer and two GcBlocks) per FPN level."""

    config_block = "FGD"
    name = "fgd"
    aligns = False  # each level's FGDLoss aligns the student's channels itself
    balance_factor = 3.0
    params = (
        Param("IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"], unique),
        Param("TEMPERATURE", 0.5, positive),
        Param("ALPHA", 5e-5, non_negative),  # foreground feature term
        Param("BETA", 2.5e-5, non_negative),  # background feature term
        Param("GAMMA", 5e-5, non_negative),  # attention term
        Param("LAMBDA", 5e-7, non_negative, "lambda_"),  # global (GcBlock) term
        # every term on the maps standardized per channel (not in the paper; FGDLoss says why)
        Param("NORMALIZE", True, one_of(True, False)),
    )

    @configurable
    def __init__(self, *, student_channels, teacher_channels, **params):
        super().__init__(
            student_channels=student_channels, teacher_channels=teacher_channels, **params
        )
        self.weights = {
            "fg": self.alpha,
            "bg": self.beta,
            "attention": self.gamma,
            "global": self.lambda_,
        }
        self.levels = nn.ModuleDict(
            {
                f: FGDLoss(sc, tc, self.temperature, self.normalize)
                for f, (sc, tc) in self.channels.items()
            }
        )

    def forward(self, batch):
        losses = {}
        for f in self.in_features:
            s, t = batch.feature_pair(f, f)
            grid = "student" if s.shape[-2:] == batch.student.features[f].shape[-2:] else "teacher"
            boxes, sizes = batch.boxes_on(grid)
            # a level's stride is the same in student pixels on the student grid and in teacher
            # pixels on the teacher grid
            terms = self.levels[f](s, t, boxes, sizes, stride=batch.strides[f])
            for term, value in terms.items():
                losses[self.term(term, f)] = self.weights[term] * batch.per_area(value, t)
        return losses
