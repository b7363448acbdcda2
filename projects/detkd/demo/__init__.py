"""``make demo``: distil on the embedded shapes data and print what each method buys.

    python -m detkd.demo [--seeds 3] [--jobs 2] [--output output/demo] [--methods baseline,fgd,...]
                         [--dataset {shapes,hard,glyphs}] [--full | --quick]

1. trains the teacher once (cached in ``output/demo/teacher``; reused while its config is
   unchanged);
2. trains every student method for every seed, logging AP on the validation split during
   training, ``--jobs`` runs at a time (default 2, one process and ``cpu_count // jobs`` threads
   each: on 2 cores two single-threaded runs finish ~1.5x sooner than one two-threaded run after
   another, because much of a small model's step is serial: ROIAlign's backward, per-box
   bookkeeping, the optimizer);
3. evaluates each with COCOEvaluator and PascalVOCDetectionEvaluator; a run whose training config
   (and teacher) is unchanged is read back from its ``run.json`` instead of trained again;
4. prints one table (mean +- std over seeds, per-seed AP below) and each method against its
   baseline paired by seed (mean gain with its 95 % Student-t interval, whether that is above 0,
   share of the teacher-baseline gap closed; :func:`~detkd.survey.report.paired_gains`), and writes
   ``results.md``, ``results.json``, ``results.png`` (bar plot), ``ap_curves.png`` (AP against
   iteration) and ``gains.png`` (paired gains, intervals and seeds); ``--full`` also writes
   ``comparison.md``: each method's paired gain on every data set side by side.

``--dataset hard`` runs everything (the teacher too) on the harder embedded data set
(``detkd_shapes_hard_*``: ten classes, smaller objects) into ``<output>/hard``; ``--dataset
glyphs`` on the set with real image statistics (``detkd_glyphs_*``: letters in many typefaces over
photographs, :mod:`detkd.data.glyphs`; its runs start from pretrained trunks) into
``<output>/glyphs``; ``--full`` is the measured run: at least five seeds of every method, on the
shapes and the hard shapes one after the other, into ``<output>/<set>``.

The methods: the low-resolution comparison the demo is built around (``--seeds``) and the survey
of small-student methods (``--survey-seeds``), which is every ``configs/demo/distill_<name>.yaml``
that enables a registered method at full resolution (:func:`survey_experiments`, see
:mod:`detkd.demo.experiments`; the benchmarks use it too), each against the baseline student.

A run trained again starts in an emptied directory (the demo removes its own stale run, and
refuses a directory it did not make), and one demo at a time writes into an output (its lock,
``.detkd.lock`` there, is the one ``train_net.py`` takes on its ``OUTPUT_DIR``). Progress and ETA
come from detectron2's writers for each run, and from this script for the whole. Students never
see the validation split during training except through these evaluations, which are read only
for reporting (no schedule or weight was tuned on them by this script).

Modules: :mod:`.experiments` (what runs), :mod:`.runner` (the teacher and trunks, then the
student runs through the survey's runner, :mod:`detkd.survey`), :mod:`.training` (one run),
:mod:`.rundirs` (run directories and the lock), :mod:`.report` (the demo's goal, results files;
the table and paired gains are the survey's), :mod:`.cli` (``main``).
"""

from ..engine.output_lock import LOCK_FILE
from ..survey.plots import gain_panels
from ..survey.report import COLUMNS, format_table, mean_ci95, paired_gains, t_quantile_95
from ..survey.training import ap_curve
from .cli import main
from .experiments import CONFIG_DIR, Experiment, experiments, survey_experiments
from .report import (
    GLYPHS_GOAL,
    GOAL,
    compare_datasets,
    gains_json,
    goal_for,
    goal_verdict,
    plot_gains,
    summarize,
)
from .rundirs import RUN_MARKER, fresh_run_dir, output_lock
from .runner import run_demo
from .training import demo_data

__all__ = [
    "CONFIG_DIR",
    "COLUMNS",
    "Experiment",
    "GLYPHS_GOAL",
    "GOAL",
    "LOCK_FILE",
    "RUN_MARKER",
    "ap_curve",
    "compare_datasets",
    "demo_data",
    "experiments",
    "format_table",
    "fresh_run_dir",
    "gain_panels",
    "gains_json",
    "goal_for",
    "goal_verdict",
    "main",
    "mean_ci95",
    "output_lock",
    "paired_gains",
    "plot_gains",
    "run_demo",
    "summarize",
    "survey_experiments",
    "t_quantile_95",
]
