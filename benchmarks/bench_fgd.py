#!/usr/bin/env python
"""FGD cost, measured in one run on this machine (issue: FGD on the FPN).

1. Vectorized FGD masks vs the per-box loop reference (tests/reference_masks.py) at 100 boxes x 8
   images on P2-sized maps (800x1333 input, stride 4). Target: >= 20x faster.
2. All FGD terms for 5 levels, forward + backward, vs one student training step on the demo config
   (batch 8). Target: <= 10 % of the step.

    .venv/bin/python benchmarks/bench_fgd.py [--repeats N]
"""
import argparse
import os
import platform
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from reference_masks import loop_fgd_masks  # noqa: E402

from detkd.losses import fgd_masks  # noqa: E402


def timed(fn, repeats, warmup=1):
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_masks(repeats):
    g = torch.Generator().manual_seed(0)
    sizes = [(800, 1333)] * 8
    boxes = []
    for _ in sizes:
        xy = torch.rand(100, 2, generator=g) * torch.tensor([1233.0, 700.0])
        wh = 4 + torch.rand(100, 2, generator=g) * 200
        boxes.append(torch.cat([xy, xy + wh], 1))
    hw = (200, 336)
    vec = timed(lambda: fgd_masks(boxes, sizes, hw, stride=4), repeats)
    loop = timed(lambda: loop_fgd_masks(boxes, sizes, hw, 4), max(1, repeats // 3))
    fg, bg = fgd_masks(boxes, sizes, hw, stride=4)
    rfg, rbg = loop_fgd_masks(boxes, sizes, hw, 4)
    assert torch.allclose(fg, rfg, atol=1e-6) and torch.allclose(bg, rbg, atol=1e-6)
    return vec, loop


def bench_fgd_vs_step(repeats):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.data import build_detection_train_loader
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    from detkd import add_detkd_config
    from detkd.data import register_shapes_datasets
    from detkd.modeling import FGDDistiller
    from detkd.modeling.batch import DistillBatch, SideOutputs
    from detkd.modeling.heads import capture_output

    register_shapes_datasets()
    cfg = get_cfg()
    add_detkd_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs/demo/student.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATALOADER.NUM_WORKERS = 0
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    data = next(iter(build_detection_train_loader(cfg)))

    def student_step():
        with EventStorage():
            losses = model(data)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    step = timed(student_step, repeats)

    with capture_output(model.student.backbone) as out, EventStorage():
        model(data)
    levels = ["p2", "p3", "p4", "p5", "p6"]
    s_feats = {k: out["output"][k].detach() for k in levels}
    t_feats = {k: torch.randn(v.shape[0], 128, *v.shape[-2:]) for k, v in s_feats.items()}
    gt = [x["instances"].gt_boxes.tensor for x in data]
    sizes = [tuple(x["image"].shape[-2:]) for x in data]
    fgd = FGDDistiller(in_features=levels, student_channels=[64] * 5, teacher_channels=[128] * 5)

    def fgd_fwd_bwd():
        feats = {k: v.clone().requires_grad_(True) for k, v in s_feats.items()}
        batch = DistillBatch(student=SideOutputs(features=feats), teacher=SideOutputs(features=t_feats),
                             gt_boxes=gt, image_sizes=sizes, strides={k: 2.0 ** int(k[1]) for k in levels})
        sum(fgd(batch).values()).backward()

    return step, timed(fgd_fwd_bwd, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"# FGD benchmark — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}")
    vec, loop = bench_masks(args.repeats)
    print(f"masks, 100 boxes x 8 images, 200x336 grid: vectorized {vec * 1e3:.1f} ms, "
          f"per-box loop {loop * 1e3:.1f} ms, speed-up {loop / vec:.1f}x (target >= 20x)")
    step, fgd = bench_fgd_vs_step(args.repeats)
    print(f"student training step (demo config, batch 8): {step * 1e3:.1f} ms; FGD 5 levels fwd+bwd: "
          f"{fgd * 1e3:.1f} ms = {100 * fgd / step:.1f} % of the step (target <= 10 %)")


if __name__ == "__main__":
    main()
