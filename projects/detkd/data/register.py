"""Dataset registration: detectron2's builtins, custom COCO-json / VOC folders, and the demo data.

detectron2 registers its builtin names (``coco_2017_train``, ``voc_2007_trainval``, ...) under
``$DETECTRON2_DATASETS`` (default ``./datasets``) when ``detectron2.data`` is imported; see
``datasets/README.md`` for the layout. For your own data use :func:`register_coco_json` or
:func:`register_voc_folder`. The embedded demo data is ``detkd_shapes_{train,val}`` (COCO form)
and ``detkd_shapes_voc_{train,val}`` (VOC form), generated on first use.
"""

import os
from typing import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.pascal_voc import load_voc_instances

from .shapes import SHAPE_CLASSES, ShapesSpec, ensure_shapes_dataset

__all__ = [
    "register_coco_json",
    "register_voc_folder",
    "register_shapes_datasets",
    "register_datasets",
    "shapes_root",
    "SHAPES_DATASETS",
]

SHAPES_DATASETS = (
    "detkd_shapes_train",
    "detkd_shapes_val",
    "detkd_shapes_voc_train",
    "detkd_shapes_voc_val",
)


def register_coco_json(name: str, json_file: str, image_root: str):
    """Register a COCO-format detection dataset (evaluated with COCOEvaluator)."""
    register_coco_instances(name, {}, json_file, image_root)


def register_voc_folder(
    name: str, dirname: str, split: str, class_names: Sequence[str], year: int = 2012
):
    """Register a VOC-layout folder (``Annotations/``, ``JPEGImages/``,
    ``ImageSets/Main/{split}.txt``), evaluated with PascalVOCDetectionEvaluator (``year=2007`` uses
    the VOC2007 11-point metric)."""
    class_names = list(class_names)
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, class_names))
    MetadataCatalog.get(name).set(
        thing_classes=class_names,
        dirname=dirname,
        year=year,
        split=split,
        evaluator_type="pascal_voc",
    )


def shapes_root() -> str:
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "detkd_shapes")


def registered_shapes_root() -> str:
    """The folder the registered ``detkd_shapes_*`` datasets were read from."""
    json_file = MetadataCatalog.get("detkd_shapes_train").json_file
    return os.path.dirname(os.path.dirname(json_file))


def register_datasets(names) -> None:
    """Register what detkd provides among the dataset ``names`` a config uses: the demo datasets
    (generated on first use) when one of them is named. detectron2's builtins (``coco_2017_*``,
    ``voc_*``) register themselves; your own go through :func:`register_coco_json` or
    :func:`register_voc_folder`. Entry points call this before building loaders."""
    if any(name in SHAPES_DATASETS for name in names):
        register_shapes_datasets()


def register_shapes_datasets(root: str = None, spec: ShapesSpec = None, generate: bool = True):
    """Generate (unless already there) and register the demo datasets under ``root``. Idempotent.

    Generation happens here, not lazily, so evaluators that open the files find them and
    several training processes never write the same files at once. ``generate=False`` registers
    a dataset another process generated (worker processes use it), and fails if there is none.
    """
    root = root or shapes_root()
    if "detkd_shapes_train" in DatasetCatalog.list():
        return
    if generate:
        ensure_shapes_dataset(root, spec or ShapesSpec())
    elif not os.path.isfile(os.path.join(root, "SPEC.json")):
        raise FileNotFoundError(
            f"register_shapes_datasets: no generated shapes dataset under {root}"
        )
    for split in ("train", "val"):
        register_coco_json(
            f"detkd_shapes_{split}",
            os.path.join(root, "annotations", f"instances_{split}.json"),
            os.path.join(root, "images", split),
        )
        MetadataCatalog.get(f"detkd_shapes_{split}").set(thing_classes=list(SHAPE_CLASSES))
        register_voc_folder(
            f"detkd_shapes_voc_{split}", os.path.join(root, "voc"), split, SHAPE_CLASSES
        )
