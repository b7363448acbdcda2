"""Run detectron2's backbone, RPN and box head while keeping the tensors distillation needs.

These call detectron2's own methods (``anchor_generator``, ``rpn_head``,
``label_and_sample_anchors``, ``losses``, ``predict_proposals``, ``box_pooler``, ``box_head``,
``box_predictor``) in the order ``RPN.forward`` / ``StandardROIHeads`` do, so the detector's
behaviour and losses are unchanged; nothing of the heads is re-implemented.
"""

from contextlib import contextmanager
from typing import Dict, List

import torch
from detectron2.layers import cat
from detectron2.structures import Boxes

__all__ = [
    "run_backbone",
    "rpn_head_outputs",
    "run_rpn",
    "box_head_predictions",
    "capture_output",
    "feature_shapes",
]


@contextmanager
def capture_output(module):
    """Record the last output of ``module.forward`` inside the block, in ``captured["output"]``."""
    captured = {}
    handle = module.register_forward_hook(lambda _m, _i, out: captured.__setitem__("output", out))
    try:
        yield captured
    finally:
        handle.remove()


def run_backbone(backbone, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The backbone's outputs plus, for FPN-like backbones, its bottom-up maps (``res2``..)."""
    bottom_up = getattr(backbone, "bottom_up", None)
    if bottom_up is None:
        return dict(backbone(x))
    with capture_output(bottom_up) as captured:
        outputs = backbone(x)
    return {**captured["output"], **outputs}


def feature_shapes(model) -> Dict[str, object]:
    """ShapeSpec of every feature :func:`run_backbone` returns for ``model``."""
    shapes = {}
    bottom_up = getattr(model.backbone, "bottom_up", None)
    if bottom_up is not None:
        shapes.update(bottom_up.output_shape())
    shapes.update(model.backbone.output_shape())
    return shapes


def rpn_head_outputs(rpn, features: Dict[str, torch.Tensor]):
    """Per-level objectness ``(N, Hi*Wi*A)`` and deltas ``(N, Hi*Wi*A, box_dim)``, RPN.forward's
    layout."""
    objectness, deltas = rpn.rpn_head([features[f] for f in rpn.in_features])
    box_dim = rpn.anchor_generator.box_dim
    objectness = [o.permute(0, 2, 3, 1).flatten(1) for o in objectness]
    deltas = [
        d.view(d.shape[0], -1, box_dim, d.shape[-2], d.shape[-1])
        .permute(0, 3, 4, 1, 2)
        .flatten(1, -2)
        for d in deltas
    ]
    return objectness, deltas


def run_rpn(rpn, images, features, gt_instances):
    """Training-time ``RPN.forward`` that also returns its raw outputs and anchor sampling.

    Returns ``(proposals, losses, outputs)`` with ``outputs`` a dict of ``anchors`` ``(A, 4)``,
    ``objectness`` ``(N, A)``, ``deltas`` ``(N, A, 4)``, ``gt_labels`` ``(N, A)`` and
    ``gt_boxes`` ``(N, A, 4)``.
    """
    anchors = rpn.anchor_generator([features[f] for f in rpn.in_features])
    objectness, deltas = rpn_head_outputs(rpn, features)
    gt_labels, gt_boxes = rpn.label_and_sample_anchors(anchors, gt_instances)
    losses = rpn.losses(anchors, objectness, gt_labels, deltas, gt_boxes)
    proposals = rpn.predict_proposals(anchors, objectness, deltas, images.image_sizes)
    outputs = dict(
        anchors=Boxes.cat(anchors).tensor,
        objectness=cat(objectness, dim=1),
        deltas=cat(deltas, dim=1),
        gt_labels=torch.stack(gt_labels),
        gt_boxes=torch.stack(gt_boxes),
    )
    return proposals, losses, outputs


def box_head_predictions(roi_heads, features: Dict[str, torch.Tensor], boxes: List[Boxes]):
    """``(scores, deltas)`` of the box head of ``roi_heads`` on the given boxes."""
    pooled = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], boxes)
    return roi_heads.box_predictor(roi_heads.box_head(pooled))
