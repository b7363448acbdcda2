#!/usr/bin/env python
"""The first iterations at another feature scale: what each guard of the balance buys, measured.

Every demo survey config (each method, the combinations, ``all``) trains ``--iters`` iterations on
the demo data with a teacher whose backbone maps are multiplied by 1, 100 and 0.01 (a forward hook:
another teacher, resolution or data set), under three settings:

* ``paper``: ``BALANCE.AUTO False``, the papers' weights, no runaway guard;
* ``raw window``: the automatic balance measuring at the raw weights for ``AUTO_ITERS`` (20)
  iterations, then scaling (the behaviour before the running window);
* ``running``: the default, scaling from the first iteration by the ratio measured so far.

For each it reports whether every loss stayed finite (else the first non-finite iteration), the
largest ratio of one method's terms to the detection loss in the first iterations, and the median
ratio after the window. The teacher has random weights (its scale matters here, not its skill).

    .venv/bin/python benchmarks/bench_first_iterations.py [--iters 50] [--write BENCHMARKS.md]
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {
    "paper": ["MODEL.DISTILL.BALANCE.AUTO", False, "MODEL.DISTILL.GUARD.ITERS", 0],
    "raw window": [
        "MODEL.DISTILL.BALANCE.AUTO_WINDOW",
        "raw",
        "MODEL.DISTILL.GUARD.ITERS",
        0,
    ],
    "running": ["MODEL.DISTILL.GUARD.ITERS", 0],
}
SCALES = (1.0, 100.0, 0.01)
WINDOW = 20
# without global-norm clipping, as every shipped COCO/VOC config but FGD's (the demo configs clip)
SMALL = [
    "SOLVER.IMS_PER_BATCH", 4, "DATALOADER.NUM_WORKERS", 0, "TEST.EVAL_PERIOD", 0,
    "DATASETS.TEST", (), "SOLVER.STEPS", (), "SOLVER.CHECKPOINT_PERIOD", 100000,
    "SOLVER.GLOBAL_GRAD_CLIP_NORM", 0.0,
]  # fmt: skip


def run(config, teacher_weights, scale, setting, iters, out):
    from detectron2.engine import HookBase

    from detkd import load_config
    from detkd.engine import DistillTrainer

    class Record(HookBase):
        rows = []

        def after_step(self):
            latest = self.trainer.storage.latest()
            self.rows.append({k: v for k, (v, it) in latest.items() if it == self.trainer.iter})

    cfg = load_config(
        config,
        [
            *[str(o) if not isinstance(o, tuple) else o for o in SMALL],
            "SOLVER.MAX_ITER",
            str(iters),
            "MODEL.DISTILL.TEACHER.WEIGHTS",
            teacher_weights,
            "MODEL.DISTILL.BALANCE.AUTO_ITERS",
            str(WINDOW),
            "OUTPUT_DIR",
            out,
            *[str(o) for o in SETTINGS[setting]],
        ],
    )
    torch.manual_seed(0)
    trainer = DistillTrainer(cfg)
    trainer.model.teacher.backbone.bottom_up.register_forward_hook(
        lambda module, inputs, outputs: {k: v * scale for k, v in outputs.items()}
    )
    record = Record()
    record.rows = []
    trainer.register_hooks([record])
    trainer.resume_or_load(resume=False)
    diverged = None
    try:
        trainer.train()
    except FloatingPointError:
        diverged = len(record.rows)
    methods = list(trainer.model.distillers)

    def ratios(rows):
        return [
            max(
                sum(v for k, v in row.items() if k.startswith(f"balance/loss_{m}_"))
                for m in methods
            )
            for row in rows
            if any(k.startswith("balance/") for k in row)
        ]

    early, late = ratios(record.rows[:WINDOW]), ratios(record.rows[WINDOW:])
    finite = diverged is None and all(
        math.isfinite(v) for row in record.rows for k, v in row.items() if k.startswith("loss_")
    )
    return dict(
        finite=finite,
        diverged=diverged,
        early_max=max(early) if early else float("nan"),
        late_median=statistics.median(late) if late else float("nan"),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--methods", default="", help="comma-separated survey names (all)")
    parser.add_argument(
        "--scales", default=",".join(f"{s:g}" for s in SCALES), help="teacher feature scales"
    )
    parser.add_argument("--write", default="", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from detectron2.modeling import build_model
    from detectron2.utils.logger import setup_logger

    from detkd import load_config
    from detkd.checkpoint import Checkpointer
    from detkd.data import register_shapes_datasets
    from detkd.demo import CONFIG_DIR, survey_experiments

    setup_logger(name="detkd")
    torch.set_num_threads(1)
    register_shapes_datasets()
    chosen = [m for m in args.methods.split(",") if m] or list(survey_experiments())
    tmp = tempfile.mkdtemp(prefix="bench_first_iterations_")
    torch.manual_seed(0)
    teacher = build_model(load_config(os.path.join(CONFIG_DIR, "teacher.yaml")))
    Checkpointer(teacher, tmp).save("teacher")
    weights = os.path.join(tmp, "teacher.pth")
    lines = [
        f"## The first iterations at another feature scale ({args.iters} iterations)",
        "",
        "`benchmarks/bench_first_iterations.py`: the demo survey configs, batch 4, no gradient "
        "clipping, a random-weight teacher whose backbone maps are scaled by the factor; per "
        "cell: `finite` or the iteration it diverged at, the largest method/detection ratio in "
        f"the first {WINDOW} iterations, the median ratio after them (`paper`: AUTO off; "
        "`raw window`: measuring at the raw weights; `running`: the default).",
        "",
        "| method | teacher x | " + " | ".join(SETTINGS) + " |",
        "|---|---|" + "---|" * len(SETTINGS),
    ]
    start = time.perf_counter()
    for name in chosen:
        config = os.path.join(CONFIG_DIR, survey_experiments()[name].config)
        for scale in [float(s) for s in args.scales.split(",")]:
            cells = []
            for setting in SETTINGS:
                r = run(config, weights, scale, setting, args.iters, os.path.join(tmp, "run"))
                state = "finite" if r["finite"] else f"diverged at {r['diverged']}"
                cells.append(f"{state}, {r['early_max']:.3g}, {r['late_median']:.3g}")
            line = f"| {name} | {scale:g} | " + " | ".join(cells) + " |"
            print(line, flush=True)
            lines.append(line)
    lines += ["", f"({(time.perf_counter() - start) / 60:.1f} min)", ""]
    table = "\n".join(lines)
    print(table)
    if args.write:
        with open(args.write, "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
