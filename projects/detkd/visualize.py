"""Pictures of what is distilled, for one image of a dataset.

    python -m detkd.visualize --config-file configs/demo/distill_all.yaml --output output/vis \
        [--dataset detkd_shapes_val] [--index 0] [--student-only] \
        [MODEL.WEIGHTS output/demo/all/seed0/model_final.pth]

writes
* ``fgd_masks.png``: per FPN level, FGD's foreground scale mask and background mask;
* ``attention.png``: per level, the teacher's and the student's spatial attention (FGD, T = 0.5);
* ``mssd_gaussian.png``: per level, the MSSD Gaussian target (and the student's predicted mask
  when the model has an MSSD distiller);
* ``detections.png``: the teacher's and the student's detections side by side.

``--student-only`` draws the student alone: the teacher is not built, so its files are not needed.
Weights are read through :class:`detkd.checkpoint.Checkpointer` (safe, mapped onto the student).
"""

import argparse
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer

from .checkpoint import Checkpointer
from .config import load_config, student_only_config
from .data import register_datasets
from .losses import fgd_masks, gaussian_target_mask, spatial_attention
from .modeling.heads import run_backbone

__all__ = ["visualize", "main"]


def _grid(panels, titles, path, suptitle):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(panels), len(panels[0])
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(panels[r][c], cmap="viridis")
            ax.set_title(titles[r][c], fontsize=8)
            ax.axis("off")
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def visualize(cfg, output: str, dataset: str, index: int):
    os.makedirs(output, exist_ok=True)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        Checkpointer(model, allow_unsafe_pickle=cfg.MODEL.DISTILL.ALLOW_UNSAFE_PICKLE).load(
            cfg.MODEL.WEIGHTS
        )
    model.eval()
    record = DatasetCatalog.get(dataset)[index]
    mapper_cfg = cfg.clone()
    mapper_cfg.defrost()
    mapper_cfg.INPUT.RANDOM_FLIP = "none"
    inputs = DatasetMapper(mapper_cfg, is_train=True)(record)  # keeps the GT, resized like training
    images = model.student_images([inputs])
    gt = inputs["instances"].gt_boxes.tensor * model.student_input_scale
    sizes = list(images.image_sizes)
    s_feats = run_backbone(model.student.backbone, images.tensor)
    t_feats = None
    if model.teacher is not None:
        t_images = model.teacher_images([inputs])
        t_feats = run_backbone(model.teacher.backbone, t_images.tensor)
    levels = [f for f in ("p2", "p3", "p4", "p5", "p6") if f in s_feats]
    strides = {k: float(v.stride) for k, v in model.student.backbone.output_shape().items()}

    masks = [fgd_masks([gt], sizes, s_feats[f].shape[-2:], strides[f]) for f in levels]
    _grid(
        [[fg[0].numpy() for fg, _ in masks], [bg[0].numpy() for _, bg in masks]],
        [[f"{f} foreground scale" for f in levels], [f"{f} background" for f in levels]],
        os.path.join(output, "fgd_masks.png"),
        "FGD masks (Yang et al. 2022)",
    )

    rows, titles = [], []
    if t_feats is not None:
        rows.append([spatial_attention(t_feats[f], 0.5)[0].numpy() for f in levels])
        titles.append([f"teacher {f}" for f in levels])
    rows.append([spatial_attention(s_feats[f], 0.5)[0].numpy() for f in levels])
    titles.append([f"student {f}" for f in levels])
    _grid(rows, titles, os.path.join(output, "attention.png"), "spatial attention, T = 0.5")

    targets = [
        gaussian_target_mask([gt], sizes, s_feats[f].shape[-2:], strides[f])[0].numpy()
        for f in levels
    ]
    rows, titles = [targets], [[f"{f} Gaussian target" for f in levels]]
    # a method with mask heads (MSSD) draws what they predict
    mask_methods = [d for d in model.distillers.values() if hasattr(d, "predicted_masks")]
    if mask_methods:
        predicted = mask_methods[0].predicted_masks(s_feats)
        rows.append(
            [
                predicted[f][0].numpy() if f in predicted else np.zeros_like(t)
                for f, t in zip(levels, targets)
            ]
        )
        titles.append([f"{f} predicted mask" for f in levels])
    _grid(
        rows,
        titles,
        os.path.join(output, "mssd_gaussian.png"),
        "MSSD Gaussian mask (Jia et al. 2024)",
    )

    image = inputs["image"].permute(1, 2, 0).numpy()
    if cfg.INPUT.FORMAT == "BGR":
        image = image[:, :, ::-1]
    meta = MetadataCatalog.get(dataset)
    panels, names = [], []
    for name, detector in (("teacher", model.teacher), ("student", model)):
        if detector is None:
            continue
        out = detector(
            [{"image": inputs["image"], "height": image.shape[0], "width": image.shape[1]}]
        )[0]
        inst = out["instances"].to("cpu")
        inst = inst[inst.scores > 0.5]
        panels.append(
            Visualizer(image, meta, scale=2.0).draw_instance_predictions(inst).get_image()
        )
        names.append(f"{name}: {len(inst)} detections (score > 0.5)")
    _grid([panels], [names], os.path.join(output, "detections.png"), "teacher vs student")
    return sorted(os.listdir(output))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Pictures of what detkd distils")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--dataset", default="detkd_shapes_val")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument(
        "--student-only",
        action="store_true",
        help="draw the student alone (no teacher is built or loaded)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    if args.student_only:
        cfg = student_only_config(cfg)
    register_datasets([args.dataset])
    for f in visualize(cfg, args.output, args.dataset, args.index):
        print(os.path.join(args.output, f))


if __name__ == "__main__":
    main()
