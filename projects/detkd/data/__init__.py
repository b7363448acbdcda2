"""Datasets: the embedded demo data and registration helpers."""
from .register import (
    SHAPES_DATASETS,
    register_coco_json,
    register_shapes_datasets,
    register_voc_folder,
    shapes_root,
)
from .shapes import SHAPE_CLASSES, ShapesSpec, ensure_shapes_dataset
