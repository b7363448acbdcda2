"""Hint learning (Chen et al., NeurIPS 2017, Sec. 3.3): ``gamma * ||V - adapt(Z)||^2`` between
paired teacher features ``V`` and student features ``Z``; the loss is
:class:`detkd.losses.HintLoss`.

Config block ``MODEL.DISTILL.HINT``; terms ``loss_hint_<student feature>``. ``NORMALIZE`` (not in
the paper, on by default): both maps standardized per channel before the error; with
``BALANCE_FACTOR`` 3.0 (by default) the hint is balanced to 3x the detection loss. The paper's form
is ``NORMALIZE False``, ``BALANCE_FACTOR 1.0``.
"""

from detectron2.config import configurable
from torch import nn

from ..losses import HintLoss
from .base import DISTILLER_REGISTRY, Distiller, check_pair, feature_shape
from .params import Param, non_empty, non_negative, one_of, one_per, unique

__all__ = ["HintDistiller"]


@DISTILLER_REGISTRY.register()
class HintDistiller(Distiller):
    """Chen et al. 2017 hints on paired backbone / FPN features, one adaptation layer per pair."""

    config_block = "HINT"
    name = "hint"
    # standardized maps at 3x the detection loss: the default the demo's three sets support
    # (docs/METHODS.md, hint NORMALIZE, BALANCE_FACTOR)
    balance_factor = 3.0
    teacher_needs = frozenset({"features"})
    params = (
        Param("WEIGHT", 0.5, non_negative),  # gamma
        # backbone ("res2".."res5") or FPN ("p2".."p6") names, paired in order
        Param("STUDENT_FEATURES", ["res4"], (non_empty, unique)),
        Param(
            "TEACHER_FEATURES",
            ["res4"],
            one_per("student_features", "STUDENT_FEATURES"),
            attr="teacher_names",
        ),
        Param("ADAPTATION_KERNEL", 1, one_of(1, 3), "kernel_size"),
        Param("NORM", "l2", one_of("l2", "l1")),
        # both maps standardized per channel before the error (not in the paper; HintLoss says
        # why): on by default, False for the paper's form
        Param("NORMALIZE", True, one_of(True, False)),
    )

    @configurable
    def __init__(self, *, student_channels, teacher_channels, **params):
        super().__init__()
        self.set_params(params)
        self.pairs = list(zip(self.student_features, self.teacher_names))
        self.hints = nn.ModuleDict(
            {
                s: HintLoss(sc, tc, self.kernel_size, self.norm, self.normalize)
                for s, sc, tc in zip(self.student_features, student_channels, teacher_channels)
            }
        )

    @classmethod
    def shape_args(cls, cfg, student_shapes, teacher_shapes):
        c = cfg.MODEL.DISTILL.HINT
        return dict(
            student_channels=[
                feature_shape(student_shapes, f, "student", "HINT").channels
                for f in c.STUDENT_FEATURES
            ],
            teacher_channels=[
                feature_shape(teacher_shapes, f, "teacher", "HINT").channels
                for f in c.TEACHER_FEATURES
            ],
        )

    def teacher_features(self):
        return [t for _, t in self.pairs]

    def check_shapes(self, student_shapes, teacher_shapes):
        for s_name, t_name in self.pairs:
            conv = self.hints[s_name].adaptation
            check_pair(
                "HINT",
                (s_name, t_name),
                (student_shapes, teacher_shapes),
                (conv.in_channels, conv.out_channels),
                "adaptation layer",
            )

    def forward(self, batch):
        losses = {}
        for s_name, t_name in self.pairs:
            s, t = batch.feature_pair(s_name, t_name)
            losses[self.term(s_name)] = self.weight * self.hints[s_name](s, t)
        return losses
