"""DistillTrainer: detectron2's DefaultTrainer with detkd's evaluator choice and clipping."""
import os

from detectron2.engine import DefaultTrainer
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, PascalVOCDetectionEvaluator

from .clipping import add_global_norm_clipping

__all__ = ["DistillTrainer", "build_evaluator"]


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


class DistillTrainer(DefaultTrainer):
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
