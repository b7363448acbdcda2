"""Datasets: the embedded demo data, registration helpers, and load-time checks."""

from .checks import (
    FileNamingDatasetMapper,
    ImageReadError,
    check_class_indices,
    check_thing_classes,
    get_checked_dataset_dicts,
)
from .register import (
    SHAPES_DATASETS,
    register_coco_json,
    register_datasets,
    register_shapes_datasets,
    register_voc_folder,
    shapes_root,
)
from .shapes import SHAPE_CLASSES, ShapesSpec, ensure_shapes_dataset
