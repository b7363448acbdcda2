"""DistillBatch: everything one training step hands to the distillers, for student and teacher.

The contract between the model and the methods: :class:`detkd.modeling.DistillRCNN` fills it and
the distillers read it. It is data (tensors, sampled proposals, box transforms and the teacher's
frozen ROI heads, which the head cross-forward runs on the student's features); it imports neither
the model nor the losses, so both import it. Selecting the RPN or the RCN samples lives here, once,
so the soft-CE and bounded-regression methods share one path for both stages.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Instances
from torch import nn
from torch.nn import functional as F

__all__ = ["SideOutputs", "DistillBatch", "STAGES"]

STAGES = ("rpn", "rcn")


@dataclass
class SideOutputs:
    """One model's intermediate outputs. Absent pieces are ``None``.

    ``features`` holds the backbone's bottom-up maps (``res2``..``res5``) and the neck's outputs
    (``p2``..``p6``; with the PAFPN backbone also ``fpn_p2``.. for the top-down maps).
    ``rpn_objectness`` is ``(N, A)`` and ``rpn_deltas`` ``(N, A, 4)`` over all anchors of all levels
    (detectron2's order); ``rcn_scores`` is ``(R, K + 1)`` (background last) and ``rcn_deltas``
    ``(R, 4K)`` or ``(R, 4)`` over the student's ``R`` sampled proposals; ``rcn_pooled`` the
    ``(R, C, h, w)`` features the box head read for them (the student's, when a method needs them).
    """

    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    rpn_objectness: Optional[torch.Tensor] = None
    rpn_deltas: Optional[torch.Tensor] = None
    rcn_scores: Optional[torch.Tensor] = None
    rcn_deltas: Optional[torch.Tensor] = None
    rcn_pooled: Optional[torch.Tensor] = None


@dataclass
class DistillBatch:
    student: SideOutputs
    teacher: Optional[SideOutputs]
    # GT boxes (XYXY) per image, in the student's input pixels, and the student's image sizes
    gt_boxes: List[torch.Tensor]
    image_sizes: List[Tuple[int, int]]
    # stride of each student feature map, in student input pixels
    strides: Dict[str, float]
    # teacher input pixels per student input pixel (1 / STUDENT_INPUT_SCALE)
    teacher_scale: float = 1.0
    # "teacher_to_student" or "student_to_teacher": how feature maps of different size are matched
    feature_resize: str = "teacher_to_student"
    # RPN sampling of the student: anchors (A, 4), labels (N, A) in {-1, 0, 1}, matched GT (N, A, 4)
    rpn_anchors: Optional[torch.Tensor] = None
    rpn_gt_labels: Optional[torch.Tensor] = None
    rpn_gt_boxes: Optional[torch.Tensor] = None
    rpn_box2box: Optional[Box2BoxTransform] = None
    # what detectron2 divides the RPN box loss by: RPN.BATCH_SIZE_PER_IMAGE x images
    rpn_loss_normalizer: float = 1.0
    # RCN sampling of the student: proposals with gt_classes / gt_boxes
    rcn_proposals: Optional[List[Instances]] = None
    rcn_box2box: Optional[Box2BoxTransform] = None
    num_classes: int = 0
    # the teacher's frozen ROI heads (box_head, box_predictor), for a method that runs them on the
    # student's pooled features with gradients to those (the head cross-forward); None without a
    # teacher
    teacher_roi_heads: Optional[nn.Module] = None
    # MODEL.DISTILL.BALANCE.NORMALIZE_BY_AREA: see per_area
    normalize_by_area: bool = False

    # ----- features -------------------------------------------------------------------------
    def per_area(self, value: torch.Tensor, feature_map: torch.Tensor) -> torch.Tensor:
        """``value`` divided by ``feature_map``'s H*W when area normalisation is on: for terms that
        sum over a level's positions, so that levels (and resolutions) weigh alike."""
        if not self.normalize_by_area:
            return value
        return value / (feature_map.shape[-2] * feature_map.shape[-1])

    def feature_pair(
        self, student_name: str, teacher_name: str
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher maps of one distilled pair, resized to one size (see
        feature_resize)."""
        s = _lookup(self.student.features, student_name, "student")
        t = _lookup(self.teacher.features, teacher_name, "teacher")
        if s.shape[-2:] != t.shape[-2:]:
            if self.feature_resize == "teacher_to_student":
                t = F.interpolate(t, size=s.shape[-2:], mode="bilinear", align_corners=False)
            else:
                s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        return s, t

    def boxes_on(self, grid: str):
        """GT boxes and image sizes in the input pixels of ``grid`` ("student" or "teacher")."""
        if grid == "teacher" and self.teacher_scale != 1.0:
            f = self.teacher_scale
            sizes = [(int(round(h * f)), int(round(w * f))) for h, w in self.image_sizes]
            return [b * f for b in self.gt_boxes], sizes
        return self.gt_boxes, self.image_sizes

    # ----- shared RPN / RCN sample selection --------------------------------------------------
    def classification_pairs(self, stage: str):
        """``(student_logits, teacher_logits)`` of the stage's sampled rows. RPN: the objectness
        logits ``(S,)`` of the anchors detectron2 sampled for its objectness loss. RCN: the class
        logits ``(R, K + 1)`` of every sampled proposal, background last."""
        _check_stage(stage)
        if stage == "rpn":
            sampled = self.rpn_gt_labels >= 0
            return self.student.rpn_objectness[sampled], self.teacher.rpn_objectness[sampled]
        return self.student.rcn_scores, self.teacher.rcn_scores

    def regression_triplets(self, stage: str):
        """``(student_deltas, teacher_deltas, target_deltas, normalizer)`` on foreground samples.

        Deltas are ``(F, 4)``; class-specific RCN deltas are taken at the sample's GT class.
        ``normalizer`` is what detectron2 divides that stage's box loss by (RPN: anchors per image x
        images; RCN: every sampled proposal).
        """
        _check_stage(stage)
        if stage == "rpn":
            fg = self.rpn_gt_labels == 1
            anchors = self.rpn_anchors.unsqueeze(0).expand_as(self.rpn_gt_boxes)[fg]
            target = self.rpn_box2box.get_deltas(anchors, self.rpn_gt_boxes[fg])
            return (
                self.student.rpn_deltas[fg],
                self.teacher.rpn_deltas[fg],
                target,
                self.rpn_loss_normalizer,
            )
        gt_classes, fg = self._rcn_foreground()
        boxes = torch.cat([p.proposal_boxes.tensor for p in self.rcn_proposals])[fg]
        # detectron2 sets gt_boxes only on images that have GT; their proposals are all background
        gt = torch.cat(
            [
                (p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor
                for p in self.rcn_proposals
            ]
        )[fg]
        target = self.rcn_box2box.get_deltas(boxes, gt)
        return (
            self.rcn_foreground_deltas(self.student.rcn_deltas),
            self.rcn_foreground_deltas(self.teacher.rcn_deltas),
            target,
            float(gt_classes.numel()),
        )

    def rcn_foreground_deltas(self, deltas: torch.Tensor) -> torch.Tensor:
        """``(F, 4)``: of ``deltas`` (one row per sampled proposal, ``(R, 4K)`` or ``(R, 4)``), the
        foreground proposals' rows at their GT class."""
        gt_classes, fg = self._rcn_foreground()
        return _deltas_for_class(deltas[fg], gt_classes[fg])

    def _rcn_foreground(self):
        gt_classes = torch.cat([p.gt_classes for p in self.rcn_proposals])
        return gt_classes, (gt_classes >= 0) & (gt_classes < self.num_classes)


def _deltas_for_class(deltas: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    if deltas.shape[1] == 4:  # class-agnostic
        return deltas
    per_class = deltas.reshape(deltas.shape[0], deltas.shape[1] // 4, 4)
    return per_class[torch.arange(deltas.shape[0], device=deltas.device), classes]


def _lookup(features: Dict[str, torch.Tensor], name: str, side: str) -> torch.Tensor:
    if name not in features:
        raise KeyError(f"{side} has no feature {name!r}; available: {sorted(features)}")
    return features[name]


def _check_stage(stage: str):
    if stage not in STAGES:
        raise ValueError(f"unknown distillation target {stage!r}; expected one of {STAGES}")
