"""An embedded demo dataset: coloured shapes on textured backgrounds, generated on the fly.

No download: ``ensure_shapes_dataset(root)`` draws the images (reproducible by seed) and writes
them twice, as COCO json and as a VOC folder, so both of detectron2's evaluators can be used:

    root/images/{split}/NNNNNN.jpg + root/annotations/instances_{split}.json   (COCO)
    root/voc/JPEGImages/*.jpg, Annotations/*.xml, ImageSets/Main/{split}.txt   (VOC)

Five classes, object sizes from a few pixels to half the image (small, medium and large by the
COCO definition relative to the image), several objects per image, some overlapping.

A harder variant (:class:`HardShapesSpec`, registered as ``detkd_shapes_hard_*``): ten classes, the
same five shapes in two colour groups (warm and cool; the colour within a group is drawn at random,
so it tells the group, not the shape), smaller objects (about half the size on average) and more of
them per image.
"""

import json
import os
import xml.etree.ElementTree as ET
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "HARD_SHAPE_CLASSES",
    "HardShapesSpec",
    "SHAPE_CLASSES",
    "SPECS",
    "ShapesSpec",
    "ensure_shapes_dataset",
    "generate_split",
]

# bump when the files written change, so cached copies are regenerated
_FORMAT_VERSION = 2
SHAPE_CLASSES = ["square", "circle", "triangle", "cross", "diamond"]
# fixed colour per class, so the task is learnable from colour and shape
_CLASS_COLOURS = [(220, 40, 40), (40, 200, 40), (40, 80, 230), (230, 200, 30), (200, 40, 200)]
# the hard set: class k is shape k % 5 in colour group k // 5 (a colour drawn from its palette)
_COLOUR_GROUPS = ("warm", "cool")
HARD_SHAPE_CLASSES = [f"{shape}_{group}" for group in _COLOUR_GROUPS for shape in SHAPE_CLASSES]
_GROUP_PALETTES = (
    [(220, 50, 40), (235, 130, 30), (225, 200, 40), (200, 60, 150)],  # red, orange, yellow, pink
    [(40, 80, 220), (40, 180, 200), (50, 190, 80), (120, 70, 210)],  # blue, cyan, green, violet
)


class ShapesSpec:
    """Size of the demo data. ``image_size`` is (min side, max side): images are non-square.
    ``kind`` and ``classes`` (class attributes) say which data set it draws."""

    kind = "shapes"
    classes = SHAPE_CLASSES

    def __init__(
        self,
        splits: Dict[str, int] = None,
        image_size: Tuple[int, int] = (96, 128),
        max_objects: int = 6,
        min_box: int = 6,
        max_box_frac: float = 0.6,
        seed: int = 0,
    ):
        self.splits = dict(splits or {"train": 400, "val": 100})
        self.image_size = tuple(image_size)
        self.max_objects = max_objects
        self.min_box = min_box
        self.max_box_frac = max_box_frac
        self.seed = seed

    def key(self) -> str:
        fields = {**self.__dict__, "format": _FORMAT_VERSION}
        if self.kind != ShapesSpec.kind:  # the shapes set's key (and cached copies) unchanged
            fields["kind"] = self.kind
        return json.dumps(fields, sort_keys=True)

    def render(self, rng: np.random.Generator):
        """One image of this data set and its objects, a list of (class, [x0, y0, x1, y1])."""
        return _render(rng, self)

    def class_colour(self, rng: np.random.Generator, cls: int):
        """The shape (an index into ``SHAPE_CLASSES``) and colour an object of class ``cls`` is
        drawn with."""
        jitter = rng.integers(-25, 26, size=3)
        return cls, tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(_CLASS_COLOURS[cls], jitter))


class HardShapesSpec(ShapesSpec):
    """The harder demo data: ten classes (the five shapes, each in a warm and a cool colour group),
    smaller objects (``min_box`` 4 px up to 30 % of the short side, against 6 px to 60 %) and up to
    ten of them per image; same image sizes as :class:`ShapesSpec`."""

    kind = "hard"
    classes = HARD_SHAPE_CLASSES

    def __init__(
        self,
        splits: Dict[str, int] = None,
        image_size: Tuple[int, int] = (96, 128),
        max_objects: int = 10,
        min_box: int = 4,
        max_box_frac: float = 0.3,
        seed: int = 0,
    ):
        super().__init__(splits, image_size, max_objects, min_box, max_box_frac, seed)

    def class_colour(self, rng: np.random.Generator, cls: int):
        shape, group = cls % len(SHAPE_CLASSES), cls // len(SHAPE_CLASSES)
        palette = _GROUP_PALETTES[group]
        base = palette[int(rng.integers(0, len(palette)))]
        jitter = rng.integers(-30, 31, size=3)
        return shape, tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(base, jitter))


# kind -> spec class (its defaults are the demo's data set of that kind); detkd.data.glyphs adds
# the glyphs set
SPECS = {ShapesSpec.kind: ShapesSpec, HardShapesSpec.kind: HardShapesSpec}


def _draw_shape(draw: ImageDraw.ImageDraw, cls: int, box, colour):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if cls == 0:
        draw.rectangle(box, fill=colour)
    elif cls == 1:
        draw.ellipse(box, fill=colour)
    elif cls == 2:
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif cls == 3:
        tw, th = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle([x0, cy - th / 2, x1, cy + th / 2], fill=colour)
        draw.rectangle([cx - tw / 2, y0, cx + tw / 2, y1], fill=colour)
    else:
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)


def _render(rng: np.random.Generator, spec: ShapesSpec):
    short, long = spec.image_size
    h, w = (short, long) if rng.random() < 0.5 else (long, short)
    base = rng.integers(60, 180, size=3)
    noise = rng.normal(0, 18, size=(h, w, 3))
    img = np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(img)
    draw = ImageDraw.Draw(image)
    objects = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        cls = int(rng.integers(0, len(spec.classes)))
        # log-uniform size: many small objects, some large ones
        size = float(
            np.exp(rng.uniform(np.log(spec.min_box), np.log(spec.max_box_frac * min(h, w))))
        )
        aspect = float(np.exp(rng.uniform(-0.3, 0.3)))
        bw, bh = max(size * aspect, 3.0), max(size / aspect, 3.0)
        x0 = float(rng.uniform(0, w - bw))
        y0 = float(rng.uniform(0, h - bh))
        box = [round(x0), round(y0), round(x0 + bw), round(y0 + bh)]
        shape, colour = spec.class_colour(rng, cls)
        _draw_shape(draw, shape, box, colour)
        objects.append((cls, box))
    return image, objects


def _voc_xml(file_id: str, h: int, w: int, objects, classes) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{file_id}.jpg"
    size = ET.SubElement(root, "size")
    for tag, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for cls, (x0, y0, x1, y1) in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[cls]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        # VOC is 1-based with inclusive corners; detectron2's loader subtracts 1 from xmin/ymin
        for tag, v in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bb, tag).text = str(int(v))
    return ET.ElementTree(root)


def generate_split(root: str, split: str, count: int, spec: ShapesSpec, split_seed: int):
    rng = np.random.default_rng([spec.seed, split_seed])
    img_dir = os.path.join(root, "images", split)
    voc = os.path.join(root, "voc")
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    images, annotations, ids = [], [], []
    for i in range(count):
        image, objects = spec.render(rng)
        w, h = image.size
        file_id = f"{split}_{i:06d}"
        image.save(os.path.join(img_dir, f"{file_id}.jpg"), quality=95)
        image.save(os.path.join(voc, "JPEGImages", f"{file_id}.jpg"), quality=95)
        _voc_xml(file_id, h, w, objects, spec.classes).write(
            os.path.join(voc, "Annotations", f"{file_id}.xml")
        )
        ids.append(file_id)
        images.append({"id": i + 1, "file_name": f"{file_id}.jpg", "height": h, "width": w})
        for cls, (x0, y0, x1, y1) in objects:
            bw, bh = x1 - x0, y1 - y0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": [x0, y0, bw, bh],
                    "area": float(bw * bh),
                    "iscrowd": 0,
                }
            )
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(spec.classes)],
    }
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump(coco, f)
    with open(os.path.join(voc, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")


def ensure_shapes_dataset(root: str, spec: ShapesSpec = None) -> str:
    """Generate the dataset under ``root`` unless an identical one is there; return ``root``."""
    spec = spec or ShapesSpec()
    stamp = os.path.join(root, "SPEC.json")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if f.read() == spec.key():
                return root
    for k, (split, count) in enumerate(sorted(spec.splits.items())):
        generate_split(root, split, count, spec, k)
    tmp = stamp + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(spec.key())
    os.replace(tmp, stamp)
    return root
