#!/usr/bin/env python
"""The training-step time of the shipped COCO distillation configs at their own resolution, to
price a COCO schedule: batch 2 of 800x1333 images with 8 boxes each, R101-FPN teacher and R50-FPN
student with random weights (a step's cost does not depend on their values), each config's step
against the student's step alone, the median of ``--steps`` steps after 3 warm-up steps.

    python benchmarks/bench_coco_step.py [--device cuda] [--steps 20] [--amp] [--table FILE]
"""

import argparse
import contextlib
import glob
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch(device, n=2, h=800, w=1333, boxes=8, classes=80):
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        xy = torch.rand(boxes, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 4 + torch.rand(boxes, 2, generator=g) * torch.tensor([w * 0.25, h * 0.25])
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, classes, (boxes,), generator=g)
        image = torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8)
        out.append({"image": image, "instances": inst, "height": h, "width": w})
    return out


def step_seconds(model, data, steps, device, amp):
    from detectron2.utils.events import EventStorage

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)  # the weights stay: every step costs alike
    scaler = torch.cuda.amp.GradScaler(enabled=amp) if device == "cuda" else None
    autocast = (
        torch.autocast("cuda", dtype=torch.float16, enabled=amp)
        if device == "cuda"
        else contextlib.nullcontext()
    )
    times = []
    for i in range(steps + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with EventStorage(), autocast:
            losses = model(data)
        optimizer.zero_grad()
        loss = sum(losses.values())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--size", default="800,1333", help="H,W of the images (a smoke test: less)")
    parser.add_argument("--table", default="")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from detectron2.modeling import build_model

    from detkd import load_config
    from detkd.checkpoint import Checkpointer
    from detkd.config import student_only_config

    configs = sorted(glob.glob(os.path.join(ROOT, "configs/COCO-Detection/distill_*.yaml")))
    opts = ["MODEL.DEVICE", args.device, "MODEL.WEIGHTS", ""]
    # the teacher checkpoint (about 170 MB) lives only as long as the benchmark
    with tempfile.TemporaryDirectory(prefix="bench_coco_") as tmp:
        first = load_config(configs[0], opts)
        torch.manual_seed(0)
        teacher = build_model(load_config(first.MODEL.DISTILL.TEACHER.CONFIG_FILE, opts))
        Checkpointer(teacher, tmp).save("teacher")
        del teacher
        h, w = (int(v) for v in args.size.split(","))
        data = batch(args.device, h=h, w=w)
        student = build_model(student_only_config(first))
        base = step_seconds(student, data, args.steps, args.device, args.amp)
        del student
        lines = [
            f"COCO configs at {h}x{w}, batch 2, device {args.device}"
            f"{' with AMP (float16)' if args.amp else ''}, torch {torch.__version__}; median of "
            f"{args.steps} steps. Student alone (R50-FPN): {1e3 * base:.0f} ms/step.",
            "",
            "| config | ms/step | x student step | peak GPU MB |",
            "|---|---|---|---|",
        ]
        for config in configs:
            cfg = load_config(
                config, [*opts, "MODEL.DISTILL.TEACHER.WEIGHTS", os.path.join(tmp, "teacher.pth")]
            )
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            model = build_model(cfg)
            seconds = step_seconds(model, data, args.steps, args.device, args.amp)
            peak = (
                torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else float("nan")
            )
            lines.append(
                f"| {os.path.basename(config)} | {1e3 * seconds:.0f} | {seconds / base:.2f} "
                f"| {peak:.0f} |"
            )
            print(lines[-1], flush=True)
            del model
    text = "\n".join(lines)
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
