"""What a demo teacher's FPN maps give feature imitation to copy: where FGD's loss lies.

FGD's feature terms (Yang et al. 2022, Eq. 7) weigh the squared error ``(T - f(S))^2`` by the
teacher's spatial and channel attention, both computed from ``|T|`` at temperature 0.5. So the
teacher's own activation statistics decide what the student is pulled to reproduce. For each FPN
level this reports, on the first ``--images`` validation images of a demo set:

* ``|T|`` on the objects' cells and on the background's (mean and 99th percentile);
* FGD's feature terms ``alpha L_fg + beta L_bg`` (``MODEL.DISTILL.FGD``'s weights and temperature)
  with the student at zero, i.e. weighing ``T^2``: the background's share, the share of the single
  largest channel and the share of the 1 % of cells that carry most, on the raw maps and on the maps
  standardized per channel (``FGD.NORMALIZE``);
* the same shares of a plain squared error over every image cell (MGD's loss), raw and standardized
  (``MGD.NORMALIZE``).

The images go through the evaluation's resize and no random augmentation. The teacher is the demo's
cached one (``<output>/teacher`` for the shapes set, else ``<output>/<set>/teacher``: run the demo
first). ``--student RUN_DIR``: the terms on ``(T - f(S))^2`` instead, with the FGD student saved in
that run and its own align layers: what is left to imitate. Writes ``teacher_features.md`` (or
``teacher_features_student.md``) beside the teacher::

    python -m detkd.demo.features --dataset glyphs [--output output/demo] [--images 200]

``--r2 RUN_DIR`` (any demo student run) measures instead how much of the teacher's maps the
student's already hold: the R² of the teacher's maps from the student's through one linear map per
level, fitted on half the images and measured on the other half, on objects and background.
``--pafpn RUN_DIR ...`` (PAFPN student runs: the PAFPN baseline, MSSD) measures the scale of each
bottom-up output ``N_l`` against the top-down map ``P_l`` it starts from, what MSSD's
self-distillation pulls together.
"""

import argparse
import math
import os
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data.detection_utils import build_augmentation
from detectron2.modeling import build_model
from torch.nn import functional as F

from ..data.register import register_shapes_datasets
from ..losses import channel_attention, channel_standardize, fgd_masks, spatial_attention
from ..modeling.heads import run_backbone
from ..modeling.pafpn import PAFPN
from .experiments import CONFIG_DIR
from .training import demo_config, demo_data

__all__ = [
    "fgd_feature_terms",
    "squared_error_terms",
    "term_shares",
    "teacher_feature_stats",
    "format_feature_stats",
    "student_detector",
    "fgd_student_maps",
    "student_maps",
    "linear_r2",
    "teacher_from_student_r2",
    "format_r2",
    "pan_scale",
    "format_pan_scale",
    "main",
]

LEVELS = ("p2", "p3", "p4", "p5", "p6")
# teacher_from_student_r2 fits a level's linear map only on at least this many cells per input
# channel (and bias)
MIN_CELLS_PER_INPUT = 10


def fgd_feature_terms(
    t: torch.Tensor,
    fg: torch.Tensor,
    bg: torch.Tensor,
    s: Optional[torch.Tensor] = None,
    *,
    alpha: float,
    beta: float,
    temperature: float,
) -> Dict[str, torch.Tensor]:
    """FGD's feature terms ``alpha L_fg + beta L_bg`` on ``(T - S)^2`` (``T^2`` without a student
    map ``s``) for one batch, weighted by the teacher's attention at ``temperature`` and the masks:
    per-channel totals (C,), per-cell (N*H*W,), the background's sum and the total."""
    diff = t if s is None else t - s
    weighted = (
        diff
        * diff
        * channel_attention(t, temperature)[:, :, None, None]
        * spatial_attention(t, temperature)[:, None]
    )
    per_position = (alpha * fg + beta * bg)[:, None] * weighted
    return {
        "channels": per_position.sum(dim=(0, 2, 3)),
        "cells": per_position.sum(dim=1).flatten(),
        "bg": (beta * bg[:, None] * weighted).sum(),
        "total": per_position.sum(),
    }


def squared_error_terms(
    t: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, s: Optional[torch.Tensor] = None
) -> Dict[str, torch.Tensor]:
    """The plain squared error ``(T - S)^2`` (``T^2`` without ``s``) over the image cells (MGD's
    loss, which weighs every position alike), in the keys of :func:`fgd_feature_terms`."""
    diff = t if s is None else t - s
    fg_cells, bg_cells = (fg > 0).float(), (bg > 0).float()
    per_position = (fg_cells + bg_cells)[:, None] * diff * diff
    return {
        "channels": per_position.sum(dim=(0, 2, 3)),
        "cells": per_position.sum(dim=1).flatten(),
        "bg": (bg_cells[:, None] * diff * diff).sum(),
        "total": per_position.sum(),
    }


def term_shares(parts: List[Dict[str, torch.Tensor]]) -> Dict[str, float]:
    """Over the batches' :func:`fgd_feature_terms` (or :func:`squared_error_terms`): the
    background's share of the total, the
    largest channel's and the top 1 % of cells' (at least one cell)."""
    total = sum(float(p["total"]) for p in parts)
    cells = torch.cat([p["cells"] for p in parts])
    top = cells.topk(max(1, cells.numel() // 100)).values.sum()
    return {
        "bg": sum(float(p["bg"]) for p in parts) / total,
        "channel": float(torch.stack([p["channels"] for p in parts]).sum(0).max()) / total,
        "top_cells": float(top) / total,
    }


@torch.no_grad()
def teacher_feature_stats(
    model, dicts: List[Dict], cfg, batch_size: int = 8, student: Optional[Callable] = None
) -> Dict[str, Dict]:
    """Per FPN level of ``model`` (a detectron2 ``GeneralizedRCNN`` with an FPN) on the data set
    ``dicts``: ``|T|`` on objects and background, and where FGD's feature terms lie (module
    docstring), raw (``raw_*``) and standardized (``norm_*``). ``student``: a function of the
    batch's input dicts to the student's maps aligned to the teacher's channels (level -> map);
    the terms then weigh ``(T - f(S))^2``, what is left to imitate. FGD's weights and temperature
    are ``cfg.MODEL.DISTILL.FGD``'s."""
    model.eval()
    fgd = cfg.MODEL.DISTILL.FGD
    weights = dict(alpha=fgd.ALPHA, beta=fgd.BETA, temperature=fgd.TEMPERATURE)
    # annotated images at the evaluation's resize, without the training's random flips
    mapper = DatasetMapper(cfg, is_train=True, augmentations=build_augmentation(cfg, False))
    items = [mapper(d) for d in dicts]
    strides = {lvl: model.backbone.output_shape()[lvl].stride for lvl in LEVELS}
    values = {
        lvl: {k: [] for k in ("fg", "bg", "raw", "norm", "mse", "mse_norm")} for lvl in LEVELS
    }
    for i in range(0, len(items), batch_size):
        batch = items[i : i + batch_size]
        images = model.preprocess_image(batch)
        feats = run_backbone(model.backbone, images.tensor)
        boxes = [x["instances"].gt_boxes.tensor for x in batch]
        aligned = student(batch) if student is not None else {}
        for lvl in LEVELS:
            t = feats[lvl].float()
            s = aligned.get(lvl)
            fg, bg = fgd_masks(boxes, list(images.image_sizes), t.shape[-2:], strides[lvl])
            cells = t.abs().permute(0, 2, 3, 1)
            values[lvl]["fg"].append(cells[fg > 0].flatten())
            values[lvl]["bg"].append(cells[bg > 0].flatten())
            values[lvl]["raw"].append(fgd_feature_terms(t, fg, bg, s, **weights))
            values[lvl]["mse"].append(squared_error_terms(t, fg, bg, s))
            z_t = channel_standardize(t)
            z_s = channel_standardize(s) if s is not None else None
            values[lvl]["norm"].append(fgd_feature_terms(z_t, fg, bg, z_s, **weights))
            values[lvl]["mse_norm"].append(squared_error_terms(z_t, fg, bg, z_s))
    stats = {}
    for lvl, v in values.items():
        fg_abs, bg_abs = torch.cat(v["fg"]), torch.cat(v["bg"])
        shares = {k: term_shares(v[k]) for k in ("raw", "norm", "mse", "mse_norm")}
        stats[lvl] = {
            "fg_mean": float(fg_abs.mean()),
            "bg_mean": float(bg_abs.mean()),
            "fg_q99": float(np.quantile(fg_abs.numpy(), 0.99)),
            "bg_q99": float(np.quantile(bg_abs.numpy(), 0.99)),
            **{f"{kind}_{k}": x for kind, d in shares.items() for k, x in d.items()},
        }
    return stats


def format_feature_stats(stats: Dict[str, Dict], title: str, error: str = "T^2") -> str:
    """A markdown table of :func:`teacher_feature_stats` (``error``: what the terms weighed)."""
    lines = [
        f"# {title}",
        "",
        "|T|: the teacher's FPN activations on the objects' cells and on the background's; FGD's "
        f"feature terms (alpha L_fg + beta L_bg, the paper's weights) on {error}: the background's "
        "share, the largest single channel's, the top 1 % of cells', raw and standardized per "
        "channel (FGD.NORMALIZE); the plain squared error over every cell (MGD's) alike, raw and "
        "standardized (MGD.NORMALIZE).",
        "",
        "| level | \\|T\\| objects mean / q99 | \\|T\\| background mean / q99 "
        "| FGD raw: bg / one channel / 1 % cells | FGD standardized: bg / one channel / 1 % cells "
        "| squared error raw: bg / one channel / 1 % cells | squared error standardized: bg / "
        "one channel / 1 % cells |",
        "|---|---|---|---|---|---|---|",
    ]
    for lvl, s in stats.items():
        lines.append(
            f"| {lvl} | {s['fg_mean']:.2f} / {s['fg_q99']:.1f} | {s['bg_mean']:.2f} / "
            f"{s['bg_q99']:.1f} | {s['raw_bg']:.0%} / {s['raw_channel']:.0%} / "
            f"{s['raw_top_cells']:.0%} | {s['norm_bg']:.0%} / {s['norm_channel']:.0%} / "
            f"{s['norm_top_cells']:.0%} | {s['mse_bg']:.0%} / {s['mse_channel']:.0%} / "
            f"{s['mse_top_cells']:.0%} | {s['mse_norm_bg']:.0%} / {s['mse_norm_channel']:.0%} / "
            f"{s['mse_norm_top_cells']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def student_detector(run_dir: str, data):
    """The student detector saved in ``run_dir/model_final.pth`` (any demo student run of the
    ResNet-18 student, FPN or PAFPN, at the FPN width its weights have) and the run's whole state
    dict."""
    path = os.path.join(run_dir, "model_final.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    pafpn = "student.backbone.fpn.fpn_lateral2.weight" in state
    lateral = state.get(f"student.backbone.{'fpn.' if pafpn else ''}fpn_lateral2.weight")
    opts = [] if lateral is None else ["MODEL.FPN.OUT_CHANNELS", lateral.shape[0]]
    if pafpn:
        opts += ["MODEL.BACKBONE.NAME", "build_resnet_pafpn_backbone"]
    cfg = demo_config(os.path.join(CONFIG_DIR, "student.yaml"), data.opts(teacher=False) + opts)
    model = build_model(cfg)  # a DistillRCNN without a teacher: its student is the detector
    saved = {k: v for k, v in state.items() if k.startswith("student.")}
    missing = [k for k in model.state_dict() if k.startswith("student.") and k not in saved]
    if missing:
        raise SystemExit(f"features: {path} lacks student weights {missing[:3]}")
    model.load_state_dict(saved, strict=False)
    return model.student.eval(), state


def fgd_student_maps(run_dir: str, data) -> Callable:
    """The FPN maps of the FGD student saved in ``run_dir/model_final.pth`` (a demo FGD run),
    through that run's own align layers: a function of a batch of input dicts (no gradient)."""
    path = os.path.join(run_dir, "model_final.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    prefix = "distillers.fgd.levels."
    align = {
        k[len(prefix) :].split(".")[0]: k for k in state if k.startswith(prefix) and ".align." in k
    }
    if not align:
        raise SystemExit(f"features: {path} holds no FGD align layers; give an FGD run")
    model, state = student_detector(run_dir, data)

    @torch.no_grad()
    def maps(batch):
        feats = run_backbone(model.backbone, model.preprocess_image(batch).tensor)
        return {
            lvl: F.conv2d(
                feats[lvl],
                state[f"{prefix}{lvl}.align.weight"].to(feats[lvl]),
                state[f"{prefix}{lvl}.align.bias"].to(feats[lvl]),
            )
            for lvl in align
        }

    return maps


def student_maps(run_dir: str, data) -> Callable:
    """The FPN maps of the student saved in ``run_dir`` (any demo student run), as they are: a
    function of a batch of input dicts (no gradient)."""
    model, _ = student_detector(run_dir, data)

    @torch.no_grad()
    def maps(batch):
        return run_backbone(model.backbone, model.preprocess_image(batch).tensor)

    return maps


def pan_scale(detector, dicts: List[Dict], cfg) -> Dict[str, Dict]:
    """On a PAFPN student (``detector``, a ``GeneralizedRCNN`` whose backbone is
    :class:`detkd.modeling.pafpn.PAFPN`), per level of its bottom-up path: the mean square of its
    output ``N_l`` (``pan``), of the top-down FPN map ``P_l`` it starts from (``fpn``), and their
    distance ``mean((N_l - P_l)^2) / mean(P_l^2)`` (``distance``), and their distance on the
    maps standardized per channel, ``mean((norm(N_l) - norm(P_l))^2)`` (``norm_distance``: 2
    where each channel of ``N_l`` is uncorrelated with ``P_l``'s over the image, 0 where it copies
    its pattern), over ``dicts`` at the evaluation's resize, one image at a time (no batch padding
    enters the sums; ``norm`` standardizes over the image, as ``MSSD.NORMALIZE`` does over a batch
    of one). MSSD's self-distillation drives ``distance`` to 0, on standardized maps
    ``norm_distance``; ``p2`` is left out (``N_2 = P_2``)."""
    detector.eval()
    mapper = DatasetMapper(cfg, is_train=False)
    sums = {}
    with torch.no_grad():
        for d in dicts:
            maps = detector.backbone(detector.preprocess_image([mapper(d)]).tensor)
            for lvl in detector.backbone.path_features[1:]:
                n, p = maps[lvl].double(), maps[f"fpn_{lvl}"].double()
                norm_d2 = (channel_standardize(n) - channel_standardize(p)).pow(2).sum()
                acc = sums.setdefault(lvl, torch.zeros(5, dtype=torch.float64))
                acc += torch.stack(
                    [
                        n.pow(2).sum(),
                        p.pow(2).sum(),
                        (n - p).pow(2).sum(),
                        norm_d2,
                        n.new_tensor(n.numel()),
                    ]
                )
    return {
        lvl: {
            "pan": (n2 / count).item(),
            "fpn": (p2 / count).item(),
            "distance": (d2 / p2).item(),
            "norm_distance": (norm_d2 / count).item(),
        }
        for lvl, (n2, p2, d2, norm_d2, count) in sums.items()
    }


def format_pan_scale(scale: Dict[str, Dict], title: str) -> str:
    """A markdown table of :func:`pan_scale`."""
    lines = [
        f"# {title}",
        "",
        "Per level of the bottom-up path: the mean square of its output N_l and of the top-down "
        "FPN map P_l it starts from, mean((N_l - P_l)^2) / mean(P_l^2) (MSSD's "
        "self-distillation drives it to 0), and mean((norm(N_l) - norm(P_l))^2) on the maps "
        "standardized per channel over each image (MSSD.NORMALIZE's self-distillation drives it "
        "to 0; 2: uncorrelated).",
        "",
        "| level | mean N_l^2 | mean P_l^2 | distance | standardized distance |",
        "|---|---|---|---|---|",
    ]
    for lvl, v in scale.items():
        lines.append(
            f"| {lvl} | {v['pan']:.3g} | {v['fpn']:.3g} | {v['distance']:.3g} "
            f"| {v['norm_distance']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def linear_r2(
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    ridge: float = 1e-4,
) -> Dict[str, float]:
    """How well a linear map with a bias (what a 1x1 align conv can do), fitted by ridge least
    squares on ``(x_fit, y_fit)`` (cells x channels), predicts ``y_eval`` from ``x_eval``:
    ``total`` = 1 - SSE / SST over every channel (channels weighted by their variance, as a squared
    error weighs them) and ``channel`` = the mean of each channel's R² (every channel alike, as on
    standardized maps). SST is about ``y_fit``'s channel means. ``ridge`` is relative to the mean
    diagonal of ``x_fit``'s centred Gram matrix (a constant input: a tiny floor)."""
    x_fit, y_fit, x_eval, y_eval = (v.double() for v in (x_fit, y_fit, x_eval, y_eval))
    x_mean, y_mean = x_fit.mean(0), y_fit.mean(0)
    xc = x_fit - x_mean
    gram = xc.T @ xc
    scale = gram.diagonal().mean().clamp_min(1e-12)  # a constant input leaves gram at 0
    gram += ridge * scale * torch.eye(gram.shape[0], dtype=gram.dtype)
    weight = torch.linalg.solve(gram, xc.T @ (y_fit - y_mean))
    predicted = (x_eval - x_mean) @ weight + y_mean
    sse = ((y_eval - predicted) ** 2).sum(0)
    sst = ((y_eval - y_mean) ** 2).sum(0)
    return {
        "total": float(1 - sse.sum() / sst.sum()),
        "channel": float((1 - sse / sst.clamp_min(1e-12)).mean()),
    }


@torch.no_grad()
def teacher_from_student_r2(
    model, student: Callable, dicts: List[Dict], cfg, batch_size: int = 8
) -> Dict[str, Dict[str, float]]:
    """Per FPN level, on the objects' cells and on the background's: the :func:`linear_r2` of the
    teacher's maps (``model``, a detectron2 ``GeneralizedRCNN`` with an FPN) from a student's
    (``student``: input dicts -> level -> map, at the teacher's strides), the linear map fitted on
    the first half of ``dicts`` and measured on the second. The share of the teacher's maps the
    student's already hold up to what an align layer does: what feature imitation has left to
    teach is the rest. Keys per level: ``<fg|bg>_total``, ``<fg|bg>_channel`` (NaN where too few
    cells to fit, :data:`MIN_CELLS_PER_INPUT`) and ``<fg|bg>_cells`` (the cells fitted on)."""
    model.eval()
    mapper = DatasetMapper(cfg, is_train=True, augmentations=build_augmentation(cfg, False))
    items = [mapper(d) for d in dicts]
    half = len(items) // 2
    if half < 1:
        raise ValueError("teacher_from_student_r2 needs at least 2 images (fit and measure)")
    strides = {lvl: model.backbone.output_shape()[lvl].stride for lvl in LEVELS}
    cells = {(lvl, r, part): ([], []) for lvl in LEVELS for r in ("fg", "bg") for part in (0, 1)}
    for part, chunk in enumerate((items[:half], items[half:])):
        for i in range(0, len(chunk), batch_size):
            batch = chunk[i : i + batch_size]
            images = model.preprocess_image(batch)
            teacher = run_backbone(model.backbone, images.tensor)
            mine = student(batch)
            boxes = [x["instances"].gt_boxes.tensor for x in batch]
            for lvl in LEVELS:
                t, s = teacher[lvl].float(), mine[lvl].float()
                if s.shape[-2:] != t.shape[-2:]:
                    raise ValueError(
                        f"{lvl}: the student's map {tuple(s.shape)} is not at the teacher's "
                        f"resolution {tuple(t.shape)}"
                    )
                fg, bg = fgd_masks(boxes, list(images.image_sizes), t.shape[-2:], strides[lvl])
                for region, mask in (("fg", fg > 0), ("bg", bg > 0)):
                    xs, ys = cells[lvl, region, part]
                    xs.append(s.permute(0, 2, 3, 1)[mask])
                    ys.append(t.permute(0, 2, 3, 1)[mask])
    result = {}
    for lvl in LEVELS:
        for region in ("fg", "bg"):
            (x0, y0), (x1, y1) = (tuple(map(torch.cat, cells[lvl, region, p])) for p in (0, 1))
            # a fit on fewer cells than MIN_CELLS_PER_INPUT per input channel measures the fit's
            # overfitting, not the maps: left out (NaN)
            enough = len(x0) >= MIN_CELLS_PER_INPUT * (x0.shape[1] + 1) and len(x1) > 0
            r2 = linear_r2(x0, y0, x1, y1) if enough else {"total": math.nan, "channel": math.nan}
            result.setdefault(lvl, {}).update(
                {f"{region}_{k}": v for k, v in r2.items()}, **{f"{region}_cells": len(x0)}
            )
    return result


def format_r2(r2: Dict[str, Dict[str, float]], title: str) -> str:
    """A markdown table of :func:`teacher_from_student_r2`."""
    lines = [
        f"# {title}",
        "",
        "R² of the teacher's FPN maps predicted from the student's by one linear map per level "
        "and region (what a 1x1 align layer can do), fitted on the first half of the images and "
        "measured on the second: over every channel (weighted by its variance) and the mean of "
        f"each channel's; a level with under {MIN_CELLS_PER_INPUT} fitting cells per input "
        "channel is left out.",
        "",
        "| level | objects: R² / per channel (cells fitted) | background: R² / per channel "
        "(cells fitted) |",
        "|---|---|---|",
    ]

    def cell(v, region):
        if math.isnan(v[f"{region}_total"]):
            return f"too few cells ({v[f'{region}_cells']})"
        return (
            f"{v[f'{region}_total']:.2f} / {v[f'{region}_channel']:.2f} "
            f"({v[f'{region}_cells']})"
        )

    for lvl, v in r2.items():
        lines.append(f"| {lvl} | {cell(v, 'fg')} | {cell(v, 'bg')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("shapes", "hard", "glyphs"), default="shapes")
    parser.add_argument("--output", default="output/demo", help="the demo's --output")
    parser.add_argument("--images", type=int, default=200, help="validation images measured")
    parser.add_argument(
        "--student",
        help="an FGD student's run directory (its model_final.pth): the terms on (T - f(S))^2, "
        "with its own align layers",
    )
    parser.add_argument(
        "--r2",
        metavar="RUN_DIR",
        help="any demo student's run directory: instead of the terms, how much of the teacher's "
        "maps a linear map of that student's predicts (R², fitted on half the images, measured "
        "on the other half), written to RUN_DIR/teacher_from_student.md",
    )
    parser.add_argument(
        "--pafpn",
        nargs="+",
        metavar="RUN_DIR",
        help="PAFPN student runs (the PAFPN baseline, MSSD): instead of the teacher's maps, the "
        "scale of each bottom-up output against the FPN map it starts from (pan_scale), written "
        "to RUN_DIR/pan_scale.md; needs no teacher",
    )
    args = parser.parse_args(argv)
    if sum(map(bool, (args.r2, args.student, args.pafpn))) > 1:
        parser.error("--r2, --student and --pafpn measure different things: give one")
    data = demo_data(args.dataset)
    register_shapes_datasets(kind=data.kind)
    dicts = DatasetCatalog.get(data.val)[: args.images]
    if args.pafpn:
        scales = {}
        for run_dir in args.pafpn:
            detector, _ = student_detector(run_dir, data)
            if not isinstance(detector.backbone, PAFPN):
                raise SystemExit(f"features: {run_dir} holds an FPN student, not a PAFPN one")
            cfg = demo_config(os.path.join(CONFIG_DIR, "student.yaml"), data.opts(teacher=False))
            scales[run_dir] = pan_scale(detector, dicts, cfg)
            text = format_pan_scale(scales[run_dir], f"{run_dir} ({len(dicts)} validation images)")
            with open(os.path.join(run_dir, "pan_scale.md"), "w") as f:
                f.write(text)
            print(text, flush=True)
        return scales
    run = args.output if data.kind == "shapes" else os.path.join(args.output, data.kind)
    weights = os.path.join(run, "teacher", "model_final.pth")
    if not os.path.isfile(weights):
        raise SystemExit(
            f"features: no teacher at {weights}; run `python -m detkd.demo --dataset "
            f"{data.kind} --output {args.output}` first"
        )
    cfg = demo_config(os.path.join(CONFIG_DIR, "teacher.yaml"), data.opts(teacher=False))
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    if args.r2:
        r2 = teacher_from_student_r2(model, student_maps(args.r2, data), dicts, cfg)
        text = format_r2(
            r2, f"The {data.kind} teacher's FPN maps ({weights}) from the student's ({args.r2})"
        )
        with open(os.path.join(args.r2, "teacher_from_student.md"), "w") as f:
            f.write(text)
        print(text, flush=True)
        return r2
    student = fgd_student_maps(args.student, data) if args.student else None
    stats = teacher_feature_stats(model, dicts, cfg, student=student)
    title = f"The {data.kind} teacher's FPN maps ({len(dicts)} validation images, {weights})"
    if args.student:
        title += f" against the FGD student of {args.student}"
    text = format_feature_stats(stats, title, "(T - f(S))^2" if args.student else "T^2")
    name = "teacher_features.md" if not args.student else "teacher_features_student.md"
    with open(os.path.join(run, name), "w") as f:
        f.write(text)
    print(text, flush=True)
    return stats


if __name__ == "__main__":
    main()
