#!/usr/bin/env python
"""FGD cost, measured in one run on this machine (issue: FGD on the FPN).

1. Vectorized FGD masks vs the per-box loop reference (tests/reference_masks.py) at 100 boxes x 8
   images on P2-sized maps (800x1333 input, stride 4). Target: >= 20x faster.
2. All FGD terms for 5 levels, forward + backward, vs one student training step on the demo config
   (batch 8). Target: <= 10 % of the step.

    .venv/bin/python benchmarks/bench_fgd.py [--rounds R] [--step-rounds R] [--device cuda]
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
from detkd.losses.masks import _area_table, _push_down, _scale_masks  # noqa: E402


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


def _once(fn, device="cpu"):
    """Seconds of one call; on a GPU, from an idle device to the end of the work it queued."""
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if on_gpu:
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def bench_masks(rounds, device="cpu"):
    """Vectorized masks vs the per-box loop, in interleaved rounds (this VM's speed drifts by up to
    +-50 % over minutes, so both sides are timed in each round): per round the best of 3 vectorized
    calls and one loop call; medians over the rounds, and the median of the per-round ratios.

    Also two parts of the vectorized call on their own, which bound its speed on a CPU: the fixed
    cost of a call (8 images, 1 box each, 8x8 grid: the torch ops' dispatch cost, paid whatever the
    size) and the dense passes over the grid that this input needs (fill the area table, one min
    pass per level of the widest box row, the conversion to the two float masks). ``device`` runs
    all of it (the loop too) on another device, e.g. ``cuda``.
    """
    g = torch.Generator().manual_seed(0)
    sizes = [(800, 1333)] * 8
    boxes = []
    for _ in sizes:
        xy = torch.rand(100, 2, generator=g) * torch.tensor([1233.0, 700.0])
        wh = 4 + torch.rand(100, 2, generator=g) * 200
        boxes.append(torch.cat([xy, xy + wh], 1).to(device))
    hw = (200, 336)
    fg, bg = fgd_masks(boxes, sizes, hw, stride=4)
    rfg, rbg = loop_fgd_masks(boxes, sizes, hw, 4)
    assert torch.allclose(fg, rfg, atol=1e-6) and torch.allclose(bg, rbg, atol=1e-6)
    del fg, bg, rfg, rbg

    def vectorized():
        return fgd_masks(boxes, sizes, hw, stride=4)

    def loop():
        return loop_fgd_masks(boxes, sizes, hw, 4)

    vec_times, loop_times = [], []
    for _ in range(rounds):
        vec_times.append(min(_once(vectorized, device) for _ in range(3)))
        loop_times.append(_once(loop, device))
    ratio = statistics.median(lp / v for lp, v in zip(loop_times, vec_times))
    tiny_boxes = [torch.tensor([[1.0, 1.0, 9.0, 9.0]], device=device)] * 8
    fixed = statistics.median(_once(lambda: fgd_masks(tiny_boxes, [(32, 32)] * 8, (8, 8), stride=4), device)
                              for _ in range(20))
    cells = torch.cat([torch.ceil(b[:, 2:] / 4) - torch.floor(b[:, :2] / 4) for b in boxes])
    widest, largest = int(cells[:, 0].max()), int(cells.prod(1).max())
    dense = statistics.median(_once(lambda: _dense_passes(len(sizes), hw, widest.bit_length() - 1, largest,
                                                          device), device) for _ in range(20))
    return statistics.median(vec_times), statistics.median(loop_times), ratio, fixed, dense


def _dense_passes(n, hw, pushdowns, max_area, device="cpu"):
    """The passes over the (N, H, W) grid that :func:`fgd_masks` makes, without the boxes: an empty
    area table, its push-downs and the conversion to the two scale masks."""
    table = _area_table(n * hw[0], hw[1], pushdowns, max_area, device)
    above, below = table.buffers[0], table.buffers[1]
    for level in range(pushdowns - 1, -1, -1):
        above, below = _push_down(above, below, table.guard, level)
    return _scale_masks(above[:, table.guard:].view(n, *hw), table.no_box, [hw] * n)


def bench_fgd_vs_step(rounds):
    """One student training step and FGD on 5 levels (forward + backward, best of 3) per round, both
    timed in each of the interleaved rounds; medians, and the median of the per-round shares."""
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

    student_step()  # warm-up
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

    fgd_fwd_bwd()
    steps, fgds = [], []
    for _ in range(rounds):
        steps.append(_once(student_step))
        fgds.append(min(_once(fgd_fwd_bwd) for _ in range(3)))
    share = statistics.median(f / s for f, s in zip(fgds, steps))
    return statistics.median(steps), statistics.median(fgds), share


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the masks test")
    parser.add_argument("--step-rounds", type=int, default=10, help="interleaved rounds of the step test")
    parser.add_argument("--device", default="cpu", help="device of the masks test (the step test runs on the CPU)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"# FGD benchmark — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}")
    vec, loop, ratio, fixed, dense = bench_masks(args.rounds, args.device)
    print(f"masks on {args.device}, 100 boxes x 8 images, 200x336 grid: vectorized {vec * 1e3:.2f} ms, per-box loop "
          f"{loop * 1e3:.1f} ms, speed-up {ratio:.1f}x (median of {args.rounds} interleaved rounds; "
          f"target >= 20x)")
    print(f"  parts of the vectorized call: fixed cost (1 box per image, 8x8 grid) {fixed * 1e3:.2f} ms, "
          f"dense passes over the grid alone {dense * 1e3:.2f} ms; the loop over their sum: "
          f"{loop / (fixed + dense):.1f}x")
    step, fgd, share = bench_fgd_vs_step(args.step_rounds)
    print(f"student training step (demo config, batch 8): {step * 1e3:.1f} ms; FGD 5 levels fwd+bwd: "
          f"{fgd * 1e3:.1f} ms = {100 * share:.1f} % of the step (median of {args.step_rounds} interleaved "
          "rounds; target <= 10 %)")


if __name__ == "__main__":
    main()
