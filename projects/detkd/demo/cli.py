"""``python -m detkd.demo``: the command line of :func:`~detkd.demo.runner.run_demo`."""

import argparse
import os

from detectron2.utils.logger import setup_logger

from .experiments import diagnosis_experiments, experiments
from .report import write_comparison
from .runner import run_demo
from .training import LR_STEPS

DATASETS = ("shapes", "hard", "glyphs")
# the sets --full measures, the glyphs at their converged schedule (DEMO.md, *A converged regime
# for the glyphs*)
FULL_DATASETS = ("shapes", "hard", "glyphs")
FULL_SEEDS = 5  # the least number of seeds of every method in --full
# student iterations per data set unless --student-iters says otherwise (why each: DEMO.md)
STUDENT_ITERS = {"shapes": 150, "hard": 300, "glyphs": 2400}
# where the students' learning rate drops unless --lr-steps says otherwise: on the glyphs at
# detectron2's 1x shares, where the baseline converges on 2400 iterations (DEMO.md)
STUDENT_LR_STEPS = {"shapes": LR_STEPS, "hard": LR_STEPS, "glyphs": (2 / 3, 8 / 9)}
# teacher iterations per data set unless --teacher-iters says otherwise: the glyphs teacher learns
# more slowly than the shapes teachers, and at 6000 it leads its students by enough for feature
# imitation to pay (DEMO.md, *A stronger teacher on the same machine*)
TEACHER_ITERS = {"shapes": 800, "hard": 800, "glyphs": 6000}


def _per_dataset(values) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def _shares(text: str):
    """``--lr-steps``: comma-separated shares of a schedule, each in (0, 1)."""
    try:
        shares = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}")
    if not shares or not all(0 < v < 1 for v in shares):
        raise argparse.ArgumentTypeError(f"each share must lie in (0, 1): {text!r}")
    return shares


def cache_path(output: str) -> str:
    """``--output`` as the run cache spells it: relative to the working directory where it lies
    under it, else absolute. A run's cache key holds the paths of the pretrained trunks it starts
    from, which lie under ``--output``; so ``output/g``, ``./output/g/`` and ``$PWD/output/g``
    must name one cache, not three (the demo clears a run whose key differs as stale)."""
    absolute = os.path.abspath(output)
    relative = os.path.relpath(absolute)
    outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
    return absolute if outside else relative


def plan(args, known):
    """What ``args`` run: a list of (dataset, output folder, seeds: method -> count). The shapes
    data goes into ``--output`` itself (where ``make demo`` always wrote), another set into
    ``<output>/<set>``; ``--full`` runs each of :data:`FULL_DATASETS`, into ``<output>/<set>``,
    with at least :data:`FULL_SEEDS` seeds of every method."""
    methods = [m for m in args.methods.split(",") if m]
    seeds, survey_seeds = args.seeds, args.survey_seeds
    if args.full:
        seeds, survey_seeds = max(seeds, FULL_SEEDS), max(survey_seeds, FULL_SEEDS)
        datasets = [(d, os.path.join(args.output, d)) for d in FULL_DATASETS]
    else:
        dataset = args.dataset or "shapes"
        out = args.output if dataset == "shapes" else os.path.join(args.output, dataset)
        datasets = [(dataset, out)]
    counts = {m: (seeds if known[m].gain else survey_seeds) for m in methods}
    return [(dataset, out, dict(counts)) for dataset, out in datasets]


def main(argv=None):
    known = experiments()
    diagnosis = diagnosis_experiments()
    parser = argparse.ArgumentParser(
        prog="python -m detkd.demo",
        description="detkd demo on the embedded shapes data (or another set: --dataset)",
        epilog=f"--full: every method with at least {FULL_SEEDS} seeds, on each data set in turn "
        f"({', '.join(FULL_DATASETS)}), into <output>/<set> (a results.md in each); hours on a "
        "CPU. Its figures go in DEMO.md.",
    )
    parser.add_argument("--output", default="output/demo")
    parser.add_argument(
        "--methods",
        default=",".join(known),
        help="comma-separated experiments (default: all of them but the diagnosis variants, "
        f"{', '.join(diagnosis)}: DEMO.md, Diagnosis)",
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds of the low-resolution comparison"
    )
    parser.add_argument(
        "--survey-seeds", type=int, default=1, help="seeds of the small-student methods"
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="embedded data set of every run, the teacher's too (default shapes, into --output; "
        "hard: 10 classes, smaller objects; glyphs: letters in many typefaces over photographs; "
        "each into <output>/<set>)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"the measured run: >= {FULL_SEEDS} seeds of every method, on "
        f"{', '.join(FULL_DATASETS)} one after the other (<output>/<set>)",
    )
    parser.add_argument(
        "--teacher-iters",
        type=int,
        default=None,
        help=f"teacher iterations (default: {_per_dataset(TEACHER_ITERS)})",
    )
    parser.add_argument(
        "--eval-points",
        type=int,
        default=4,
        help="evaluations of each student run (its AP curve; 4: the last quarter's gain)",
    )
    parser.add_argument(
        "--pretrain-iters",
        type=int,
        default=1500,
        help="iterations of each ResNet trunk's pretraining, on the data sets whose runs start "
        "pretrained (glyphs); cached like the teacher",
    )
    parser.add_argument(
        "--student-iters",
        type=int,
        default=None,
        help=f"student iterations (default: {_per_dataset(STUDENT_ITERS)})",
    )
    parser.add_argument(
        "--lr-steps",
        type=_shares,
        default=None,
        help="where the students' learning rate drops, comma-separated shares of their schedule "
        "(default: shapes and hard 0.75,0.9375; glyphs 2/3,8/9 as detectron2's 1x)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="student runs trained at once, one process each (1: sequential, in this process)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few iterations of everything (a smoke test)"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="extra KEY VALUE config overrides"
    )
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    known.update(diagnosis)
    unknown = [m for m in methods if m not in known]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(known)}")
    if args.full and args.dataset:
        parser.error(f"--full runs {', '.join(FULL_DATASETS)}; leave out --dataset")
    if args.full and args.quick:
        parser.error("--full is the measured run and --quick a smoke test: choose one")
    if args.quick:
        args.teacher_iters, args.student_iters, args.seeds, args.survey_seeds = 4, 4, 1, 1
        args.pretrain_iters = 2
    args.output = cache_path(args.output)
    setup_logger(name="detectron2")
    setup_logger(name="detkd")
    planned = plan(args, known)
    for dataset, output, seeds in planned:
        print(f"[demo] data set {dataset} into {output}", flush=True)
        run_demo(
            output,
            methods,
            seeds,
            args.teacher_iters or TEACHER_ITERS[dataset],
            args.student_iters or STUDENT_ITERS[dataset],
            eval_points=args.eval_points,
            extra_opts=args.opts,
            jobs=args.jobs,
            dataset=dataset,
            pretrain_iters=args.pretrain_iters,
            student_lr_steps=args.lr_steps or STUDENT_LR_STEPS[dataset],
        )
    if len(planned) > 1:
        results = {d: os.path.join(out, "results.json") for d, out, _ in planned}
        print(
            f"[demo] the data sets compared: {write_comparison(args.output, results)}", flush=True
        )
