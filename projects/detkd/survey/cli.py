"""``python -m detkd.survey`` (or ``detkd-survey``): which distillation method, at which weight,
helps on your data, measured with paired seeds.

    python -m detkd.survey --config-file MY_DISTILL.yaml --methods pkd,cross_head,chen \\
        --seeds 3 --iters 2000 [--grid MODEL.DISTILL.BALANCE.AUTO_TARGET=0.1,0.3,1.0] \\
        [--backend ray --address auto --gpus-per-trial 1] [KEY VALUE ...]

From your distillation config (your datasets, teacher and student) it trains the student alone
(the baseline) and each method (and each point of the grid) under the same seeds and schedule,
evaluates each with the test set's own detectron2 evaluator, and writes ``survey.md`` /
``survey.json`` (table, paired gains with 95 % intervals, share of the teacher-baseline gap
closed with ``--eval-teacher``, ranking), ``gains.png`` and the winner as ``best.yaml`` (your
config and schedule with that method). A method or grid value your config cannot run fails
before anything trains. Finished trials are cached in the output folder: a survey interrupted on
either backend resumes where it stopped."""

import argparse
import functools
import os

from detectron2.utils.logger import setup_logger

from ..config import load_config
from .arms import BASELINE, SurveyError, build_arms, check_arms, parse_grid, parse_methods
from .backends import LocalBackend, RayBackend
from .runner import Survey, evaluate_teacher, register_trial_datasets, teacher_key
from .training import train_trial


def survey_schedule(cfg, iters: int, eval_points: int):
    """``cfg`` on the survey's schedule: ``iters`` iterations (None: the config's own), the LR
    steps at the same shares of it, the warm-up at most a quarter of it, ``eval_points``
    evaluations on the test set (the AP curves)."""
    out = cfg.clone()
    out.defrost()
    if iters:
        old = max(cfg.SOLVER.MAX_ITER, 1)
        steps = sorted({int(round(s * iters / old)) for s in cfg.SOLVER.STEPS})
        out.SOLVER.MAX_ITER = iters
        out.SOLVER.STEPS = tuple(s for s in steps if 0 < s < iters)
        out.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, iters // 4)
    out.TEST.EVAL_PERIOD = max(out.SOLVER.MAX_ITER // max(eval_points, 1), 1)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m detkd.survey",
        description="Which distillation method helps on your data: each method against the "
        "student alone, paired by seed, with 95 %% intervals.",
    )
    p.add_argument("--config-file", required=True, help="your distillation config (yaml)")
    p.add_argument(
        "--methods",
        required=True,
        help="comma-separated methods: registered names (pkd, cwd, fgd, mgd, mssd, cross_head, "
        "hint, soft_ce, bounded_reg), chen (its three losses), or several joined by '+'",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every arm (default 3)")
    p.add_argument(
        "--iters", type=int, default=None, help="iterations of every trial (default: the config's)"
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=v1,v2,...",
        help="a MODEL.DISTILL key and its values; several --grid make their product",
    )
    p.add_argument("--output", default="output/survey", help="the survey's folder (its cache)")
    p.add_argument(
        "--eval-points", type=int, default=3, help="evaluations per trial (the AP curves)"
    )
    p.add_argument(
        "--eval-teacher",
        action="store_true",
        help="evaluate the teacher on the test set too: the share of the gap each method closes",
    )
    p.add_argument(
        "--imports",
        action="append",
        default=[],
        help="a module to import first in every process (one that registers your datasets)",
    )
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--jobs", type=int, default=1, help="local: trials at once, one process each")
    p.add_argument(
        "--threads", type=int, default=None, help="local: torch threads per trial (default: all)"
    )
    p.add_argument(
        "--address",
        default="auto",
        help="ray: the cluster (auto, HOST:PORT, or local: a new instance on this machine)",
    )
    p.add_argument("--cpus-per-trial", type=int, default=1, help="ray: CPUs per trial")
    p.add_argument(
        "--gpus-per-trial",
        type=int,
        default=0,
        help="ray: GPUs per trial (more than 1: detectron2's launch inside the trial)",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return p


def plan_survey(args) -> Survey:
    """The survey ``args`` ask for, every arm checked (:func:`~detkd.survey.arms.check_arms`):
    a :class:`SurveyError` before anything trains when one cannot run."""
    if args.config_file.endswith(".py"):
        raise SurveyError(
            f"{args.config_file}: the survey takes a yaml config (a LazyConfig's methods are "
            "objects, not blocks it can switch on and off)"
        )
    if args.seeds < 1:
        raise SurveyError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = load_config(args.config_file, args.opts)
    if not cfg.DATASETS.TEST:
        raise SurveyError(f"{args.config_file}: DATASETS.TEST is empty; the survey evaluates on it")
    methods = parse_methods(args.methods)
    grid = parse_grid(args.grid, cfg)
    register_trial_datasets(tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST), args.imports)
    recipes, baseline_of = build_arms(cfg, methods, grid)
    check_arms(recipes)
    arms = {n: survey_schedule(r, args.iters, args.eval_points) for n, r in recipes.items()}
    for recipe in recipes.values():  # where best.yaml trains
        recipe.OUTPUT_DIR = os.path.join(args.output, "best_run")
    os.makedirs(args.output, exist_ok=True)
    teacher_run = evaluate_teacher(cfg, args.output) if args.eval_teacher else None
    first = arms[BASELINE]
    description = (
        f"Config `{args.config_file}`; methods {', '.join(methods)} against `{BASELINE}` (the "
        f"student alone); {args.seeds} seed(s); {first.SOLVER.MAX_ITER} iterations each"
        + (f"; grid {', '.join(args.grid)}" if args.grid else "")
        + (f"; overrides {' '.join(map(str, args.opts))}" if args.opts else "")
        + "."
    )
    return Survey(
        arms,
        baseline_of,
        args.seeds,
        args.output,
        teacher_run=teacher_run,
        recipes=recipes,
        teacher_suffix=teacher_key(cfg),
        description=description,
    )


def backend_of(args, cfg_names):
    init = (register_trial_datasets, (tuple(cfg_names), tuple(args.imports)))
    if args.backend == "ray":
        return RayBackend(args.address, args.cpus_per_trial, args.gpus_per_trial, *init)
    return LocalBackend(args.jobs, args.threads, *init)


def main(argv=None):
    args = parser().parse_args(argv)
    setup_logger(name="detectron2")
    setup_logger(name="detkd")
    try:
        survey = plan_survey(args)
    except SurveyError as e:
        raise SystemExit(f"detkd survey: {e}")
    first = survey.arms[BASELINE]
    backend = backend_of(args, tuple(first.DATASETS.TRAIN) + tuple(first.DATASETS.TEST))
    fn = None
    if args.backend == "ray" and args.gpus_per_trial:
        fn = functools.partial(
            train_trial,
            num_gpus=args.gpus_per_trial,
            initializer=backend.initializer,
            initargs=backend.initargs,
        )
    data = survey.run(backend, fn)
    print(open(os.path.join(args.output, "survey.md")).read(), flush=True)
    return data
