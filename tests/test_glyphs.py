"""The glyphs demo set: letters in many typefaces over photographs, deterministic, in COCO and VOC
form, with occluded objects dropped from the annotations."""

import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from detkd.data.glyphs import GLYPH_CLASSES, GlyphsSpec, background_photos, typefaces
from detkd.data.register import GLYPHS_DATASETS, SPECS, register_shapes_datasets


def test_photographs_and_typefaces_come_from_installed_packages():
    photos = background_photos()
    assert len(photos) == 16 and all(p.ndim == 3 and p.shape[2] == 3 for p in photos)
    assert all(max(p.shape[:2]) <= 384 and p.dtype == np.uint8 for p in photos)
    # photographs, not flat colour: every one has texture at the pixel scale
    assert all(np.abs(np.diff(p.astype(float), axis=1)).mean() > 1.0 for p in photos)
    assert len(typefaces()) == 15 and all(os.path.isfile(f) for f in typefaces())


def test_render_is_deterministic_and_boxes_lie_in_the_image():
    spec = GlyphsSpec()
    a = [spec.render(np.random.default_rng([0, k])) for k in range(20)]
    b = [spec.render(np.random.default_rng([0, k])) for k in range(20)]
    for (ia, oa), (ib, ob) in zip(a, b):
        assert np.array_equal(np.asarray(ia), np.asarray(ib)) and oa == ob
    count = 0
    for image, objects in a:
        w, h = image.size
        assert sorted((h, w)) == [96, 128]
        for cls, (x0, y0, x1, y1) in objects:
            assert 0 <= cls < len(GLYPH_CLASSES)
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert y1 - y0 >= 4  # min_box 12 px tall before rotation
        count += len(objects)
    assert count >= 20  # about 3 labelled objects per image


def test_an_object_mostly_covered_is_not_annotated():
    # nothing is visible enough at min_visible 1.01: every object is dropped, pixels stay
    spec = GlyphsSpec(min_visible=1.01)
    image, objects = spec.render(np.random.default_rng(3))
    assert objects == []
    all_kept = GlyphsSpec(min_visible=0.0).render(np.random.default_rng(3))[1]
    assert len(all_kept) >= 1


def test_registered_in_coco_and_voc_form(tmp_path):
    assert SPECS["glyphs"] is GlyphsSpec
    root = str(tmp_path / "detkd_glyphs")
    register_shapes_datasets(root, GlyphsSpec({"train": 6, "val": 4}))
    coco_train, coco_val, voc_train, voc_val = GLYPHS_DATASETS
    try:
        assert MetadataCatalog.get(coco_val).thing_classes == GLYPH_CLASSES
        coco = DatasetCatalog.get(coco_train)
        voc = DatasetCatalog.get(voc_train)
        assert len(coco) == 6 and len(DatasetCatalog.get(voc_val)) == 4
        # the same objects in both forms (VOC is 1-based inclusive; detectron2 subtracts 1)
        for c, v in zip(coco, voc):
            cb = sorted((a["category_id"], *map(round, a["bbox"])) for a in c["annotations"])
            vb = sorted((a["category_id"], *map(round, a["bbox"])) for a in v["annotations"])
            assert [x[0] for x in cb] == [x[0] for x in vb]
            for p, q in zip(cb, vb):
                assert p[1:3] == q[1:3]
                assert abs(p[3] - (q[3] - q[1])) <= 1 and abs(p[4] - (q[4] - q[2])) <= 1
        with open(os.path.join(root, "annotations", "instances_train.json")) as f:
            assert [c["name"] for c in json.load(f)["categories"]] == GLYPH_CLASSES
    finally:
        for name in GLYPHS_DATASETS:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_a_missing_package_is_named():
    from detkd.data import glyphs

    with pytest.raises(ImportError, match="needs the no_such_package package"):
        glyphs._package_dir("no_such_package")


def test_max_overlap_keeps_glyphs_apart():
    """max_overlap 0: no two glyphs' placements intersect, so no two labelled boxes do (the
    boxes are the ink inside them); 1.0 lets objects overlap anywhere."""

    def boxes_intersect(spec, images=40):
        rng, hits = np.random.default_rng(0), 0
        for _ in range(images):
            _, objects = spec.render(rng)
            b = [box for _, box in objects]
            for i in range(len(b)):
                for j in range(i + 1, len(b)):
                    w = min(b[i][2], b[j][2]) - max(b[i][0], b[j][0])
                    h = min(b[i][3], b[j][3]) - max(b[i][1], b[j][1])
                    hits += w > 0 and h > 0
        return hits

    assert boxes_intersect(GlyphsSpec(max_overlap=0.0)) == 0
    assert boxes_intersect(GlyphsSpec(max_overlap=1.0)) > 5
