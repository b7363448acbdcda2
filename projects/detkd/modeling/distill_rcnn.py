"""DistillRCNN: a student Faster R-CNN trained with a frozen teacher (or by itself, for MSSD).

Training step::

    images -> student backbone (+ bottom-up taps) -> RPN (anchors, sampling, losses, proposals)
           -> ROI heads (sampled proposals, box head, losses)            = detector losses
    images -> teacher (eval, no_grad, full resolution) -> backbone -> RPN head on the same anchors
           -> box head on the student's sampled proposals                 (only what is needed)
    DistillBatch -> each distiller -> named, weighted terms               = distillation losses

In eval mode only the student runs and its predictions are returned, so every detectron2
evaluator works unchanged.

How the teacher is held: it is *not* a registered submodule. ``state_dict``, checkpoints, the
optimizer and DDP therefore never see it: checkpoints hold the student and the distillers'
own modules (adaptation, align, GcBlock, mask heads), a resumed run reloads the teacher from its
own weights, and DDP syncs no teacher gradients. ``to()``/``cuda()`` still move it (``_apply``)
and ``train()`` keeps it in eval mode.
"""

import logging
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou
from torch import nn
from torch.nn import functional as F

from ..balance import LossBalancer, RunawayGuard, balance_factors
from ..batch import DistillBatch, SideOutputs
from ..distillers import Distiller, build_distillers
from ..schedule import DistillSchedule
from ..utils import current_iteration, put_scalar
from .heads import (
    box_head_predictions,
    capture_output,
    feature_shapes,
    rpn_head_outputs,
    run_backbone,
    run_rpn,
)
from .teacher import freeze, teacher_from_config

__all__ = ["DistillRCNN", "inherit_from_teacher"]

logger = logging.getLogger(__name__)


def inherit_from_teacher(
    student: nn.Module, teacher: nn.Module, prefixes: Sequence[str]
) -> List[str]:
    """Copy teacher parameters/buffers into the student where name (under ``prefixes``) and shape
    match.

    Returns the copied names; raises if none matched (the switch would silently do nothing).
    """
    teacher_state = teacher.state_dict()
    copied = []
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            if not any(name.startswith(p) for p in prefixes):
                continue
            source = teacher_state.get(name)
            if source is not None and source.shape == tensor.shape:
                tensor.copy_(source)
                copied.append(name)
    if not copied:
        raise ValueError(
            f"MODEL.DISTILL.INHERIT is enabled but no student parameter under {list(prefixes)} "
            "matches a teacher parameter in name and shape"
        )
    logger.info("Inherited %d tensors from the teacher: %s", len(copied), ", ".join(copied))
    return copied


def _drop_empty_boxes(instances: Instances) -> Instances:
    """Remove zero-width/height GT boxes, as detectron2's DatasetMapper does
    (filter_empty_instances): their regression targets are log(0). Logged as
    ``distill/empty_gt_dropped``."""
    keep = instances.gt_boxes.nonempty()
    if bool(keep.all()):
        return instances
    put_scalar("distill/empty_gt_dropped", float((~keep).sum()))
    return instances[keep]


def _rescale_instances(instances: Instances, scale: float, image_size) -> Instances:
    out = Instances(image_size)
    for k, v in instances.get_fields().items():
        out.set(k, v)
    out.gt_boxes = Boxes(instances.gt_boxes.tensor * scale)
    return out


def _check_teacher_finite(out: SideOutputs, feature_names: Optional[Sequence[str]]) -> None:
    """Raise ``FloatingPointError`` naming every teacher output a distiller reads that holds NaN or
    inf (a diverged teacher checkpoint). One device sync for all of them."""
    named = {
        f"features[{k!r}]": v
        for k, v in out.features.items()
        if feature_names is None or k in feature_names
    }
    named.update(
        {
            k: getattr(out, k)
            for k in ("rpn_objectness", "rpn_deltas", "rcn_scores", "rcn_deltas")
            if getattr(out, k) is not None
        }
    )
    if not named:
        return
    finite = torch.stack([torch.isfinite(v).all() for v in named.values()])
    if bool(finite.all()):
        return
    bad = [k for k, ok in zip(named, finite.tolist()) if not ok]
    raise FloatingPointError(
        f"the teacher's outputs {', '.join(bad)} hold NaN or inf; "
        "the distillation terms would consume them. "
        "Is the teacher checkpoint (MODEL.DISTILL.TEACHER.WEIGHTS) from a diverged run?"
    )


@META_ARCH_REGISTRY.register()
class DistillRCNN(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        student: GeneralizedRCNN,
        teacher: Optional[nn.Module] = None,
        distillers: Sequence[Distiller] = (),
        student_input_scale: float = 1.0,
        feature_resize: str = "teacher_to_student",
        inherit_prefixes: Optional[Sequence[str]] = None,
        balancer: Optional[LossBalancer] = None,
        normalize_by_area: bool = False,
        teacher_min_recall: float = 0.3,
        schedule: Optional[DistillSchedule] = None,
        guard: Optional[RunawayGuard] = None,
    ):
        """
        Args:
            student: the detector being trained (a GeneralizedRCNN with RPN + StandardROIHeads).
            teacher: a loaded detector; it is frozen here. ``None`` for self-distillation.
            distillers: the enabled methods.
            student_input_scale: the student sees the image scaled by this (Chen et al. 2017, 4.1).
            feature_resize: "teacher_to_student" or "student_to_teacher", for maps of unequal size.
            inherit_prefixes: if given, initialise these student parameters from the teacher.
            balancer: the automatic balance of the methods' terms (``detkd.balance``); by default
                ``MODEL.DISTILL.BALANCE``'s defaults (on, 50 iterations, target 1).
            normalize_by_area: divide each level's summed feature terms by the level's H*W.
            teacher_min_recall: the teacher sanity check's threshold (first training step): below
                it, a warning.
            schedule: when the distillation terms count (``detkd.schedule``); default: always.
            guard: the runaway-term check of every step (``detkd.balance.RunawayGuard``); default:
                its defaults.
        """
        super().__init__()
        if not (0 < student_input_scale <= 1):
            raise ValueError(
                f"MODEL.DISTILL.STUDENT_INPUT_SCALE must be in (0, 1], got {student_input_scale}"
            )
        if feature_resize not in ("teacher_to_student", "student_to_teacher"):
            raise ValueError(
                f"MODEL.DISTILL.FEATURE_RESIZE must be 'teacher_to_student' or "
                f"'student_to_teacher', got {feature_resize!r}"
            )
        self.student = student
        object.__setattr__(self, "teacher", freeze(teacher) if teacher is not None else None)
        names = [d.name for d in distillers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"DistillRCNN: more than one distiller is named {repeated}")
        # held by name: checkpoint keys are distillers.<name>.*, whatever else is enabled
        self.distillers = nn.ModuleDict({d.name: d for d in distillers})
        self.normalize_by_area = bool(normalize_by_area)
        # by default as MODEL.DISTILL.BALANCE's defaults: automatic, a running window, each
        # method at its class's balance_factor
        self.balancer = balancer or LossBalancer(
            [d.name for d in self.distillers.values() if d.auto_balanced],
            enabled=True,
            unscaled=[d.name for d in self.distillers.values() if not d.auto_balanced],
            factors={d.name: d.balance_factor for d in self.distillers.values() if d.auto_balanced},
        )
        self.schedule = schedule or DistillSchedule()
        self.guard = guard or RunawayGuard({d.name: d.config_block for d in distillers})
        self._steps = 0  # training forwards of this process (the iteration outside a trainer)
        self.teacher_min_recall = float(teacher_min_recall)
        self.student_input_scale = float(student_input_scale)
        self.feature_resize = feature_resize
        self.teacher_needs = frozenset().union(*[d.teacher_needs for d in self.distillers.values()])
        # the teacher features some distiller reads (None: a distiller reads them all)
        read = [
            d.teacher_features() for d in self.distillers.values() if "features" in d.teacher_needs
        ]
        self._teacher_features_read = None if None in read else sorted(set().union(*read))
        self._check_compatible()
        student_shapes = feature_shapes(student)
        teacher_shapes = feature_shapes(teacher) if teacher is not None else None
        for distiller in self.distillers.values():
            distiller.check_shapes(student_shapes, teacher_shapes)
        # stride of every student feature, in student input pixels (fixed by the architecture)
        self._student_strides = {k: float(v.stride) for k, v in student_shapes.items()}
        self._size_divisibility = self._common_size_divisibility()
        self.inherited = (
            inherit_from_teacher(student, teacher, inherit_prefixes)
            if inherit_prefixes is not None
            else []
        )

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DISTILL
        student = META_ARCH_REGISTRY.get(d.STUDENT_META_ARCHITECTURE)(cfg)
        teacher = None
        if d.TEACHER.CONFIG_FILE:
            teacher = teacher_from_config(
                d.TEACHER.CONFIG_FILE,
                d.TEACHER.WEIGHTS,
                d.TEACHER.OPTS,
                cfg.MODEL.DEVICE,
                ignored_key_prefixes=d.TEACHER.IGNORED_KEY_PREFIXES,
                allow_unsafe_pickle=d.ALLOW_UNSAFE_PICKLE,
            )
        elif d.TEACHER.WEIGHTS:
            raise ValueError(
                "MODEL.DISTILL.TEACHER.WEIGHTS is set but TEACHER.CONFIG_FILE is empty"
            )
        distillers = build_distillers(
            cfg, feature_shapes(student), feature_shapes(teacher) if teacher is not None else None
        )
        if d.INHERIT.ENABLED and teacher is None:
            raise ValueError(
                "MODEL.DISTILL.INHERIT.ENABLED needs a teacher (MODEL.DISTILL.TEACHER.CONFIG_FILE)"
            )
        return dict(
            student=student,
            teacher=teacher,
            distillers=distillers,
            student_input_scale=d.STUDENT_INPUT_SCALE,
            feature_resize=d.FEATURE_RESIZE,
            inherit_prefixes=list(d.INHERIT.PREFIXES) if d.INHERIT.ENABLED else None,
            balancer=LossBalancer(
                [m.name for m in distillers if m.auto_balanced],
                enabled=d.BALANCE.AUTO,
                iters=d.BALANCE.AUTO_ITERS,
                target=d.BALANCE.AUTO_TARGET,
                unscaled=[m.name for m in distillers if not m.auto_balanced],
                window=d.BALANCE.AUTO_WINDOW,
                window_max_ratio=d.BALANCE.AUTO_WINDOW_MAX_RATIO,
                factors=balance_factors(cfg, distillers),
            ),
            normalize_by_area=d.BALANCE.NORMALIZE_BY_AREA,
            teacher_min_recall=d.TEACHER.SANITY_MIN_RECALL,
            schedule=DistillSchedule(d.SCHEDULE.WARMUP_ITERS, d.SCHEDULE.STOP_ITER),
            guard=RunawayGuard(
                {m.name: m.config_block for m in distillers}, d.GUARD.ITERS, d.GUARD.MAX_RATIO
            ),
        )

    # ----- module plumbing ------------------------------------------------------------------
    @property
    def device(self):
        return self.student.device

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # ----- checks done once, before training -------------------------------------------------
    def _check_compatible(self):
        if self.teacher_needs and self.teacher is None:
            raise ValueError(
                "a distiller needs a teacher but none is configured (MODEL.DISTILL.TEACHER)"
            )
        s, t = self.student, self.teacher
        if t is not None and getattr(s, "input_format", None) != getattr(t, "input_format", None):
            raise ValueError(
                f"student and teacher expect different INPUT.FORMAT ({s.input_format} vs "
                f"{t.input_format}); both must read the same images"
            )
        if "rpn" in self.teacher_needs:
            if self.student_input_scale != 1.0:
                blocks = [
                    d.config_block for d in self.distillers.values() if "rpn" in d.teacher_needs
                ]
                raise ValueError(
                    "RPN distillation needs the teacher's RPN on the student's anchors, but with "
                    f"MODEL.DISTILL.STUDENT_INPUT_SCALE={self.student_input_scale} "
                    "the feature maps differ in size; "
                    f"remove 'rpn' from the TARGETS of MODEL.DISTILL.{', '.join(blocks)}"
                )
            sa, ta = s.proposal_generator.anchor_generator, t.proposal_generator.anchor_generator
            s_cells = [c.cpu() for c in sa.cell_anchors]
            t_cells = [c.cpu() for c in ta.cell_anchors]
            same = (
                list(sa.strides) == list(ta.strides)
                and len(s_cells) == len(t_cells)
                and all(
                    a.shape == b.shape and torch.allclose(a, b) for a, b in zip(s_cells, t_cells)
                )
                and len(s.proposal_generator.in_features) == len(t.proposal_generator.in_features)
            )
            if not same:
                raise ValueError(
                    "RPN distillation needs identical anchors in student and teacher "
                    f"(strides {list(sa.strides)} vs {list(ta.strides)}, anchors per cell "
                    f"{[c.shape[0] for c in s_cells]} vs {[c.shape[0] for c in t_cells]}, "
                    f"RPN in_features {s.proposal_generator.in_features} "
                    f"vs {t.proposal_generator.in_features})"
                )
            if (
                s.proposal_generator.box2box_transform.weights
                != t.proposal_generator.box2box_transform.weights
            ):
                raise ValueError(
                    "RPN distillation needs the same MODEL.RPN.BBOX_REG_WEIGHTS "
                    "in student and teacher"
                )
        if any(d.reads_student_pooled for d in self.distillers.values()):
            sizes = [tuple(m.roi_heads.box_pooler.output_size) for m in (s, t)]
            if sizes[0] != sizes[1]:
                raise ValueError(
                    "the head cross-forward feeds the student's pooled region features to the "
                    f"teacher's box head, but they pool {sizes[0]} and {sizes[1]} "
                    "(MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION)"
                )
        if "rcn" in self.teacher_needs:
            for attr in ("box_pooler", "box_head", "box_predictor", "box_in_features"):
                if not hasattr(t.roi_heads, attr):
                    raise ValueError(
                        "RCN distillation needs a teacher with StandardROIHeads-like heads "
                        f"(no {attr})"
                    )
            if s.roi_heads.num_classes != t.roi_heads.num_classes:
                raise ValueError(
                    "RCN distillation compares class logits, but the student has "
                    f"{s.roi_heads.num_classes} classes and the teacher {t.roi_heads.num_classes} "
                    "(MODEL.ROI_HEADS.NUM_CLASSES)"
                )
            sw = s.roi_heads.box_predictor.box2box_transform.weights
            tw = t.roi_heads.box_predictor.box2box_transform.weights
            if sw != tw:
                raise ValueError(
                    f"RCN distillation needs the same MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS "
                    f"in student and teacher, got {sw} vs {tw}"
                )

    def _common_size_divisibility(self) -> int:
        div = max(self.student.backbone.size_divisibility, 1)
        if self.teacher is not None:
            div = max(div, self.teacher.backbone.size_divisibility)
        div = div / self.student_input_scale
        if abs(div - round(div)) > 1e-6:
            raise ValueError(
                f"MODEL.DISTILL.STUDENT_INPUT_SCALE={self.student_input_scale} must divide the "
                "backbone's size divisibility into a whole number (use 1/2, 1/4, ...)"
            )
        return int(round(div))

    # ----- inputs ------------------------------------------------------------------------------
    def _normalized(self, model, batched_inputs, divisibility) -> ImageList:
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - model.pixel_mean) / model.pixel_std for x in images]
        return ImageList.from_tensors(
            images, divisibility, padding_constraints=model.backbone.padding_constraints
        )

    def _student_images(self, batched_inputs, divisibility) -> ImageList:
        images = self._normalized(self.student, batched_inputs, divisibility)
        scale = self.student_input_scale
        if scale == 1.0:
            return images
        h, w = images.tensor.shape[-2:]
        tensor = F.interpolate(
            images.tensor,
            size=(int(round(h * scale)), int(round(w * scale))),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        sizes = [(int(round(ih * scale)), int(round(iw * scale))) for ih, iw in images.image_sizes]
        return ImageList(tensor, sizes)

    def student_images(self, batched_inputs) -> ImageList:
        """The student's input batch as a training step builds it: normalised, padded to the size
        divisibility both models need, scaled by ``student_input_scale``."""
        return self._student_images(batched_inputs, self._size_divisibility)

    def teacher_images(self, batched_inputs) -> ImageList:
        """The teacher's input batch as a training step builds it (full resolution)."""
        if self.teacher is None:
            raise ValueError("this DistillRCNN has no teacher")
        return self._normalized(self.teacher, batched_inputs, self._size_divisibility)

    # ----- forward: student pass -> teacher pass -> distill -> balance --------------------------
    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("DistillRCNN training needs 'instances' in every input dict")
        losses, batch = self.student_pass(batched_inputs)
        if not self.distillers:
            return losses
        if self.teacher_needs:
            batch.teacher = self.teacher_pass(batched_inputs, batch)
        iteration = current_iteration()
        iteration = self._steps if iteration is None else iteration
        self._steps += 1
        losses.update(self.distill(batch, losses, iteration))
        return self.balance(losses, iteration)

    def student_pass(self, batched_inputs: List[Dict]):
        """The student's training forward: its detector losses and the :class:`DistillBatch` of
        what it computed (features, RPN and RCN outputs and samples; no teacher yet)."""
        student = self.student
        images = self._student_images(batched_inputs, self._size_divisibility)
        gt = [_drop_empty_boxes(x["instances"].to(self.device)) for x in batched_inputs]
        if self.student_input_scale != 1.0:
            gt = [
                _rescale_instances(g, self.student_input_scale, size)
                for g, size in zip(gt, images.image_sizes)
            ]
        features = run_backbone(student.backbone, images.tensor)
        proposals, losses, rpn = run_rpn(student.proposal_generator, images, features, gt)
        with (
            capture_output(student.roi_heads.box_predictor) as rcn_out,
            capture_output(student.roi_heads.box_pooler) as pooled_out,
        ):
            sampled, rcn_losses = student.roi_heads(images, features, proposals, gt)
        losses.update(rcn_losses)
        outputs = SideOutputs(features, rpn["objectness"], rpn["deltas"], *rcn_out["output"])
        outputs.rcn_pooled = pooled_out.get("output")
        batch = DistillBatch(
            student=outputs,
            teacher=None,
            gt_boxes=[g.gt_boxes.tensor for g in gt],
            image_sizes=list(images.image_sizes),
            strides=self._student_strides,
            teacher_scale=1.0 / self.student_input_scale,
            feature_resize=self.feature_resize,
            rpn_anchors=rpn["anchors"],
            rpn_gt_labels=rpn["gt_labels"],
            rpn_gt_boxes=rpn["gt_boxes"],
            rpn_box2box=student.proposal_generator.box2box_transform,
            rpn_loss_normalizer=float(student.proposal_generator.batch_size_per_image * len(gt)),
            rcn_proposals=sampled,
            rcn_box2box=student.roi_heads.box_predictor.box2box_transform,
            num_classes=student.roi_heads.num_classes,
            teacher_roi_heads=self.teacher.roi_heads if self.teacher is not None else None,
            normalize_by_area=self.normalize_by_area,
        )
        return losses, batch

    def distill(self, batch: DistillBatch, losses: Dict, iteration: int) -> Dict:
        """Every method's terms on ``batch`` (each checked to be named ``loss_<name>_<term>`` and
        to overwrite nothing), and the detector losses a method rescales (Chen's ``1 - mu``), as
        the schedule has them at ``iteration``. Returns the losses to add or replace."""
        out = {}
        for distiller in self.distillers.values():
            for key, scale in distiller.hard_loss_scales().items():
                out[key] = losses[key] * self.schedule.scaled_hard_loss(scale, iteration)
            terms = distiller(batch)
            misnamed = [k for k in terms if not k.startswith(f"loss_{distiller.name}_")]
            if misnamed:
                raise RuntimeError(
                    f"{type(distiller).__name__} returned {misnamed}: every term of a method is "
                    f"named loss_{distiller.name}_<term>"
                )
            clash = set(terms) & (set(losses) | set(out))
            if clash:
                raise RuntimeError(
                    f"distillation terms {sorted(clash)} would overwrite existing losses"
                )
            out.update(terms)
        return out

    def balance(self, losses: Dict, iteration: int) -> Dict:
        """The automatic balance (measured on the terms as the methods weigh them), then the
        schedule's factor, then the runaway guard."""
        losses = self.balancer(losses)
        if self.schedule.active:
            factor = self.schedule.factor(iteration)
            put_scalar("distill/schedule", factor)
            prefixes = tuple(f"loss_{name}_" for name in self.distillers)
            losses = {k: v * factor if k.startswith(prefixes) else v for k, v in losses.items()}
        self.guard(losses, iteration)
        return losses

    @torch.no_grad()
    def teacher_recall(self, batched_inputs, gt_instances: Sequence[Instances], iou: float = 0.5):
        """``(recalled, total)``: of the GT boxes (in the input's pixels), how many the teacher
        finds among its detections at IoU >= ``iou`` with the right class. A teacher that is
        untrained, did not load, or learned other classes (or another class order) finds almost
        none."""
        predictions = self.teacher.inference(batched_inputs, do_postprocess=False)
        recalled, total = 0, 0
        for found, expected in zip(predictions, gt_instances):
            if len(expected) == 0:
                continue
            found = found.to(expected.gt_boxes.device)
            overlap = pairwise_iou(expected.gt_boxes, found.pred_boxes)
            same_class = expected.gt_classes[:, None] == found.pred_classes[None]
            recalled += int(((overlap >= iou) & same_class).any(dim=1).sum())
            total += len(expected)
        return recalled, total

    def check_teacher(self, batched_inputs) -> bool:
        """The teacher sanity check (run before the first step by
        :class:`detkd.engine.TeacherSanityCheck`): log the teacher's recall of the GT boxes of
        ``batched_inputs`` (``teacher/sanity_recall``), warn loudly under ``teacher_min_recall``.
        Returns False when they have no GT box."""
        gt = [_drop_empty_boxes(x["instances"].to(self.device)) for x in batched_inputs]
        recalled, total = self.teacher_recall(batched_inputs, gt)
        if total == 0:
            return False
        recall = recalled / total
        put_scalar("teacher/sanity_recall", recall)
        found = (
            f"the teacher finds {recalled} of the {total} ground-truth boxes of the first training "
            "images "
            f"(recall {recall:.2f} at IoU 0.5 with the right class"
        )
        if recall < self.teacher_min_recall:
            logger.warning(
                f"TEACHER SANITY CHECK FAILED: {found}, threshold {self.teacher_min_recall:.2f}). "
                "Is MODEL.DISTILL.TEACHER.WEIGHTS trained, on this data set's classes, in this "
                "class order? `train_net.py --eval-teacher` evaluates it in full."
            )
        else:
            logger.info(f"Teacher sanity check: {found})")
        return True

    @torch.no_grad()
    def teacher_pass(self, batched_inputs, batch: DistillBatch) -> SideOutputs:
        """The teacher's outputs the methods need (``teacher_needs``), on the student's anchors
        and sampled proposals; each read output checked to be finite."""
        teacher = self.teacher
        if teacher.training:  # someone called teacher.train(); its BN must not update
            teacher.eval()
        images = self._normalized(teacher, batched_inputs, self._size_divisibility)
        feats = run_backbone(teacher.backbone, images.tensor)
        out = SideOutputs(features=feats)
        if "rpn" in self.teacher_needs:
            objectness, deltas = rpn_head_outputs(teacher.proposal_generator, feats)
            out.rpn_objectness, out.rpn_deltas = torch.cat(objectness, 1), torch.cat(deltas, 1)
            if out.rpn_objectness.shape != batch.student.rpn_objectness.shape:
                raise ValueError(
                    "RPN distillation: teacher and student produce different anchor sets "
                    f"({tuple(out.rpn_objectness.shape)} vs "
                    f"{tuple(batch.student.rpn_objectness.shape)}); "
                    "their feature maps or anchors differ"
                )
        if "rcn" in self.teacher_needs:
            boxes = [
                Boxes(p.proposal_boxes.tensor * batch.teacher_scale) for p in batch.rcn_proposals
            ]
            out.rcn_scores, out.rcn_deltas = box_head_predictions(teacher.roi_heads, feats, boxes)
        _check_teacher_finite(out, self._teacher_features_read)
        return out

    def inference(self, batched_inputs, do_postprocess: bool = True):
        """The student's predictions, as ``GeneralizedRCNN.inference`` returns them."""
        if self.student_input_scale == 1.0:
            return self.student.inference(batched_inputs, do_postprocess=do_postprocess)
        div = int(round(self.student.backbone.size_divisibility / self.student_input_scale))
        images = self._student_images(batched_inputs, div)
        features = self.student.backbone(images.tensor)
        proposals, _ = self.student.proposal_generator(images, features, None)
        results, _ = self.student.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return results
        return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
