"""``make demo``: distil on the embedded shapes data and print what each method buys.

    python -m detkd.demo [--seeds 3] [--jobs 2] [--output output/demo] [--methods baseline,fgd,...] [--quick]

1. trains the teacher once (cached in ``output/demo/teacher``; reused while its config is unchanged);
2. trains every student method for every seed, logging AP on the validation split during training,
   ``--jobs`` runs at a time (default 2, one process and ``cpu_count // jobs`` threads each: on 2 cores
   two single-threaded runs finish ~1.5x sooner than one two-threaded run after another, because
   much of a small model's step is serial: ROIAlign's backward, per-box bookkeeping, the optimizer);
3. evaluates each with COCOEvaluator and PascalVOCDetectionEvaluator; a run whose training config
   (and teacher) is unchanged is read back from its ``run.json`` instead of trained again;
4. prints one table (mean +- std over seeds, per-seed AP below) and writes ``results.md``,
   ``results.json``, ``results.png`` (bar plot) and ``ap_curves.png`` (AP against iteration).

A run trained again starts in an emptied directory (the demo removes its own stale run, and refuses
a directory it did not make), and one demo at a time writes into an output (``.demo.lock`` there).
Progress and ETA come from detectron2's writers for each run, and from this script for the whole.
Students never see the validation split during training except through these evaluations, which
are read only for reporting (no schedule or weight was tuned on them by this script).
"""
import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import time
from typing import Dict, List

import torch

from detectron2.utils.logger import setup_logger

from .checkpoint import Checkpointer
from .config import load_config, student_only_config
from .data import register_shapes_datasets
from .data.register import registered_shapes_root

__all__ = ["METHODS", "run_demo", "main"]

logger = logging.getLogger("detkd.demo")

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "demo")

# name -> (config file in configs/demo, extra options, description)
METHODS = {
    "baseline": ("student.yaml", [], "ResNet-18/FPN-64 student, no teacher"),
    "fgd": ("distill_fgd.yaml", [], "FGD (Yang et al. 2022) on p2-p6"),
    "chen": ("distill_chen.yaml", [], "Chen et al. 2017: hints + soft CE + bounded regression"),
    "mssd": ("distill_mssd.yaml", [], "MSSD self-distillation (PAFPN student, no teacher)"),
    "all": ("distill_all.yaml", [], "Chen + FGD + MSSD"),
    "lowres_baseline": ("lowres_student.yaml", [], "teacher architecture at half resolution, no teacher"),
    "lowres_inherit": ("lowres_inherit.yaml", [], "half resolution, inherits the teacher, no distillation loss"),
    "lowres_chen_inherit": ("lowres_distill_chen.yaml", [],
                            "half resolution, inherits the teacher, Chen hints + RCN soft CE + bounded reg"),
}
# the comparison the demo is built around (run with --seeds), then a survey of the small-student
# methods (run with --survey-seeds)
GAIN_METHODS = ["lowres_baseline", "lowres_inherit", "lowres_chen_inherit"]
SURVEY_METHODS = ["baseline", "fgd", "chen", "mssd", "all"]
# which baseline each method is compared with
BASELINE_OF = {"lowres_inherit": "lowres_baseline", "lowres_chen_inherit": "lowres_baseline",
               "fgd": "baseline", "chen": "baseline", "mssd": "baseline", "all": "baseline"}
TEST_SETS = ("detkd_shapes_val", "detkd_shapes_voc_val")
# written into every run directory the demo makes; it, or a file only a demo run leaves (run.json,
# the teacher's CONFIG_FINGERPRINT: demos older than the marker wrote those), lets the demo clear it
RUN_MARKER = ".demo-run"
OWNED_BY = (RUN_MARKER, "run.json", "CONFIG_FINGERPRINT")
LOCK_FILE = ".demo.lock"  # in the output directory, held by the demo writing into it


def _cfg(config_file: str, opts: List):
    return load_config(config_file, [str(o) if not isinstance(o, (list, tuple)) else o for o in opts])


def _steps(max_iter: int):
    """LR drops at 75 % and 93.75 % of the schedule (distinct, inside it)."""
    return tuple(sorted({s for s in (int(max_iter * 0.75), int(max_iter * 0.9375)) if 0 < s < max_iter}))


def _fingerprint(cfg) -> str:
    """Hash of what determines trained weights (not output paths or evaluation settings)."""
    parts = {k: cfg[k] for k in ("MODEL", "INPUT", "SOLVER", "DATALOADER", "SEED")}
    parts["TRAIN"] = list(cfg.DATASETS.TRAIN)
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _output_lock(output: str):
    """Hold an exclusive lock on ``<output>/.demo.lock`` (its content: the holder's PID) while the
    block runs: two demos writing into one output directory would clear and overwrite each other's
    runs. A second lock on it fails at once. The kernel drops the lock when its file is closed, on
    an exception or when the process dies; the descriptor is not inherited, so the demo's workers
    never hold it."""
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            why = (f"demo: another demo (pid {holder}) is writing into {output} (it holds {path}); "
                   "wait for it or choose another --output")
            raise RuntimeError(why) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _fresh_run_dir(path: str):
    """Make ``path`` an empty run directory marked as the demo's, before a run is trained in it:
    detectron2's writers append to the ``metrics.json`` and events files they find, so a stale run
    would mix its AP curve with the new one. A directory the demo made (see ``OWNED_BY``) is
    removed, and said so; a non-empty one it did not make is refused, not deleted."""
    if os.path.isdir(path) and os.listdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in OWNED_BY):
            raise RuntimeError(f"demo: run directory {path} holds files the demo did not write "
                               f"(none of {', '.join(OWNED_BY)}); move it away or choose another "
                               "--output")
        print(f"[demo] removing the stale run in {path}", flush=True)
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, RUN_MARKER), "w").close()


def _ap_curve(output_dir: str) -> List:
    """(iteration, bbox/AP) of every evaluation in ``output_dir/metrics.json``."""
    curve = []
    metrics = os.path.join(output_dir, "metrics.json")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            for line in f:
                row = json.loads(line)
                if "bbox/AP" in row:
                    curve.append((row["iteration"], row["bbox/AP"]))
    return curve


def _train(cfg) -> Dict:
    """Train with DistillTrainer (AP on the COCO-form val split logged during training), then
    evaluate on the VOC-form split too; return results, AP curve, wall seconds, params, ms/image."""
    from .engine import DistillTrainer

    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model = trainer.model
    student = getattr(model, "student", model)
    results = {TEST_SETS[0]: getattr(trainer, "_last_eval_results", {})}
    voc_cfg = cfg.clone()
    voc_cfg.defrost()
    voc_cfg.DATASETS.TEST = (TEST_SETS[1],)
    results[TEST_SETS[1]] = DistillTrainer.test(voc_cfg, model)
    return dict(results=results, curve=_ap_curve(cfg.OUTPUT_DIR), train_seconds=seconds,
                params=sum(p.numel() for p in student.parameters()))


def _inference_ms(model, cfg, n_images: int = 20) -> float:
    """Median batch-1 inference milliseconds on the val split, in this process (run when no
    training runs beside it, so every method is timed alike)."""
    from detectron2.data import build_detection_test_loader

    model.eval()
    loader = build_detection_test_loader(cfg, TEST_SETS[0])
    times = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= n_images + 5:
                break
            t0 = time.perf_counter()
            model(batch)
            if i >= 5:  # warm-up
                times.append(time.perf_counter() - t0)
    model.train()
    return 1e3 * statistics.median(times) if times else float("nan")


def _row(run: Dict) -> Dict:
    coco = run["results"].get(TEST_SETS[0], run["results"]).get("bbox", {})
    voc = run["results"].get(TEST_SETS[1], {}).get("bbox", {})
    return {
        "AP": coco.get("AP", float("nan")), "AP50": coco.get("AP50", float("nan")),
        "AP75": coco.get("AP75", float("nan")), "APs": coco.get("APs", float("nan")),
        "APm": coco.get("APm", float("nan")), "APl": coco.get("APl", float("nan")),
        "VOC_AP50": voc.get("AP50", float("nan")), "train_s": run["train_seconds"],
        "params_M": run["params"] / 1e6, "ms_per_image": run["ms_per_image"],
        "diverged": bool(run.get("diverged", False)),
    }


COLUMNS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "VOC_AP50", "train_s", "params_M", "ms_per_image"]


def _mean_std(values: List[float]):
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_table(rows: Dict[str, List[Dict]]) -> str:
    head = "| method | seeds | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, runs in rows.items():
        cells = []
        for c in COLUMNS:
            m, s = _mean_std([r[c] for r in runs])
            fmt = "{:.2f}" if c not in ("train_s",) else "{:.0f}"
            cells.append(fmt.format(m) + (f" ± {fmt.format(s)}" if len(runs) > 1 and c in ("AP", "AP50", "VOC_AP50") else ""))
        diverged = sum(r.get("diverged", False) for r in runs)
        label = f"{name} ({diverged} diverged)" if diverged else name
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Per-seed AP: " + "; ".join(
        f"{name}: " + ", ".join(f"{r['AP']:.2f}" for r in runs) for name, runs in rows.items()))
    return "\n".join(lines)


def summarize(rows: Dict[str, List[Dict]]) -> str:
    """Each distilled method against its baseline: gain in AP and share of the teacher-baseline gap."""
    teacher = rows["teacher"][0]["AP"]
    lines = ["| method | vs | gain AP (mean) | spread (std of method, baseline) | gap closed | gain > spread |",
             "|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        base = BASELINE_OF.get(name)
        if base not in rows:
            continue
        m, s = _mean_std([r["AP"] for r in runs])
        bm, bs = _mean_std([r["AP"] for r in rows[base]])
        gap = teacher - bm
        closed = (m - bm) / gap if gap > 0 else float("nan")
        if min(len(runs), len(rows[base])) < 2:
            verdict = "n/a (one seed: no spread)"
        else:
            verdict = "yes" if (m - bm) > max(s, bs) else "no"
        lines.append(f"| {name} | {base} | {m - bm:+.2f} | {s:.2f}, {bs:.2f} | {100 * closed:.0f} % | {verdict} |")
    return "\n".join(lines)


def _plots(rows: Dict[str, List[Dict]], curves: Dict[str, List], output: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    means = [_mean_std([r["AP"] for r in rows[n]]) for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 4))
    ax.bar(names, [m for m, _ in means], yerr=[s for _, s in means], capsize=4, color="#4878a8")
    ax.set_ylabel("COCO AP (val)")
    ax.set_title("detkd demo: AP per method (mean ± std over seeds)")
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    fig.tight_layout()
    fig.savefig(os.path.join(output, "results.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, per_seed in curves.items():
        for k, curve in enumerate(per_seed):
            if curve:
                xs, ys = zip(*curve)
                ax.plot(xs, ys, marker="o", label=name if k == 0 else None,
                        color=f"C{list(curves).index(name)}", alpha=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("COCO AP (val)")
    ax.legend(fontsize=8)
    ax.set_title("AP against iteration (one line per seed)")
    fig.tight_layout()
    fig.savefig(os.path.join(output, "ap_curves.png"), dpi=110)
    plt.close(fig)


def _init_worker(threads: int, data_root: str):
    """Set up a spawned worker process: its thread count and the datasets the parent registered."""
    torch.set_num_threads(threads)
    register_shapes_datasets(data_root, generate=False)


def _train_run(name: str, seed: int, cfg) -> Dict:
    """Train and evaluate one student run (in this process or a worker); a diverged run is a
    result, reported as such."""
    if multiprocessing.parent_process() is not None:  # a worker of run_demo(jobs > 1)
        # one console handler per run, named after it, so two runs' progress lines can be told apart
        logging.getLogger("detectron2").handlers.clear()
        setup_logger(name="detectron2", abbrev_name=f"{name}/s{seed}")
    try:
        return _train(cfg)
    except FloatingPointError as e:
        print(f"[demo] {name} seed {seed} diverged: {e}", flush=True)
        return dict(results={}, curve=[], train_seconds=float("nan"), params=0, ms_per_image=float("nan"),
                    diverged=True)


def _saved_model_ms(cfg) -> float:
    """Inference ms/image of the model a finished run saved in ``cfg.OUTPUT_DIR``."""
    from detectron2.modeling import build_model

    model = build_model(student_only_config(cfg))  # the student alone: the teacher is not timed
    Checkpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    return _inference_ms(model, cfg)


def run_demo(output: str, methods: List[str], seeds, teacher_iters: int, student_iters: int,
             eval_points: int = 3, extra_opts: List = (), jobs: int = 1) -> Dict:
    """``seeds``: one count for every method, or a dict method -> count. ``jobs`` student runs
    train at once, each in its own process with ``cpu_count // jobs`` threads (``jobs=1``: in this
    process, with torch's default threads). Holds ``<output>/.demo.lock`` throughout: a second
    demo into the same output fails at once."""
    with _output_lock(output):
        return _run_demo(output, methods, seeds, teacher_iters, student_iters, eval_points,
                         extra_opts, jobs)


def _run_demo(output: str, methods: List[str], seeds, teacher_iters: int, student_iters: int,
              eval_points: int, extra_opts: List, jobs: int) -> Dict:
    """``run_demo`` under its lock; every run it trains starts in a fresh ``_fresh_run_dir``."""
    if jobs < 1:
        raise ValueError(f"run_demo: jobs must be >= 1, got {jobs}")
    seeds_of = seeds if isinstance(seeds, dict) else {m: seeds for m in methods}
    threads = torch.get_num_threads() if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)
    register_shapes_datasets()
    os.makedirs(output, exist_ok=True)
    start = time.perf_counter()

    # ---- the teacher, cached --------------------------------------------------------------
    teacher_dir = os.path.join(output, "teacher")
    t_cfg = _cfg(os.path.join(CONFIG_DIR, "teacher.yaml"), [
        "SOLVER.MAX_ITER", teacher_iters, "SOLVER.STEPS", _steps(teacher_iters),
        "OUTPUT_DIR", teacher_dir, "DATASETS.TEST", TEST_SETS[:1], "TEST.EVAL_PERIOD", 0, *extra_opts])
    weights = os.path.join(teacher_dir, "model_final.pth")
    stamp = os.path.join(teacher_dir, "CONFIG_FINGERPRINT")
    fp = _fingerprint(t_cfg)
    cached = os.path.isfile(weights) and os.path.isfile(stamp) and open(stamp).read() == fp
    if cached:
        print(f"[demo] teacher: cached ({weights})", flush=True)
        from .engine import DistillTrainer
        from detectron2.modeling import build_model

        model = build_model(t_cfg)
        Checkpointer(model).load(weights)
        both = t_cfg.clone()
        both.DATASETS.TEST = TEST_SETS
        teacher_run = dict(results=DistillTrainer.test(both, model), curve=[], train_seconds=float("nan"),
                           params=sum(p.numel() for p in model.parameters()),
                           ms_per_image=_inference_ms(model, t_cfg))
    else:
        print(f"[demo] teacher: training {teacher_iters} iterations", flush=True)
        _fresh_run_dir(teacher_dir)
        teacher_run = _train(t_cfg)
        teacher_run["ms_per_image"] = _saved_model_ms(t_cfg)
        with open(stamp, "w") as f:
            f.write(fp)

    rows = {"teacher": [_row(teacher_run)]}
    curves = {}

    # ---- the students: cached runs read back, the rest trained `jobs` at a time ---------------
    runs, pending, jobs_of = {}, [], {}
    for name in methods:
        config, opts, _ = METHODS[name]
        uses_teacher = bool(_cfg(os.path.join(CONFIG_DIR, config), []).MODEL.DISTILL.TEACHER.CONFIG_FILE)
        for seed in range(seeds_of[name]):
            out = os.path.join(output, name, f"seed{seed}")
            cfg = _cfg(os.path.join(CONFIG_DIR, config), [
                "SEED", seed, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", student_iters,
                "SOLVER.STEPS", _steps(student_iters),
                "TEST.EVAL_PERIOD", max(student_iters // eval_points, 1), "DATASETS.TEST", TEST_SETS[:1],
                *(["MODEL.DISTILL.TEACHER.WEIGHTS", weights] if uses_teacher else []), *opts, *extra_opts])
            key = _fingerprint(cfg) + "-" + fp  # this run's training config and the teacher's
            cache = os.path.join(out, "run.json")
            saved = None
            if os.path.isfile(cache):
                with open(cache) as f:
                    saved = json.load(f)
            jobs_of[name, seed] = (name, seed, cfg, key, cache)
            if saved is not None and saved.get("key") == key:
                print(f"[demo] {name} seed {seed}: cached ({cache})", flush=True)
                runs[name, seed] = saved["run"]
            else:
                pending.append(jobs_of[name, seed])

    for job in pending:  # all checked before a student trains: a refused directory stops the demo
        _fresh_run_dir(job[2].OUTPUT_DIR)

    def save(job, run):
        with open(job[4], "w") as f:
            json.dump({"key": job[3], "run": run}, f)

    def finished(job, run, count, run_start):
        name, seed = job[:2]
        runs[name, seed] = run
        save(job, run)
        left = len(pending) - count
        eta = (time.perf_counter() - run_start) / count * left / 60
        print(f"[demo] {name} seed {seed} done ({count}/{len(pending)} trained), ETA {eta:.1f} min", flush=True)

    run_start = time.perf_counter()
    print(f"[demo] {len(pending)} runs to train, {jobs} at a time with {threads} thread(s) each", flush=True)
    if jobs == 1:
        for count, job in enumerate(pending, 1):
            print(f"[demo] training {job[0]} seed {job[1]}", flush=True)
            finished(job, _train_run(job[0], job[1], job[2]), count, run_start)
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawned, not forked: a fork of a process whose OpenMP pool is running can hang
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads, registered_shapes_root())) as pool:
            futures = {pool.submit(_train_run, *job[:3]): job for job in pending}
            for count, future in enumerate(as_completed(futures), 1):
                finished(futures[future], future.result(), count, run_start)

    # inference speed, timed here with no training beside it (the runs above may share the CPU)
    for job in jobs_of.values():
        run = runs[job[0], job[1]]
        if not run.get("diverged") and not run.get("ms_timed_alone"):
            run.update(ms_per_image=_saved_model_ms(job[2]), ms_timed_alone=True)
            save(job, run)

    for name in methods:
        rows[name] = [_row(runs[name, seed]) for seed in range(seeds_of[name])]
        curves[name] = [runs[name, seed]["curve"] for seed in range(seeds_of[name])]

    table = format_table(rows) + "\n\n" + summarize(rows)
    elapsed = time.perf_counter() - start
    header = (f"# detkd demo results\n\nEmbedded shapes data; teacher {teacher_iters} iterations, students "
              f"{student_iters} iterations; {jobs} run(s) at a time with {threads} thread(s) each "
              f"(train_s is measured so), "
              f"{elapsed / 60:.1f} min in all (teacher {'cached' if cached else 'trained'}).\n"
              "AP columns: COCOEvaluator on detkd_shapes_val; VOC_AP50: PascalVOCDetectionEvaluator on "
              "detkd_shapes_voc_val; ms_per_image: batch-1 inference, median, "
              f"timed after training with {torch.get_num_threads()} thread(s) and nothing beside it.\n\n")
    methods_doc = "\n".join(f"- **{n}**: {METHODS[n][2]} (`configs/demo/{METHODS[n][0]}`)" for n in methods)
    text = header + table + "\n\n" + methods_doc + "\n"
    with open(os.path.join(output, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump({"rows": rows, "curves": curves}, f, indent=1)
    _plots(rows, curves, output)
    print("\n" + table, flush=True)
    print(f"\n[demo] wrote {output}/results.md, results.png, ap_curves.png", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="detkd demo on the embedded shapes data")
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("--methods", default=",".join(GAIN_METHODS + SURVEY_METHODS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the low-resolution comparison")
    parser.add_argument("--survey-seeds", type=int, default=1, help="seeds of the small-student methods")
    parser.add_argument("--teacher-iters", type=int, default=800)
    parser.add_argument("--student-iters", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="student runs trained at once, one process each (1: sequential, in this process)")
    parser.add_argument("--quick", action="store_true", help="a few iterations of everything (a smoke test)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="extra KEY VALUE config overrides")
    args = parser.parse_args(argv)
    setup_logger(name="detectron2")
    setup_logger(name="detkd")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    if args.quick:
        args.teacher_iters, args.student_iters, args.seeds, args.survey_seeds = 4, 4, 1, 1
    seeds = {m: (args.seeds if m in GAIN_METHODS else args.survey_seeds) for m in methods}
    run_demo(args.output, methods, seeds, args.teacher_iters, args.student_iters, extra_opts=args.opts,
             jobs=args.jobs)


if __name__ == "__main__":
    main()
