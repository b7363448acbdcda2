"""An embedded data set with real image statistics: letters in many typefaces over photographs.

The shapes sets are flat colours on plain noise: a detector can solve them from colour alone, and
the teacher's features carry little beyond the labels. This set is built to look more like real
detection data, still generated offline and deterministically from files that installed packages
ship (no download):

- **photographic backgrounds**: random crops (scale, position, flip, brightness and contrast) of
  the sample photographs that scikit-image ships (a cat, coffee, a rocket, motorcycles, grass,
  gravel, bricks, a microscope slide, ...) and matplotlib's portrait;
- **appearance that varies within a class**: a class is a letter, drawn in one of the typefaces
  matplotlib ships (DejaVu Sans / Serif / Mono, STIX, Computer Modern; regular, bold, italic),
  filled with a colour or with a texture cut from another photograph, optionally outlined,
  rotated and stretched;
- **scale variation**: letter heights log-uniform from ``min_box`` pixels to ``max_box_frac`` of
  the short side;
- **clutter and occlusion**: unlabelled distractor glyphs (other letters and symbols) before and
  after the objects, partly over one another (a glyph's box covers at most ``max_overlap`` of
  another's); an object less than ``min_visible`` visible is dropped from the annotations (its
  pixels stay, as clutter).

Ten classes (:data:`GLYPH_CLASSES`); registered as ``detkd_glyphs_{train,val}`` (COCO) and
``detkd_glyphs_voc_{train,val}`` (VOC), written like the shapes sets
(:func:`detkd.data.shapes.generate_split`). The handwritten digits that scikit-learn ships are
not used: they are a held-out check.
"""

import functools
import importlib.util
import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from .shapes import ShapesSpec

__all__ = ["GLYPH_CLASSES", "GlyphsSpec", "background_photos", "typefaces"]

GLYPH_CLASSES = ["A", "B", "E", "F", "H", "K", "M", "R", "T", "X"]
# unlabelled clutter: other letters and symbols (no digits: the held-out check is digits)
DISTRACTORS = "CDGJLNPSUVWZabdeghknqrsy&%#@?"
# the sample photographs of scikit-image (skimage/data) used as backgrounds and fills; each is
# read as RGB (grey ones repeated). Its photographs of printed text (page.png, text.png) are left
# out: their letters would be unlabelled instances of the classes
_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)
_MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
# typefaces matplotlib ships (mpl-data/fonts/ttf)
_TYPEFACES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
)
# positions tried for a glyph before it is left out (GlyphsSpec.max_overlap)
PLACEMENT_TRIES = 10
_GLYPH_PX = 64  # glyph masks are rendered once at this size, then rotated and resized
# photographs are kept at most this size on their long side (enough for 128-pixel crops)
_PHOTO_MAX_SIDE = 384


def _package_dir(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"detkd.data.glyphs needs the {package} package (its shipped files): "
            "pip install -r requirements.txt"
        )
    return spec.submodule_search_locations[0]


@functools.lru_cache(maxsize=None)
def background_photos() -> Tuple[np.ndarray, ...]:
    """The photographs the set is drawn from, as RGB uint8 arrays (long side at most
    ``_PHOTO_MAX_SIDE``), in a fixed order."""
    skimage_data = os.path.join(_package_dir("skimage"), "data")
    mpl_data = os.path.join(_package_dir("matplotlib"), "mpl-data", "sample_data")
    paths = [os.path.join(skimage_data, f) for f in _SKIMAGE_PHOTOS]
    paths += [os.path.join(mpl_data, f) for f in _MATPLOTLIB_PHOTOS]
    photos = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"detkd.data.glyphs: the photograph {path} is missing")
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = _PHOTO_MAX_SIDE / max(im.size)
            if scale < 1:
                size = (round(im.width * scale), round(im.height * scale))
                im = im.resize(size, Image.BILINEAR)
            photos.append(np.asarray(im))
    return tuple(photos)


@functools.lru_cache(maxsize=None)
def typefaces() -> Tuple[str, ...]:
    """Paths of the typefaces the letters are drawn in."""
    ttf = os.path.join(_package_dir("matplotlib"), "mpl-data", "fonts", "ttf")
    paths = tuple(os.path.join(ttf, f) for f in _TYPEFACES)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"detkd.data.glyphs: typefaces missing: {missing}")
    return paths


@functools.lru_cache(maxsize=None)
def _glyph_mask(face: int, char: str) -> Image.Image:
    """The glyph ``char`` of typeface ``face`` as an "L" mask cropped to its ink."""
    font = ImageFont.truetype(typefaces()[face], _GLYPH_PX)
    canvas = Image.new("L", (_GLYPH_PX * 2, _GLYPH_PX * 2), 0)
    ImageDraw.Draw(canvas).text((_GLYPH_PX // 2, _GLYPH_PX // 4), char, fill=255, font=font)
    bbox = canvas.getbbox()
    if bbox is None:
        raise ValueError(f"detkd.data.glyphs: {typefaces()[face]} draws nothing for {char!r}")
    return canvas.crop(bbox)


def _crop(rng: np.random.Generator, photo: np.ndarray, w: int, h: int, min_frac: float):
    """A random crop of ``photo`` (its size a fraction in [min_frac, 1] of the largest crop of
    aspect w:h), resized to w x h, maybe mirrored, with brightness and contrast jitter."""
    ph, pw = photo.shape[:2]
    largest = min(pw / w, ph / h)
    scale = largest * float(rng.uniform(min_frac, 1.0))
    cw, ch = max(2, int(w * scale)), max(2, int(h * scale))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    im = Image.fromarray(photo[y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    arr = np.asarray(im).astype(np.float32)
    contrast, brightness = float(rng.uniform(0.6, 1.3)), float(rng.uniform(-40, 40))
    arr = (arr - arr.mean()) * contrast + arr.mean() + brightness
    return np.clip(arr, 0, 255)


def _glyph(rng: np.random.Generator, char: str, height: float) -> Image.Image:
    """An "L" mask of ``char`` in a random typeface, stretched, rotated, about ``height`` tall."""
    mask = _glyph_mask(int(rng.integers(0, len(typefaces()))), char)
    stretch = float(np.exp(rng.uniform(-0.25, 0.25)))
    mw, mh = mask.size
    tall = max(2, round(height))
    wide = max(2, round(mw / mh * tall * stretch))
    mask = mask.resize((wide, tall), Image.BILINEAR)
    angle = float(rng.uniform(-20, 20))
    return mask.rotate(angle, resample=Image.BILINEAR, expand=True)


def _overlap(boxes: List[List[int]], box) -> float:
    """The largest share of the smaller box that ``box`` and one of ``boxes`` have in common
    (0 with no ``boxes``)."""
    if not boxes:
        return 0.0
    b = np.asarray(boxes, dtype=np.float64)
    iw = np.clip(np.minimum(b[:, 2], box[2]) - np.maximum(b[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(b[:, 3], box[3]) - np.maximum(b[:, 1], box[1]), 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    own = (box[2] - box[0]) * (box[3] - box[1])
    return float((iw * ih / np.minimum(area, own)).max())


class GlyphsSpec(ShapesSpec):
    """The glyphs data set: :data:`GLYPH_CLASSES` letters in many typefaces over photographs
    (module docstring). ``max_distractors`` unlabelled glyphs per image at most; an object less
    than ``min_visible`` visible after occlusion is dropped from the annotations; ``texture_fill``
    and ``outline``: the share of glyphs filled with a photograph's texture, and outlined;
    ``max_overlap``: a glyph is placed where its box covers at most this share of the smaller of
    its own and each earlier glyph's box (``PLACEMENT_TRIES`` positions tried, else left out;
    1.0: anywhere)."""

    kind = "glyphs"
    classes = GLYPH_CLASSES

    def __init__(
        self,
        splits: Dict[str, int] = None,
        image_size: Tuple[int, int] = (96, 128),
        max_objects: int = 5,
        min_box: int = 16,
        max_box_frac: float = 0.6,
        seed: int = 0,
        max_distractors: int = 2,
        min_visible: float = 0.5,
        texture_fill: float = 0.3,
        outline: float = 0.3,
        max_overlap: float = 0.2,
    ):
        super().__init__(
            splits or {"train": 1000, "val": 200},
            image_size,
            max_objects,
            min_box,
            max_box_frac,
            seed,
        )
        self.max_distractors = max_distractors
        self.min_visible = min_visible
        self.texture_fill = texture_fill
        self.outline = outline
        self.max_overlap = max_overlap

    def render(self, rng: np.random.Generator):
        photos = background_photos()
        short, long = self.image_size
        h, w = (short, long) if rng.random() < 0.5 else (long, short)
        canvas = _crop(rng, photos[int(rng.integers(0, len(photos)))], w, h, 0.3)
        if rng.random() < 0.3:  # a defocused background now and then, as behind a subject
            blurred = Image.fromarray(canvas.astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(float(rng.uniform(1.0, 2.5)))
            )
            canvas = np.asarray(blurred).astype(np.float32)
        # owner[y, x]: which drawn glyph covers the pixel last (-1: background)
        owner = np.full((h, w), -1, dtype=np.int32)
        drawn: List[Tuple[int, List[int], int]] = []  # (class or -1, box, ink pixels)
        n_objects = int(rng.integers(1, self.max_objects + 1))
        n_before = int(rng.integers(0, self.max_distractors + 1))
        n_after = int(rng.integers(0, self.max_distractors - n_before + 1))
        labels = [-1] * n_before
        labels += [int(rng.integers(0, len(self.classes))) for _ in range(n_objects)]
        labels += [-1] * n_after
        for cls in labels:
            if cls >= 0:
                char = self.classes[cls]
            else:
                char = DISTRACTORS[int(rng.integers(0, len(DISTRACTORS)))]
            placed = self._draw(rng, canvas, owner, [d[1] for d in drawn], char, photos)
            if placed is not None:
                drawn.append((cls, *placed))
        objects = []
        for index, (cls, box, ink) in enumerate(drawn):
            if cls < 0 or ink == 0:
                continue
            if (owner == index).sum() / ink >= self.min_visible:
                objects.append((cls, box))
        return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)), objects

    def _draw(self, rng, canvas, owner, placed, char, photos):
        """Draw one glyph onto ``canvas`` (in place) and mark its ink in ``owner`` with its index
        (``len(placed)``); return its box [x0, y0, x1, y1] and ink pixel count, or None when it
        does not fit. ``placed``: the boxes of the glyphs drawn before it."""
        index = len(placed)
        h, w = owner.shape
        low, high = np.log(self.min_box), np.log(self.max_box_frac * min(h, w))
        glyph = _glyph(rng, char, float(np.exp(rng.uniform(low, high))))
        gw, gh = glyph.size
        if gw >= w or gh >= h:
            return None
        for _ in range(PLACEMENT_TRIES):
            x0, y0 = int(rng.integers(0, w - gw + 1)), int(rng.integers(0, h - gh + 1))
            if self.max_overlap >= 1.0 or _overlap(placed, (x0, y0, x0 + gw, y0 + gh)) <= (
                self.max_overlap
            ):
                break
        else:
            return None
        alpha = np.asarray(glyph).astype(np.float32) / 255.0
        region = canvas[y0 : y0 + gh, x0 : x0 + gw]
        under = region.reshape(-1, 3).mean(0)
        if rng.random() >= self.texture_fill:  # a solid colour, far from the background under it
            colour = rng.integers(0, 256, size=3).astype(np.float32)
            if np.abs(colour - under).mean() < 60:
                colour = np.where(under > 127, colour * 0.3, 255 - (255 - colour) * 0.3)
            fill = np.broadcast_to(colour, region.shape)
        else:  # a texture cut from another photograph, its brightness away from the background's
            fill = _crop(rng, photos[int(rng.integers(0, len(photos)))], gw, gh, 0.1)
            shift = 70.0 if under.mean() < 128 else -70.0
            fill = np.clip(fill - fill.mean() + under.mean() + shift, 0, 255)
        if rng.random() < self.outline:  # an outline in a dark or light tone
            edge = np.asarray(glyph.filter(ImageFilter.MaxFilter(3))).astype(np.float32) / 255.0
            tone = 20.0 if rng.random() < 0.5 else 235.0
            region[:] = region * (1 - edge[..., None]) + tone * edge[..., None]
            alpha_ink = edge
        else:
            alpha_ink = alpha
        region[:] = region * (1 - alpha[..., None]) + fill * alpha[..., None]
        ink = alpha_ink > 0.5
        owner[y0 : y0 + gh, x0 : x0 + gw][ink] = index
        ys, xs = np.nonzero(ink)
        if len(xs) == 0:
            return None
        box = [
            x0 + int(xs.min()),
            y0 + int(ys.min()),
            x0 + int(xs.max()) + 1,
            y0 + int(ys.max()) + 1,
        ]
        return box, int(ink.sum())
