"""The teacher sanity check, a trainer hook that runs before the first step: the teacher's recall
of the ground-truth boxes of the first training images that have one
(:meth:`detkd.modeling.DistillRCNN.check_teacher`), logged as ``teacher/sanity_recall`` and a loud
warning under ``MODEL.DISTILL.TEACHER.SANITY_MIN_RECALL``.

The images are read and resized here, deterministically and without drawing a random number: a
batch drawn from the training loader, or an augmentation's random size, would change the batches
and flips the run trains on."""

from typing import Dict, List, Optional

import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

__all__ = ["TeacherSanityCheck", "first_images_with_boxes"]


def first_images_with_boxes(
    dataset: str, image_format: str, min_size: int, max_size: int, count: int
) -> List[Dict]:
    """Model inputs (``image``, ``instances``, ``height``, ``width``) of the first ``count``
    images of ``dataset`` with a non-crowd box, resized as for testing (shortest edge
    ``min_size``, longest at most ``max_size``; 0: as they are)."""
    inputs = []
    for d in DatasetCatalog.get(dataset):
        annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        if not annos:
            continue
        image = utils.read_image(d["file_name"], format=image_format)
        h, w = image.shape[:2]
        if min_size:
            nh, nw = T.ResizeShortestEdge.get_output_shape(h, w, min_size, max_size)
        else:
            nh, nw = h, w
        transform = T.TransformList([T.ResizeTransform(h, w, nh, nw)])
        image = transform.apply_image(image)
        annos = [utils.transform_instance_annotations(a, transform, (nh, nw)) for a in annos]
        inputs.append(
            {
                "image": torch.as_tensor(image.transpose(2, 0, 1).copy()),
                "instances": utils.annotations_to_instances(annos, (nh, nw)),
                "height": nh,
                "width": nw,
            }
        )
        if len(inputs) == count:
            break
    return inputs


class TeacherSanityCheck(HookBase):
    """Before the first step of a distillation run: the teacher's recall of the first ``count``
    training images' boxes of ``dataset`` (see :func:`first_images_with_boxes`). A model without
    a teacher is not checked."""

    def __init__(
        self, dataset: str, image_format: str, min_size: int, max_size: int, count: int = 8
    ):
        self.dataset, self.image_format = dataset, image_format
        self.min_size, self.max_size, self.count = min_size, max_size, count

    def before_train(self):
        model = self.trainer.model
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if getattr(model, "teacher", None) is None or not hasattr(model, "check_teacher"):
            return
        inputs = first_images_with_boxes(
            self.dataset, self.image_format, self.min_size, self.max_size, self.count
        )
        if inputs:
            model.check_teacher(inputs)


def sanity_check_of(cfg) -> Optional[TeacherSanityCheck]:
    """The check of a yaml config's run: its first training set at its test size."""
    if not cfg.DATASETS.TRAIN:
        return None
    return TeacherSanityCheck(
        cfg.DATASETS.TRAIN[0], cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    )


def lazy_sanity_check(dataloader) -> Optional[TeacherSanityCheck]:
    """The check of a LazyConfig run: the first of ``dataloader.train.dataset.names``, the train
    mapper's image format, the size of the test mapper's ``ResizeShortestEdge`` (none found:
    the images as they are)."""
    names = dataloader.train.dataset.get("names", None)
    if not names:
        return None
    name = names if isinstance(names, str) else list(names)[0]
    image_format = dataloader.train.mapper.get("image_format", "BGR")
    min_size = max_size = 0
    test = dataloader.get("test", None)
    for aug in (test.mapper.get("augmentations", []) if test is not None else []) or []:
        if getattr(aug, "get", None) and aug.get("_target_") is T.ResizeShortestEdge:
            short = aug.get("short_edge_length")
            min_size = short if isinstance(short, int) else list(short)[0]
            max_size = aug.get("max_size", 0)
            break
    return TeacherSanityCheck(name, image_format, min_size, max_size)
