"""Every shipped COCO and VOC distillation config stays runnable: built with random weights (R101
teacher, R50 student), trained 2 iterations through train_net.py on a tiny COCO- and VOC-layout
folder at a resolution CI affords, to finite losses, and evaluated with its evaluator."""

import glob
import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import REPO
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASSES
from detectron2.modeling import build_model
from PIL import Image

import train_net
from detkd import load_config
from detkd.checkpoint import Checkpointer
from detkd.data import register_voc_folder

pytestmark = pytest.mark.slow

COCO = sorted(glob.glob(os.path.join(REPO, "configs/COCO-Detection/distill_*.yaml")))
VOC = sorted(glob.glob(os.path.join(REPO, "configs/PascalVOC-Detection/distill_*.yaml")))
SMALL = [
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
    "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.EVAL_PERIOD", "0",
    "MODEL.WEIGHTS", "",  # no ImageNet download: random weights
    # every detection kept: a random student's scores sit under the default 0.05, and an
    # evaluator with no prediction returns nothing to check
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]  # fmt: skip


def _images(folder, names, rng):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        pixels = rng.integers(0, 255, size=(120, 150, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, name))


@pytest.fixture(scope="module")
def coco_voc_layout(tmp_path_factory):
    """coco_2017_{train,val} and voc_{2007,2012}_trainval / voc_2007_test re-registered onto tiny
    folders of 4 images with 2 boxes each (detectron2 registered its builtin names at import)."""
    root = tmp_path_factory.mktemp("datasets")
    rng = np.random.default_rng(0)
    things = [c for c in COCO_CATEGORIES if c["isthing"]]
    for split in ("train2017", "val2017"):
        names = [f"{split}_{i}.jpg" for i in range(4)]
        _images(str(root / "coco" / split), names, rng)
        images = [
            {"id": i + 1, "file_name": n, "height": 120, "width": 150} for i, n in enumerate(names)
        ]
        annotations = [
            {
                "id": 2 * i + k + 1,
                "image_id": i + 1,
                "category_id": things[(2 * i + k) % len(things)]["id"],
                "bbox": [10.0 + 40 * k, 20.0, 40.0, 50.0],
                "area": 2000.0,
                "iscrowd": 0,
            }
            for i in range(4)
            for k in range(2)
        ]
        categories = [{"id": c["id"], "name": c["name"]} for c in things]
        os.makedirs(root / "coco" / "annotations", exist_ok=True)
        with open(root / "coco" / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    for year, splits in (("2007", ("trainval", "test")), ("2012", ("trainval",))):
        voc = root / f"VOC{year}"
        ids = [f"{year}_{i:06d}" for i in range(4)]
        _images(str(voc / "JPEGImages"), [f"{i}.jpg" for i in ids], rng)
        os.makedirs(voc / "Annotations", exist_ok=True)
        os.makedirs(voc / "ImageSets" / "Main", exist_ok=True)
        for n, file_id in enumerate(ids):
            objects = "".join(
                f"<object><name>{VOC_CLASSES[(2 * n + k) % 20]}</name><pose>Unspecified</pose>"
                "<truncated>0</truncated><difficult>0</difficult>"
                f"<bndbox><xmin>{11 + 40 * k}</xmin><ymin>21</ymin><xmax>{50 + 40 * k}</xmax>"
                "<ymax>70</ymax></bndbox></object>"
                for k in range(2)
            )
            (voc / "Annotations" / f"{file_id}.xml").write_text(
                "<annotation><size><width>150</width><height>120</height></size>"
                f"{objects}</annotation>"
            )
        for split in splits:
            (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    coco_names = {
        "coco_2017_train": "train2017",
        "coco_2017_val": "val2017",
    }
    voc_names = {"voc_2007_trainval": 2007, "voc_2012_trainval": 2012, "voc_2007_test": 2007}
    saved = {}
    for name in list(coco_names) + list(voc_names):
        saved[name] = (DatasetCatalog[name], MetadataCatalog.get(name).as_dict())
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    for name, split in coco_names.items():
        register_coco_instances(
            name,
            _get_builtin_metadata("coco"),
            str(root / "coco" / "annotations" / f"instances_{split}.json"),
            str(root / "coco" / split),
        )
    for name, year in voc_names.items():
        register_voc_folder(name, str(root / f"VOC{year}"), name.split("_")[-1], VOC_CLASSES, year)
    yield root
    for name, (loader, metadata) in saved.items():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        DatasetCatalog.register(name, loader)
        MetadataCatalog.get(name).set(**metadata)


def _random_teacher(config, tmp_path):
    """The teacher the distillation config names, with random weights, saved."""
    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    teacher_cfg = load_config(cfg.MODEL.DISTILL.TEACHER.CONFIG_FILE, ["MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    model = build_model(teacher_cfg)
    path = tmp_path / "teacher.pth"
    Checkpointer(model, str(tmp_path)).save("teacher")
    return str(path)


@pytest.mark.parametrize("config", COCO + VOC, ids=[os.path.basename(c) for c in COCO + VOC])
def test_shipped_config_trains_and_evaluates(config, coco_voc_layout, tmp_path):
    teacher = _random_teacher(config, tmp_path)
    out = tmp_path / "run"
    results = train_net.invoke(
        ["--config-file", config, *SMALL, "MODEL.DISTILL.TEACHER.WEIGHTS", teacher]
        + ["OUTPUT_DIR", str(out)]
    )
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [v for r in rows for k, v in r.items() if k.startswith("loss_")]
    assert losses and all(math.isfinite(v) for v in losses)
    trained = [r for r in rows if any(k.startswith("loss_") for k in r)]
    assert [r["iteration"] for r in trained][-1] == 1
    assert any(k.startswith("loss_") and not k.startswith(("loss_cls", "loss_box", "loss_rpn"))
               for r in rows for k in r)  # fmt: skip
    (test_set,) = load_config(config).DATASETS.TEST
    evaluated = results.get(test_set, results)  # detectron2 unwraps a single test set
    assert "bbox" in evaluated and set(evaluated["bbox"]) >= {"AP", "AP50", "AP75"}
