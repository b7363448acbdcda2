"""One trial of a survey, trained and evaluated: seeded from its config, trained by
:class:`~detkd.engine.DistillTrainer` (AP logged on ``DATASETS.TEST`` every ``TEST.EVAL_PERIOD``
iterations, its curve read back from ``metrics.json``), evaluated at the end with each test set's
own detectron2 evaluator. With several GPUs a trial runs under detectron2's ``launch``."""

import json
import os
import time
from typing import Dict, List, Sequence

from detectron2.utils.env import seed_all_rng

DIVERGED = "diverged"


def ap_curve(output_dir: str) -> List:
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


def train_config(cfg, extra_test_sets: Sequence[str] = ()) -> Dict:
    """Train ``cfg`` and evaluate it: a dict with ``results`` (test set -> its evaluator's
    results, for ``cfg.DATASETS.TEST[0]`` if any and each of ``extra_test_sets``), ``curve``,
    ``train_seconds`` and the student's ``params``.

    Seeded from ``cfg.SEED`` before anything is built (as train_net's ``default_setup`` does): one
    config and seed train the same weights, and under one seed a distilled student and its
    baseline start from the same student weights, which the pairing of gains by seed rests on."""
    from ..engine import DistillTrainer

    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model = trainer.model
    student = getattr(model, "student", model)
    results = {}
    if cfg.DATASETS.TEST:
        test_set = cfg.DATASETS.TEST[0]
        final = trainer.last_eval_results
        if final is None:  # TEST.EVAL_PERIOD 0: no evaluation during training (in any process)
            final = DistillTrainer.test(_with_test_sets(cfg, [test_set]), model)
        results[test_set] = final
    for name in extra_test_sets:
        results[name] = DistillTrainer.test(_with_test_sets(cfg, [name]), model)
    return dict(
        results=results,
        curve=ap_curve(cfg.OUTPUT_DIR),
        train_seconds=seconds,
        params=sum(p.numel() for p in student.parameters()),
    )


def _with_test_sets(cfg, names):
    out = cfg.clone()
    out.defrost()
    out.DATASETS.TEST = tuple(names)
    return out


def diverged_run(name: str, seed: int, error: Exception) -> Dict:
    """A trial that stopped on a non-finite or runaway loss: a result, reported as such."""
    print(f"[survey] {name} seed {seed} diverged: {error}", flush=True)
    return dict(
        results={},
        curve=[],
        train_seconds=float("nan"),
        params=0,
        ms_per_image=float("nan"),
        diverged=True,
    )


def train_trial(
    trial, num_gpus: int = 0, processes: int = 0, initializer=None, initargs: Sequence = ()
) -> Dict:
    """Train and evaluate one :class:`~detkd.survey.trials.Trial` on ``num_gpus`` GPUs (0: the
    CPU), in this process or, with more than one process (``processes``, default one per GPU),
    under detectron2's ``launch``: each launched process runs ``initializer(*initargs)`` first
    (registering the datasets), the first one writes the run to ``<OUTPUT_DIR>/trial_run.json``,
    read back here. A diverged trial is a result (:func:`diverged_run`)."""
    cfg = trial.cfg.clone()
    cfg.defrost()
    if num_gpus >= 1:
        cfg.MODEL.DEVICE = "cuda"
    processes = processes or max(num_gpus, 1)
    try:
        if processes == 1:
            return train_config(cfg)
        from detectron2.engine import launch

        path = os.path.join(cfg.OUTPUT_DIR, "trial_run.json")
        if os.path.isfile(path):
            os.remove(path)
        launch(_launched, processes, dist_url="auto", args=(cfg, path, initializer, initargs))
        with open(path) as f:
            return json.load(f)
    except FloatingPointError as e:  # RunawayTermError too
        return diverged_run(trial.name, trial.seed, e)


def _launched(cfg, path: str, initializer=None, initargs: Sequence = ()):
    """One process of a trial under ``launch``: sets up, trains; the first process writes the
    run."""
    from detectron2.utils import comm

    if initializer is not None:
        initializer(*initargs)
    run = train_config(cfg)
    if comm.is_main_process():
        with open(path, "w") as f:
            json.dump(run, f)
