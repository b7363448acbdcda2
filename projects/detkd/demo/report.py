"""The demo's report: its goal, ``results.md`` / ``results.json`` of one data set and
``comparison.md`` across them. The figures (rows, table, paired gains) are the survey's
(:mod:`detkd.survey.report`), with the demo's goal."""

import json
import os
from typing import Dict, List, Optional

from ..survey import plots
from ..survey import report as figures
from ..survey.report import Goal, PairedGain
from .training import SHAPES, DemoData

# the demo's goal on the shapes sets (issue "demo gains that stand beyond the seed spread"): every
# method's mean paired gain at least 2 AP with its 95 % interval above 0, and ``all`` closing at
# least 40 % of the teacher-baseline gap
GOAL = Goal(gain=2.0, gap_closed={"all": 0.40})
# on the glyphs, at the converged regime (issue #32): every method closing at least 30 % of the
# gap with its interval above 0
GLYPHS_GOAL = Goal(every_gap_closed=0.30)
# how results.md names each embedded data set
DATA_NAMES = {"hard": "hard shapes", "glyphs": "glyphs"}


def row(run: Dict, seed: Optional[int] = None, data: DemoData = SHAPES) -> Dict:
    """The table's figures of one run evaluated on the ``data`` set (COCO and VOC forms)."""
    return figures.row(run, seed, data.val, data.voc_val)


def goal_for(data: DemoData = SHAPES) -> Goal:
    """The demo's goal on ``data``: :data:`GLYPHS_GOAL` on the glyphs, :data:`GOAL` on the
    shapes sets."""
    return GLYPHS_GOAL if data.kind == "glyphs" else GOAL


def goal_verdict(name: str, g: PairedGain, data: DemoData = SHAPES) -> str:
    """:func:`detkd.survey.report.goal_verdict` against the demo's goal on ``data``."""
    return figures.goal_verdict(name, g, goal_for(data))


def summarize(
    rows: Dict[str, List[Dict]], baseline_of: Dict[str, str], data: DemoData = SHAPES
) -> str:
    """:func:`detkd.survey.report.summarize` with the demo's goal on ``data``."""
    return figures.summarize(rows, baseline_of, goal_for(data))


def gains_json(gains: Dict[str, PairedGain], data: DemoData = SHAPES) -> Dict[str, Dict]:
    """:func:`detkd.survey.report.gains_json` with the demo's goal on ``data``."""
    return figures.gains_json(gains, goal_for(data))


def plot_gains(
    rows: Dict[str, List[Dict]], baseline_of: Dict[str, str], output: str, data: DemoData = SHAPES
) -> str:
    """:func:`detkd.survey.plots.plot_gains` with a line at the demo's goal on ``data`` (its
    least gain, where it asks one)."""
    return plots.plot_gains(rows, baseline_of, output, goal_for(data).gain or None)


def header(
    teacher_iters: int,
    student_iters: int,
    jobs: int,
    threads: int,
    minutes: float,
    teacher_cached: Optional[bool],
    timing_threads: int,
    data: DemoData = SHAPES,
) -> str:
    """The opening of ``results.md``: data, schedules, parallelism, evaluators.
    ``teacher_cached``: None where no method distils from a teacher (none was trained)."""
    what = (
        "Embedded shapes data"
        if data.kind == "shapes"
        else f"Embedded {DATA_NAMES.get(data.kind, data.kind)} data ({data.num_classes} classes, "
        f"{data.train})"
    )
    if teacher_cached is None:
        teacher, how = "no teacher (no method distils from one)", ""
    else:
        teacher = f"teacher {teacher_iters} iterations"
        how = f" (teacher {'cached' if teacher_cached else 'trained'})"
    return (
        f"# detkd demo results\n\n{what}; {teacher}, "
        f"students {student_iters} iterations; {jobs} run(s) at a time with {threads} "
        f"thread(s) each (train_s is measured so), {minutes:.1f} min in all{how}.\n"
        f"AP columns: COCOEvaluator on {data.val}; VOC_AP50: PascalVOCDetectionEvaluator "
        f"on {data.voc_val}; ms_per_image: batch-1 inference, median, timed after "
        f"training with {timing_threads} thread(s) and nothing beside it.\n\n"
    )


def write_results(
    output: str,
    head: str,
    table: str,
    experiments: Dict,
    rows: Dict,
    curves: Dict,
    gains: Optional[Dict[str, PairedGain]] = None,
    data: DemoData = SHAPES,
):
    """``results.md`` (``head``, ``table``, then what each experiment is) and ``results.json``
    (``rows``, ``curves`` and the paired ``gains``, judged against the goal on ``data``) in
    ``output``. ``experiments``: name -> Experiment."""
    methods_doc = "\n".join(
        f"- **{n}**: {e.description} (`configs/demo/{e.config}`)" for n, e in experiments.items()
    )
    with open(os.path.join(output, "results.md"), "w") as f:
        f.write(head + table + "\n\n" + methods_doc + "\n")
    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump(
            {"rows": rows, "curves": curves, "gains": gains_json(gains or {}, data)}, f, indent=1
        )


def compare_datasets(gains_of: Dict[str, Dict[str, Dict]]) -> str:
    """One table of every method's paired gain on each data set (``gains_of``: data set -> the
    ``gains`` of its ``results.json``, as :func:`gains_json` writes them), so that a reader sees
    whether a conclusion drawn on one data set holds on the other. The last column names the data
    sets on which the method met that data set's goal (:func:`goal_verdict`)."""
    datasets = list(gains_of)
    methods = list(dict.fromkeys(m for gains in gains_of.values() for m in gains))
    lines = [
        "| method | "
        + " | ".join(f"{d}: gain [95 % CI], gap closed, goal" for d in datasets)
        + " | goal met on |",
        "|---|" + "---|" * len(datasets) + "---|",
    ]
    for method in methods:
        cells, met = [], []
        for d in datasets:
            g = gains_of[d].get(method)
            if g is None:
                cells.append("not run")
                continue
            low, high = g["interval"]
            ci = f"[{low:+.2f}, {high:+.2f}]" if g["n"] >= 2 else "n/a"
            closed = (
                f"{100 * g['gap_closed']:.0f} %" if g["gap_closed"] == g["gap_closed"] else "n/a"
            )
            cells.append(f"{g['gain']:+.2f} {ci}, {closed}, {g['goal']} (n={g['n']})")
            if g["goal"] == "met":
                met.append(d)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {', '.join(met) or 'none'} |")
    return "\n".join(lines)


def write_comparison(output: str, result_files: Dict[str, str]) -> str:
    """``comparison.md`` in ``output``: :func:`compare_datasets` over the ``results.json`` of each
    data set (``result_files``: data set -> path). Returns its path."""
    gains_of = {}
    for dataset, path in result_files.items():
        with open(path) as f:
            gains_of[dataset] = json.load(f)["gains"]
    path = os.path.join(output, "comparison.md")
    with open(path, "w") as f:
        f.write(
            "# detkd demo: the paired gains on each data set\n\n"
            + compare_datasets(gains_of)
            + "\n\nEach data set's `results.md` has its tables, seeds and the definitions of the "
            "columns (gain: the method's AP minus its baseline's of the same seed, averaged).\n"
        )
    return path
