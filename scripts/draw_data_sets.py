"""The picture of DEMO.md's embedded data sets: the first six training images of the shapes, the
hard shapes and the glyphs, boxes in red, drawn from each set's spec (nothing is written to
``datasets/``).

    python scripts/draw_data_sets.py [docs/images/demo_data_sets.png]
"""

import sys

import numpy as np
from PIL import Image, ImageDraw

from detkd.data.register import SPECS

TILE = 128  # each image is shown on a square tile of this side, centred
COLUMNS = 6


def first_images(kind: str, count: int):
    """The first ``count`` training images of the set ``kind`` and their boxes, as generated."""
    spec = SPECS[kind]()
    rng = np.random.default_rng([spec.seed, 0])  # the training split's stream, as generate_split
    return [spec.render(rng) for _ in range(count)]


def main(path: str = "docs/images/demo_data_sets.png"):
    rows = ["shapes", "hard", "glyphs"]
    gap = 8
    canvas = Image.new(
        "RGB",
        (COLUMNS * TILE + (COLUMNS - 1) * 2, len(rows) * TILE + (len(rows) - 1) * gap),
        "white",
    )
    for r, kind in enumerate(rows):
        for c, (image, objects) in enumerate(first_images(kind, COLUMNS)):
            image = image.convert("RGB")
            draw = ImageDraw.Draw(image)
            for _, box in objects:
                draw.rectangle(box, outline=(230, 20, 20))
            x = c * (TILE + 2) + (TILE - image.width) // 2
            y = r * (TILE + gap) + (TILE - image.height) // 2
            canvas.paste(image, (x, y))
    canvas.save(path)
    print(path)


if __name__ == "__main__":
    main(*sys.argv[1:])
