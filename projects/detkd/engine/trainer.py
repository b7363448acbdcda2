"""DistillTrainer: detectron2's DefaultTrainer with detkd's evaluator choice, global-norm
clipping, and DDP that also works on CPU (gloo)."""
import logging
import os
import weakref

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

from .clipping import add_global_norm_clipping

__all__ = ["DistillTrainer", "build_evaluator", "wrap_ddp"]


def build_evaluator(dataset_name: str, output_folder: str):
    """COCOEvaluator for COCO-style datasets, PascalVOCDetectionEvaluator for VOC-style ones."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "coco":
        return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder)
    if evaluator_type == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    raise ValueError(
        f"No evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); "
        "register it with detkd.data.register_coco_json or register_voc_folder"
    )


def wrap_ddp(model, **kwargs):
    """detectron2's ``create_ddp_model`` pins ``device_ids`` to the local GPU; on CPU (gloo) DDP needs none.

    The teacher is not a registered submodule of DistillRCNN, so DDP never sees it.
    """
    kwargs.setdefault("broadcast_buffers", False)
    if not torch.cuda.is_available():
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


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
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        optimizer = super().build_optimizer(cfg, model)
        if cfg.SOLVER.GLOBAL_GRAD_CLIP_NORM > 0:
            optimizer = add_global_norm_clipping(optimizer, cfg.SOLVER.GLOBAL_GRAD_CLIP_NORM)
        return optimizer
