#!/usr/bin/env python
"""Where Chen's hint on raw maps spikes on the glyphs, and what the balance makes of it.

Two measurements on the demo's cached glyphs runs (``python -m detkd.demo --dataset glyphs``
first; ``--output`` is that command's output directory):

* **per image**: the mean square of the teacher's backbone map (``--feature``, ``res4`` as
  ``configs/demo/distill_chen.yaml`` hints it) over the first ``--images`` training images, and
  its quantiles: a heavy tail means a few images put the hint's squared error far above the rest;
* **per iteration**: the demo's ``chen_paper`` trial of ``--seed`` (Chen's losses in the paper's
  form, the hint on raw maps at 1x, exactly as the demo trains it, seeded) for ``--iters``
  iterations with the runaway guard off, each iteration's hint terms and their ratio to the
  detection loss read from the ``EventStorage``: spikes on the batches holding those images, and
  the scale the automatic balance fixes after its window.

    .venv/bin/python benchmarks/bench_hint_spikes.py --output output/g6 [--teacher FILE] \
        [--seed 1] [--iters 40] [--images 300] [--json OUT.json]

``--teacher`` swaps the teacher's weights (another teacher of the same config) and nothing else.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "projects"))


def chen_trial_config(output: str, seed: int, teacher: str):
    """The demo's ``chen`` trial config of ``seed`` on the glyphs cached in ``output``."""
    from detkd.demo import cli
    from detkd.demo.experiments import diagnosis_experiments
    from detkd.demo.runner import Trunks, plan_students, trunk_file
    from detkd.demo.training import demo_data

    data = demo_data("glyphs")
    root = os.path.join(output, "glyphs")
    trunks = Trunks({d: trunk_file(root, d) for d in (18, 34)}, "bench")
    trials, _, _ = plan_students(
        os.path.join(output, "bench_hint_spikes"),
        # the hint on raw maps at 1x, the paper's form (Chen's default is the hint standardized)
        {"chen": diagnosis_experiments()["chen_paper"]},
        {"chen": seed + 1},
        cli.STUDENT_ITERS["glyphs"],
        4,
        [],
        teacher,
        "bench",
        data,
        trunks,
        cli.STUDENT_LR_STEPS["glyphs"],
    )
    return trials["chen", seed].cfg.clone()


def per_image(cfg, feature: str, n_images: int):
    """(file name, mean square of the teacher's ``feature`` map) of the first training images."""
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model

    teacher = build_model(cfg).teacher.eval()  # DistillRCNN loads the teacher's weights itself
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TRAIN[0])
    rows = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= n_images:
                break
            images = teacher.preprocess_image(batch)
            fmap = teacher.backbone.bottom_up(images.tensor)[feature]
            rows.append((os.path.basename(batch[0]["file_name"]), fmap.pow(2).mean().item()))
    return rows


def per_iteration(cfg, iters: int):
    """Each iteration's hint terms (``loss_hint_*``) and ratios (``balance/loss_hint_*``)."""
    from detectron2.engine import HookBase
    from detectron2.utils.env import seed_all_rng

    from detkd.engine import DistillTrainer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = iters
    cfg.TEST.EVAL_PERIOD = 0
    cfg.DATASETS.TEST = ()
    cfg.MODEL.DISTILL.GUARD.ITERS = 0  # the guard off: the spikes are what is measured
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    rows = []

    class Record(HookBase):
        def after_step(self):
            latest = self.trainer.storage.latest()
            rows.append(
                {k: v[0] for k, v in latest.items() if "loss_hint" in k or k == "total_loss"}
            )

    seed_all_rng(cfg.SEED)  # as the survey's train_config: the demo's batches, in its order
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.register_hooks([Record()])
    trainer.train()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="the demo's output directory")
    parser.add_argument("--teacher", help="teacher weights (default: the demo's cached teacher)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--feature", default="res4")
    parser.add_argument("--json", help="write both measurements to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from detkd.data.register import register_shapes_datasets

    register_shapes_datasets(kind="glyphs")
    teacher = args.teacher or os.path.join(args.output, "glyphs", "teacher", "model_final.pth")
    if not os.path.isfile(teacher):
        sys.exit(f"bench_hint_spikes: no teacher weights at {teacher} (run the glyphs demo first)")
    cfg = chen_trial_config(args.output, args.seed, teacher)

    images = per_image(cfg, args.feature, args.images)
    squares = np.array([m for _, m in images])
    median = float(np.median(squares))
    q90, q99, top = np.percentile(squares, [90, 99, 100])
    print(
        f"teacher {args.feature}, mean square per image over {len(images)} training images: "
        f"median {median:.3g}, p90 {q90:.3g}, p99 {q99:.3g}, max {top:.3g}; over 10x the median "
        f"{int((squares > 10 * median).sum())}, over 100x {int((squares > 100 * median).sum())}"
    )
    for name, m in sorted(images, key=lambda r: -r[1])[:5]:
        print(f"  {name}: {m:.3g} ({m / median:.0f}x the median)")

    steps = per_iteration(cfg, args.iters)
    term = f"loss_hint_{cfg.MODEL.DISTILL.HINT.STUDENT_FEATURES[0]}"
    print(f"iteration: {term}, its ratio to the detection loss (the guard off)")
    nan = float("nan")
    for i, r in enumerate(steps):
        print(f"  {i}: {r.get(term, nan):.4g}, {r.get('balance/' + term, nan):.4g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(teacher=teacher, per_image=images, per_iteration=steps), f, indent=1)


if __name__ == "__main__":
    main()
