"""``python -m detkd.demo``: the command line of :func:`~detkd.demo.runner.run_demo`."""

import argparse
import os

from detectron2.utils.logger import setup_logger

from .experiments import experiments
from .runner import run_demo


def main(argv=None):
    known = experiments()
    parser = argparse.ArgumentParser(
        prog="python -m detkd.demo", description="detkd demo on the embedded shapes data"
    )
    parser.add_argument("--output", default="output/demo")
    parser.add_argument(
        "--methods",
        default=",".join(known),
        help="comma-separated experiments (default: all of them)",
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds of the low-resolution comparison"
    )
    parser.add_argument(
        "--survey-seeds", type=int, default=1, help="seeds of the small-student methods"
    )
    parser.add_argument("--teacher-iters", type=int, default=800)
    parser.add_argument("--student-iters", type=int, default=150)
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="student runs trained at once, one process each (1: sequential, " "in this process)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few iterations of everything (a smoke test)"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="extra KEY VALUE config overrides"
    )
    args = parser.parse_args(argv)
    setup_logger(name="detectron2")
    setup_logger(name="detkd")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in known]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(known)}")
    if args.quick:
        args.teacher_iters, args.student_iters, args.seeds, args.survey_seeds = 4, 4, 1, 1
    seeds = {m: (args.seeds if known[m].gain else args.survey_seeds) for m in methods}
    run_demo(
        args.output,
        methods,
        seeds,
        args.teacher_iters,
        args.student_iters,
        extra_opts=args.opts,
        jobs=args.jobs,
    )
