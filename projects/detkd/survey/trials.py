"""The trials of a survey: one config trained under one seed, its cache (``run.json`` in its run
directory, valid while the fingerprint of what determines its weights is unchanged) and its plan
(which trials are cached, which still train)."""

import functools
import hashlib
import json
import os
import re
from typing import Dict, List, NamedTuple, Tuple

# Part of every distillation run's fingerprint: a change of detkd's training code that alters the
# weights a config trains raises it, so the runs cached before are trained again.
RUN_VERSION = 3


# Config keys added after runs were cached, each with the value at which training is what it was
# before the key existed: at that value the key is left out of the fingerprint, so that adding it
# does not train every cached run again (at any other value it counts as every key does). The
# neutral value is not always the default: FGD's, MGD's, MSSD's and the hint's NORMALIZE ship True.
# In the block of a method that is off they are left out at any value: a new default there (FGD's,
# MGD's, MSSD's and the hint's NORMALIZE True) changes no run that does not train the method.
NEUTRAL_KEYS = {
    "MODEL.DISTILL.MSSD.ADAPT": False,
    "MODEL.DISTILL.MSSD.NORMALIZE": False,
    "MODEL.DISTILL.FGD.NORMALIZE": False,
    "MODEL.DISTILL.MGD.NORMALIZE": False,
    "MODEL.DISTILL.HINT.NORMALIZE": False,
    # each method the automatic balance scales (1.0: scaled to AUTO_TARGET alone, as a config
    # without the key trains; a default other than 1.0, CWD's, PKD's, FGD's, MGD's and the
    # hint's 3.0, retrains the runs with that method on, as it should)
    **{
        f"MODEL.DISTILL.{block}.BALANCE_FACTOR": 1.0
        for block in ("CROSS_HEAD", "CWD", "FGD", "HINT", "MGD", "MSSD", "PKD")
    },
}

# Keys whose default differs from the one runs were cached under: key -> (the default those runs
# had, the default now). In the block of a method that is off such a key trains nothing, so there
# the default now counts as the earlier one: a config that leaves the key at its default keeps its
# fingerprint, and only the runs that train the method (their weights change) train again. Any
# other value counts as it is. MSSD's WEIGHTS: 1.0 per level then, 0 now (docs/METHODS.md).
FORMER_DEFAULTS = {
    "MODEL.DISTILL.MSSD.WEIGHTS": ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]),
}


def _block_of(cfg, key: str):
    """The config node that holds ``key`` ("A.B.C" -> ``cfg.A.B``, ``{}`` where it is missing) and
    the key's last name."""
    *path, last = key.split(".")
    return functools.reduce(lambda n, name: n.get(name, {}), path, cfg), last


def fingerprint(cfg) -> str:
    """Hash of what determines trained weights (not output paths or evaluation settings). A model
    that is not a ``DistillRCNN`` (a teacher trained alone) ignores ``MODEL.DISTILL``: a new detkd
    default there does not retrain it. A ``DistillRCNN``'s counts :data:`RUN_VERSION` too. Keys of
    :data:`NEUTRAL_KEYS` at their neutral value are left out, and at any value in the block of a
    method that is off, as is that method's ``BALANCE_FACTOR``; a key of :data:`FORMER_DEFAULTS` at
    its default counts at the earlier default in the block of a method that is off (a method's new
    default retrains the runs of that method, not a baseline's or another method's)."""
    cfg = cfg.clone()
    for key, neutral in NEUTRAL_KEYS.items():
        node, last = _block_of(cfg, key)
        if last in node and (node[last] == neutral or node.get("ENABLED") is False):
            del node[last]
    for key, (former, now) in FORMER_DEFAULTS.items():
        node, last = _block_of(cfg, key)
        if node.get("ENABLED") is False and list(node.get(last, ())) == now:
            node[last] = former
    for block in cfg.MODEL.get("DISTILL", {}).values():
        if isinstance(block, dict) and block.get("ENABLED") is False:
            block.pop("BALANCE_FACTOR", None)
    parts = {k: cfg[k] for k in ("MODEL", "INPUT", "SOLVER", "DATALOADER", "SEED")}
    if cfg.MODEL.META_ARCHITECTURE != "DistillRCNN":
        parts["MODEL"] = {k: v for k, v in cfg.MODEL.items() if k != "DISTILL"}
    else:
        parts["RUNS"] = RUN_VERSION
    parts["TRAIN"] = list(cfg.DATASETS.TRAIN)
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Trial(NamedTuple):
    """One run of a survey: the arm ``name`` under ``seed``; ``cfg`` is its whole config (its
    ``SEED`` and ``OUTPUT_DIR`` set), ``key`` fingerprints it (and what it depends on, such as the
    teacher's weights), ``cache`` is its ``run.json``. ``former_key``: the key the same run had
    when every key joined the teacher's (a run without a teacher; "" for the others): a run saved
    under it reads back as cached and is saved again under ``key``."""

    name: str
    seed: int
    cfg: object
    key: str
    cache: str
    former_key: str = ""


def names_teacher(cfg) -> bool:
    """Whether ``cfg`` trains with a teacher (its ``MODEL.DISTILL.TEACHER`` names a config or
    weights): only then do its weights depend on the teacher's."""
    teacher = cfg.MODEL.get("DISTILL", {}).get("TEACHER", {})
    return bool(teacher.get("CONFIG_FILE") or teacher.get("WEIGHTS"))


def _joined(*parts: str) -> str:
    return "-".join(p for p in parts if p)


def plan_trials(
    arms: Dict[str, object],
    seeds_of: Dict[str, int],
    output: str,
    key_suffix: str = "",
    teacher_suffix: str = "",
) -> Tuple[Dict[Tuple[str, int], Trial], Dict[Tuple[str, int], Dict], List[Trial]]:
    """Every trial of ``arms`` (name -> config without its seed) under seeds ``0 ..
    seeds_of[name] - 1``, each in ``<output>/<name>/seed<seed>`` (:func:`run_dir_name`): a dict
    (name, seed) -> Trial, the runs read back from a ``run.json`` of the same key, and the trials
    left to train.
    ``teacher_suffix`` (the teacher's fingerprint: the survey's hashes its config and weights
    file, the demo's its training config) joins the key of every trial whose config names a
    teacher (:func:`names_teacher`), so a new teacher retrains those and not the student alone;
    ``key_suffix`` joins every key after it (the fingerprint of pretrained weights all the configs
    start from)."""
    trials, runs, pending = {}, {}, []
    for name, arm in arms.items():
        for seed in range(seeds_of[name]):
            cfg = arm.clone()
            cfg.defrost()
            cfg.SEED = seed
            cfg.OUTPUT_DIR = os.path.join(output, run_dir_name(name), f"seed{seed}")
            own = fingerprint(cfg)
            with_teacher = _joined(own, teacher_suffix, key_suffix)
            if names_teacher(cfg):
                key, former = with_teacher, ""
            else:
                key = _joined(own, key_suffix)
                former = with_teacher if with_teacher != key else ""
            trial = Trial(name, seed, cfg, key, os.path.join(cfg.OUTPUT_DIR, "run.json"), former)
            trials[name, seed] = trial
            saved = load_run(trial)
            if saved is not None:
                print(f"[survey] {name} seed {seed}: cached ({trial.cache})", flush=True)
                runs[name, seed] = saved
            else:
                pending.append(trial)
    return trials, runs, pending


def load_run(trial: Trial):
    """The run ``trial`` saved, or None when there is none or it was saved under another key. A
    run saved under ``trial.former_key`` is saved again under ``trial.key`` and returned."""
    if not os.path.isfile(trial.cache):
        return None
    with open(trial.cache) as f:
        saved = json.load(f)
    if saved.get("key") == trial.key:
        return saved["run"]
    if trial.former_key and saved.get("key") == trial.former_key:
        save_run(trial, saved["run"])
        return saved["run"]
    return None


def save_run(trial: Trial, run: Dict):
    """Save ``run`` as ``trial``'s ``run.json`` (written whole, then moved into place: an
    interrupted write leaves no half file that reads as a cached run)."""
    os.makedirs(os.path.dirname(trial.cache), exist_ok=True)
    tmp = f"{trial.cache}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"key": trial.key, "run": run}, f)
    os.replace(tmp, trial.cache)


def run_dir_name(name: str) -> str:
    """An arm's name as a folder name (characters other than letters, digits and ``._=+-[],``
    become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._=+\-\[\],]", "_", name)
