"""DistillTrainer: detectron2's DefaultTrainer with detkd's evaluator choice, global-norm
clipping, and DDP that also works on CPU (gloo)."""

import logging
import math
import os
import weakref

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..balance import BalanceReport, method_names
from ..checkpoint import Checkpointer
from ..config import changed_keys
from ..data.checks import FileNamingDatasetMapper, get_checked_dataset_dicts
from .clipping import add_global_norm_clipping
from .teacher_check import sanity_check_of

__all__ = ["DistillTrainer", "build_evaluator", "warn_changed_config", "wrap_ddp"]

logger = logging.getLogger(__name__)


def build_evaluator(dataset_name: str, output_folder: str):
    """COCOEvaluator for COCO-style datasets, PascalVOCDetectionEvaluator for VOC-style ones.

    Other datasets raise ``NotImplementedError``, which ``DefaultTrainer.test`` turns into a
    warning and no evaluation of that dataset, as in stock detectron2.
    """
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "coco":
        return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder)
    if evaluator_type == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    message = (
        f"No evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); it is not "
        "evaluated. Register it with detkd.data.register_coco_json or register_voc_folder"
    )
    logging.getLogger(__name__).warning(message)
    raise NotImplementedError(message)


def wrap_ddp(model, **kwargs):
    """detectron2's ``create_ddp_model`` pins ``device_ids`` to the local GPU; on CPU (gloo) DDP
    needs none.

    The teacher is not a registered submodule of DistillRCNN, so DDP never sees it.
    """
    kwargs.setdefault("broadcast_buffers", False)
    if not torch.cuda.is_available():
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


AMP_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def build_step_trainer(cfg, model, data_loader, optimizer):
    """detectron2's ``SimpleTrainer``, or ``AMPTrainer`` at ``SOLVER.AMP.PRECISION`` when
    ``SOLVER.AMP.ENABLED``."""
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    precision = cfg.SOLVER.AMP.PRECISION
    if precision not in AMP_PRECISIONS:
        raise ValueError(
            f"SOLVER.AMP.PRECISION must be one of {sorted(AMP_PRECISIONS)}, got {precision!r}"
        )
    return AMPTrainer(model, data_loader, optimizer, precision=AMP_PRECISIONS[precision])


def warn_changed_config(checkpoint: dict, cfg, path) -> list:
    """Warn once, listing each key of what determines the trained weights whose value in ``cfg``
    differs from the config ``checkpoint`` recorded (none recorded: nothing to compare, said at
    info level). Returns the changed ``(key, recorded, now)``."""
    recorded = checkpoint.get("config")
    if not recorded:
        logger.info("%s records no config: the resumed config is not compared with it", path)
        return []
    changed = changed_keys(CfgNode.load_cfg(recorded), cfg)
    if changed:
        logger.warning(
            "RESUME with a changed config: %s was trained with %s",
            path,
            "; ".join(f"{k} = {old!r} (now {new!r})" for k, old, new in changed),
        )
    return changed


class DistillTrainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, step for step, but with wrap_ddp (CPU multi-process support)
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = Checkpointer(
            model,
            cfg.OUTPUT_DIR,
            trainer=weakref.proxy(self),
            allow_unsafe_pickle=cfg.MODEL.DISTILL.ALLOW_UNSAFE_PICKLE,
            record={"config": cfg.dump()},  # a resume compares it with its own config
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        # the results of the last evaluation during or after training (None before one)
        self.last_eval_results = None
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """``DefaultTrainer.resume_or_load``; a resume also warns, once, naming each key of what
        determines the trained weights (:data:`detkd.config.TRAINING_SECTIONS`) whose value differs
        from the config the checkpoint recorded. A checkpoint of other distillation methods is
        refused before any step (:class:`detkd.checkpoint.ResumeMismatchError`)."""
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            # the checkpoint stores the iteration that finished: go on with the next one
            self.start_iter = self.iter + 1
            warn_changed_config(checkpoint or {}, self.cfg, self.checkpointer.loaded_from)

    def build_hooks(self):
        """The teacher sanity check first (:class:`~detkd.engine.teacher_check.TeacherSanityCheck`),
        detectron2's hooks, with an evaluation hook that keeps its results
        (:attr:`last_eval_results`), and :class:`detkd.balance.BalanceReport` before the writers
        (so each step's ratios reach ``metrics.json`` with its losses)."""
        ret = [
            hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self.evaluate)
            if isinstance(h, hooks.EvalHook)
            else h
            for h in super().build_hooks()
        ]
        check = sanity_check_of(self.cfg)
        if check is not None:
            ret.insert(0, check)
        b = self.cfg.MODEL.DISTILL.BALANCE
        report = BalanceReport(method_names(self.model), b.LOG_PERIOD, b.LOW, b.HIGH)
        writers = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
        ret.insert(writers[0] if writers else len(ret), report)
        return ret

    def evaluate(self):
        """Evaluate the model on ``TEST`` (:meth:`test`) and keep the results in
        :attr:`last_eval_results` (the evaluation hook calls it)."""
        self.last_eval_results = self.test(self.cfg, self.model)
        return self.last_eval_results

    def train(self):
        """``DefaultTrainer.train``: the loop, then ``TEST.EXPECTED_RESULTS`` checked against the
        last evaluation; returns it."""
        TrainerBase.train(self, self.start_iter, self.max_iter)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            verify_results(self.cfg, self.last_eval_results)
        return self.last_eval_results

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's default train loader (same dataset options), but with class indices
        checked against MODEL.ROI_HEADS.NUM_CLASSES as the data is loaded, and image read errors
        that name the file (detkd.data.checks)."""
        dataset = get_checked_dataset_dicts(
            cfg.DATASETS.TRAIN,
            cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
            if cfg.MODEL.KEYPOINT_ON
            else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        mapper = FileNamingDatasetMapper(cfg, is_train=True)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's default test loader (same dataset options), with the checks of
        build_train_loader."""
        names = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name)
        proposal_files = (
            [
                cfg.DATASETS.PROPOSAL_FILES_TEST[list(cfg.DATASETS.TEST).index(name)]
                for name in names
            ]
            if cfg.MODEL.LOAD_PROPOSALS
            else None
        )
        dataset = get_checked_dataset_dicts(
            names,
            cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            filter_empty=False,
            proposal_files=proposal_files,
        )
        mapper = FileNamingDatasetMapper(cfg, is_train=False)
        return build_detection_test_loader(
            dataset, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        optimizer = super().build_optimizer(cfg, model)
        clip = cfg.SOLVER.GLOBAL_GRAD_CLIP_NORM
        if not (math.isfinite(clip) and clip >= 0):
            raise ValueError(
                f"SOLVER.GLOBAL_GRAD_CLIP_NORM must be >= 0 and finite (0 = off), got {clip}"
            )
        if clip > 0:
            names = {id(p): n for n, p in model.named_parameters()}
            optimizer = add_global_norm_clipping(optimizer, clip, names)
        return optimizer
