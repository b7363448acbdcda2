"""Dataset checks that fail early and name the cause (issue #16).

* Class indices outside ``[0, num_classes)`` are refused when a dataset is loaded, naming the
  dataset, an image and the index: detectron2 would otherwise train an index ``== num_classes`` as
  background without a word, or fail deep inside a loss on larger or negative ones.
* A dataset whose metadata lists more ``thing_classes`` than the model has is refused likewise.
* :class:`FileNamingDatasetMapper` re-raises an image that cannot be read or decoded (missing,
  truncated, not an image) as :class:`ImageReadError` naming the file; PIL's own messages
  (e.g. "image file is truncated") do not.
"""

import itertools

import numpy as np
from detectron2.data import DatasetMapper, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.build import print_instances_class_histogram
from detectron2.data.detection_utils import check_metadata_consistency

# where the model's number of classes is set, in yaml and in LazyConfig
MODEL_CLASSES = "the model's number of classes (MODEL.ROI_HEADS.NUM_CLASSES, roi_heads.num_classes)"

__all__ = [
    "FileNamingDatasetMapper",
    "ImageReadError",
    "check_class_indices",
    "check_thing_classes",
    "get_checked_dataset_dicts",
]


def check_class_indices(
    dataset_dicts, dataset_name: str, num_classes: int, limit: str = MODEL_CLASSES
):
    """Raise ValueError if an annotation's ``category_id`` is outside ``[0, num_classes)``
    (``limit`` says, in the message, where ``num_classes`` comes from).

    Every annotation of the given records is checked, crowd ones included: an index out of range
    there is the same dataset/config mismatch. The message names the dataset, the first offending
    image (file_name, else image_id) and index, and how many annotations and images are affected.
    """
    anns = [r.get("annotations", ()) for r in dataset_dicts]
    counts = np.fromiter(map(len, anns), np.int64, count=len(anns))
    classes = np.fromiter(
        (a["category_id"] for a in itertools.chain.from_iterable(anns)),
        np.int64,
        count=int(counts.sum()),
    )
    bad = (classes < 0) | (classes >= num_classes)
    if not bad.any():
        return
    record_of = np.repeat(np.arange(len(dataset_dicts)), counts)
    first = int(np.flatnonzero(bad)[0])
    record = dataset_dicts[record_of[first]]
    image = record.get("file_name", f"image_id={record.get('image_id')!r}")
    raise ValueError(
        f"Dataset {dataset_name!r}: {int(bad.sum())} of {len(classes)} annotations "
        f"(in {len(np.unique(record_of[bad]))} images) have a class index outside "
        f"[0, {num_classes}), {limit}; "
        f"first: class {int(classes[first])} in {image!r}; "
        f"offending classes: {np.unique(classes[bad]).tolist()}"
    )


def check_thing_classes(dataset_name: str, num_classes: int):
    """Raise ValueError if the dataset's metadata lists more ``thing_classes`` than the model has.

    Datasets without ``thing_classes`` in their metadata are not checked here (their indices still
    are, by :func:`check_class_indices`); fewer classes than the model is allowed.
    """
    thing_classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    if thing_classes is not None and len(thing_classes) > num_classes:
        raise ValueError(
            f"Dataset {dataset_name!r} has {len(thing_classes)} thing_classes in its metadata, but "
            f"{MODEL_CLASSES} is {num_classes}"
        )


def get_checked_dataset_dicts(
    names, num_classes: int, filter_empty=True, min_keypoints=0, proposal_files=None
):
    """detectron2's ``get_detection_dataset_dicts``, loaded one name at a time so that
    :func:`check_thing_classes` and :func:`check_class_indices` can name the dataset at fault.

    Arguments mean what they mean there (``proposal_files``: one per name). As there, several
    names must have the same ``thing_classes`` when they all have them, and the class histogram
    is logged; class indices are checked before it (its own check names no dataset or image),
    also against the number of ``thing_classes`` where that is below ``num_classes``. Unlike
    there, each name must keep some records after filtering, and a dataset that is a torch
    Dataset rather than a list is refused (its indices could not be checked).
    """
    names = [names] if isinstance(names, str) else list(names)
    if proposal_files is not None and len(proposal_files) != len(names):
        raise ValueError(f"{len(proposal_files)} proposal files for {len(names)} datasets {names}")
    for name in names:
        check_thing_classes(name, num_classes)
    thing_classes = [MetadataCatalog.get(name).get("thing_classes") for name in names]
    has_classes = all(classes is not None for classes in thing_classes)
    if has_classes:
        check_metadata_consistency("thing_classes", names)
    per_name = []
    for i, name in enumerate(names):
        dicts = get_detection_dataset_dicts(
            name,
            filter_empty=filter_empty,
            min_keypoints=min_keypoints,
            proposal_files=None if proposal_files is None else [proposal_files[i]],
            check_consistency=False,
        )
        if not isinstance(dicts, list):
            raise TypeError(
                f"Dataset {name!r} is a {type(dicts).__name__}, not a list of dicts: its class "
                "indices cannot be checked when it is loaded"
            )
        check_class_indices(dicts, name, num_classes)
        if thing_classes[i] is not None and len(thing_classes[i]) < num_classes:
            check_class_indices(
                dicts, name, len(thing_classes[i]), "the number of thing_classes in its metadata"
            )
        per_name.append(dicts)
    dicts = list(itertools.chain.from_iterable(per_name))
    if has_classes and "annotations" in dicts[0]:
        print_instances_class_histogram(dicts, thing_classes[0])
    return dicts


class ImageReadError(OSError):
    """An image of a dataset record could not be read or decoded; the message names the file."""


class FileNamingDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper, but a record whose image cannot be read or decoded raises
    :class:`ImageReadError` naming ``file_name`` (and ``sem_seg_file_name``, which it also reads),
    chained to the original error.

    Caught: OSError (PIL's UnidentifiedImageError, truncated files, FileNotFoundError) and
    SyntaxError (raised by PIL for some broken PNGs).
    """

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as e:
            files = repr(dataset_dict.get("file_name"))
            if "sem_seg_file_name" in dataset_dict:
                files += f" or its sem_seg_file_name {dataset_dict['sem_seg_file_name']!r}"
            raise ImageReadError(f"Cannot read image {files}: {type(e).__name__}: {e}") from e
