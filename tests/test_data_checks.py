"""Load-time dataset checks (issue #16): class indices outside [0, NUM_CLASSES) and too many
metadata classes are refused when DistillTrainer builds its loaders, naming the dataset, image and
class; an image that cannot be read or decoded raises an error naming the file."""

import copy
import re

import pytest
from conftest import make_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import UnidentifiedImageError

from detkd.data import SHAPE_CLASSES, FileNamingDatasetMapper, ImageReadError, check_class_indices
from detkd.engine import DistillTrainer

KEYS = "MODEL.ROI_HEADS.NUM_CLASSES, roi_heads.num_classes"


@pytest.fixture
def register():
    """Registers datasets of the given records (thing_classes: the shapes' 5 by default) for one
    test, and removes them after it."""
    names = []

    def register(name, records, thing_classes=SHAPE_CLASSES):
        DatasetCatalog.register(name, lambda: copy.deepcopy(records))
        MetadataCatalog.get(name).set(thing_classes=list(thing_classes))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def shapes_train():
    return DatasetCatalog.get("detkd_shapes_train")  # a fresh list on every call


def cfg_for(train=("detkd_shapes_train",), test=("detkd_shapes_val",)):
    return make_cfg("configs/demo/student.yaml", "DATASETS.TRAIN", train, "DATASETS.TEST", test)


def test_class_index_equal_to_num_classes_is_refused_naming_dataset_image_and_class(register):
    records = shapes_train()
    records[3]["annotations"][-1]["category_id"] = 5  # NUM_CLASSES: would be trained as background
    total = sum(len(r["annotations"]) for r in records)
    name = register("detkd_test_class_5", records)
    # the second of two datasets: loading per name lets the error name the one at fault
    with pytest.raises(ValueError) as e:
        DistillTrainer.build_train_loader(cfg_for(train=("detkd_shapes_train", name)))
    assert str(e.value) == (
        f"Dataset 'detkd_test_class_5': 1 of {total} annotations (in 1 images) have a class index "
        f"outside [0, 5), the model's number of classes ({KEYS}); "
        f"first: class 5 in {records[3]['file_name']!r}; offending classes: [5]"
    )


def test_negative_class_indices_are_refused_by_the_test_loader_too(register):
    records = shapes_train()[:6]
    records[2]["annotations"][0]["category_id"] = -1
    ann = records[4]["annotations"][0]
    records[4]["annotations"] = [dict(ann, category_id=-1), dict(ann, category_id=7)]
    total = sum(len(r["annotations"]) for r in records)
    name = register("detkd_test_class_negative", records)
    expected = (
        f"Dataset 'detkd_test_class_negative': 3 of {total} annotations (in 2 images) have a class "
        f"index outside [0, 5), the model's number of classes ({KEYS}); "
        f"first: class -1 in {records[2]['file_name']!r}; offending classes: [-1, 7]"
    )
    with pytest.raises(ValueError) as e:
        DistillTrainer.build_train_loader(cfg_for(train=(name,)))
    assert str(e.value) == expected
    with pytest.raises(ValueError) as e:
        DistillTrainer.build_test_loader(cfg_for(test=(name,)), name)
    assert str(e.value) == expected


def test_records_without_file_name_are_named_by_image_id():
    records = [
        {"image_id": 7, "annotations": []},
        {"image_id": 8, "annotations": [{"category_id": 9}]},
    ]
    with pytest.raises(
        ValueError,
        match=r"1 of 1 annotations \(in 1 images\).*first: class 9 in "
        r"'image_id=8'; offending classes: \[9\]",
    ):
        check_class_indices(records, "ids_only", 5)
    check_class_indices([{"image_id": 1}], "no_annotations", 5)  # e.g. an unlabeled test set


def test_metadata_classes_must_fit_the_model_and_the_annotations(register):
    name = register("detkd_test_six_classes", shapes_train(), SHAPE_CLASSES + ["star"])
    with pytest.raises(ValueError) as e:
        DistillTrainer.build_train_loader(cfg_for(train=(name,)))
    assert str(e.value) == (
        "Dataset 'detkd_test_six_classes' has 6 thing_classes in its metadata, but the model's "
        f"number of classes ({KEYS}) is 5"
    )
    # fewer metadata classes than the model is allowed, but not annotations beyond them
    records = shapes_train()
    first = next(r for r in records if any(a["category_id"] == 4 for a in r["annotations"]))
    name = register("detkd_test_four_classes", records, SHAPE_CLASSES[:4])
    expected = (
        r"Dataset 'detkd_test_four_classes': \d+ of \d+ annotations \(in \d+ images\) have "
        r"a class index outside \[0, 4\), the number of thing_classes in its metadata; "
        r"first: class 4 in " + re.escape(repr(first["file_name"]))
    )
    with pytest.raises(ValueError, match=expected):
        DistillTrainer.build_train_loader(cfg_for(train=(name,)))
    # several datasets must agree on their classes, as in detectron2's own loader
    other = register("detkd_test_reordered", shapes_train(), SHAPE_CLASSES[::-1])
    with pytest.raises(ValueError, match="Datasets have different metadata 'thing_classes'"):
        DistillTrainer.build_train_loader(cfg_for(train=("detkd_shapes_train", other)))


@pytest.mark.parametrize("build", ["train", "test"])
def test_a_truncated_image_is_named_when_loaded(register, tmp_path, build):
    record = shapes_train()[0]
    data = open(record["file_name"], "rb").read()
    record["file_name"] = str(tmp_path / "truncated.jpg")
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    name = register(f"detkd_test_truncated_{build}", [record])
    cfg = cfg_for(train=(name,), test=(name,))
    loader = (
        DistillTrainer.build_train_loader(cfg)
        if build == "train"
        else DistillTrainer.build_test_loader(cfg, name)
    )
    with pytest.raises(ImageReadError) as e:
        next(iter(loader))
    # PIL's own message is only "image file is truncated (N bytes not processed)"
    assert str(e.value).startswith(
        f"Cannot read image {record['file_name']!r}: OSError: image file is truncated"
    )
    assert type(e.value.__cause__) is OSError


@pytest.mark.parametrize(
    "content,cause", [(b"not an image", UnidentifiedImageError), (None, FileNotFoundError)]
)
def test_a_non_image_or_missing_file_is_named_when_mapped(tmp_path, content, cause):
    path = tmp_path / "image.jpg"
    if content is not None:
        path.write_bytes(content)
    record = {"file_name": str(path), "image_id": 1, "height": 64, "width": 96, "annotations": []}
    with pytest.raises(ImageReadError) as e:
        FileNamingDatasetMapper(cfg_for(), is_train=True)(record)
    assert str(e.value).startswith(f"Cannot read image {str(path)!r}: {cause.__name__}: ")
    assert type(e.value.__cause__) is cause


def test_a_correct_dataset_still_loads():
    cfg = cfg_for()
    batch = next(iter(DistillTrainer.build_train_loader(cfg)))
    assert len(batch) == cfg.SOLVER.IMS_PER_BATCH
    assert all(0 <= c < 5 for b in batch for c in b["instances"].gt_classes.tolist())
    (item,) = next(iter(DistillTrainer.build_test_loader(cfg, "detkd_shapes_val")))
    assert item["image"].shape[0] == 3 and "instances" not in item
