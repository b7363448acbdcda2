"""The demo's report: one row per run, the table (mean +- std over seeds), each method against its
baseline, and ``results.md`` / ``results.json``."""

import json
import os
import statistics
from typing import Dict, List

from .training import TEST_SETS

COLUMNS = [
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "VOC_AP50",
    "train_s",
    "params_M",
    "ms_per_image",
]


def row(run: Dict) -> Dict:
    """The table's figures of one run."""
    coco = run["results"].get(TEST_SETS[0], run["results"]).get("bbox", {})
    voc = run["results"].get(TEST_SETS[1], {}).get("bbox", {})
    nan = float("nan")
    return {
        "AP": coco.get("AP", nan),
        "AP50": coco.get("AP50", nan),
        "AP75": coco.get("AP75", nan),
        "APs": coco.get("APs", nan),
        "APm": coco.get("APm", nan),
        "APl": coco.get("APl", nan),
        "VOC_AP50": voc.get("AP50", nan),
        "train_s": run["train_seconds"],
        "params_M": run["params"] / 1e6,
        "ms_per_image": run["ms_per_image"],
        "diverged": bool(run.get("diverged", False)),
    }


def mean_std(values: List[float]):
    """Mean and standard deviation of the values that are not NaN (0 for one value)."""
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
            m, s = mean_std([r[c] for r in runs])
            fmt = "{:.2f}" if c not in ("train_s",) else "{:.0f}"
            spread = len(runs) > 1 and c in ("AP", "AP50", "VOC_AP50")
            cells.append(fmt.format(m) + (f" ± {fmt.format(s)}" if spread else ""))
        diverged = sum(r.get("diverged", False) for r in runs)
        label = f"{name} ({diverged} diverged)" if diverged else name
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Per-seed AP: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{r['AP']:.2f}" for r in runs) for name, runs in rows.items()
        )
    )
    return "\n".join(lines)


def summarize(rows: Dict[str, List[Dict]], baseline_of: Dict[str, str]) -> str:
    """Each method of ``rows`` with a baseline in ``rows`` (``baseline_of``: method -> baseline)
    against it: gain in AP and share of the teacher-baseline gap."""
    teacher = rows["teacher"][0]["AP"]
    lines = [
        "| method | vs | gain AP (mean) | spread (std of method, baseline) | gap closed "
        "| gain > spread |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        base = baseline_of.get(name)
        if base not in rows:
            continue
        m, s = mean_std([r["AP"] for r in runs])
        bm, bs = mean_std([r["AP"] for r in rows[base]])
        gap = teacher - bm
        closed = (m - bm) / gap if gap > 0 else float("nan")
        if min(len(runs), len(rows[base])) < 2:
            verdict = "n/a (one seed: no spread)"
        else:
            verdict = "yes" if (m - bm) > max(s, bs) else "no"
        lines.append(
            f"| {name} | {base} | {m - bm:+.2f} | {s:.2f}, {bs:.2f} | "
            f"{100 * closed:.0f} % | {verdict} |"
        )
    return "\n".join(lines)


def header(
    teacher_iters: int,
    student_iters: int,
    jobs: int,
    threads: int,
    minutes: float,
    teacher_cached: bool,
    timing_threads: int,
) -> str:
    """The opening of ``results.md``: data, schedules, parallelism, evaluators."""
    return (
        f"# detkd demo results\n\nEmbedded shapes data; teacher {teacher_iters} iterations, "
        f"students {student_iters} iterations; {jobs} run(s) at a time with {threads} "
        f"thread(s) each (train_s is measured so), {minutes:.1f} min in all (teacher "
        f"{'cached' if teacher_cached else 'trained'}).\n"
        "AP columns: COCOEvaluator on detkd_shapes_val; VOC_AP50: PascalVOCDetectionEvaluator "
        "on detkd_shapes_voc_val; ms_per_image: batch-1 inference, median, timed after "
        f"training with {timing_threads} thread(s) and nothing beside it.\n\n"
    )


def write_results(output: str, head: str, table: str, experiments: Dict, rows: Dict, curves: Dict):
    """``results.md`` (``head``, ``table``, then what each experiment is) and ``results.json``
    (``rows`` and ``curves``) in ``output``. ``experiments``: name -> Experiment."""
    methods_doc = "\n".join(
        f"- **{n}**: {e.description} (`configs/demo/{e.config}`)" for n, e in experiments.items()
    )
    with open(os.path.join(output, "results.md"), "w") as f:
        f.write(head + table + "\n\n" + methods_doc + "\n")
    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump({"rows": rows, "curves": curves}, f, indent=1)
