"""``detkd survey``: which distillation method, at which weight, helps on your data, measured
with paired seeds, on this machine or a Ray cluster (:mod:`.cli` for the command).

Modules: :mod:`.arms` (the baseline, methods and grid points from your config, checked before
anything trains), :mod:`.trials` (one arm under one seed, its cache), :mod:`.training` (one trial
trained and evaluated), :mod:`.backends` (local process pool, Ray), :mod:`.runner` (the run loop,
progress, the report files), :mod:`.report` (rows, table, paired gains and their intervals),
:mod:`.plots`. The demo runs its trials and builds its tables with the same code.
"""

from .arms import BASELINE, METHOD_GROUPS, SurveyError, build_arms, parse_grid, parse_methods
from .backends import LocalBackend, RayBackend
from .runner import Survey, evaluate_teacher, rank, register_trial_datasets, run_trials
from .trials import RUN_VERSION, Trial, fingerprint, plan_trials

__all__ = [
    "BASELINE",
    "LocalBackend",
    "METHOD_GROUPS",
    "RUN_VERSION",
    "RayBackend",
    "Survey",
    "SurveyError",
    "Trial",
    "build_arms",
    "evaluate_teacher",
    "fingerprint",
    "parse_grid",
    "parse_methods",
    "plan_trials",
    "rank",
    "register_trial_datasets",
    "run_trials",
]
