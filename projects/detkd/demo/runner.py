"""The demo's run loop: the teacher (trained once, cached while its config is unchanged), then
every student run (read back from its ``run.json`` while its training config and the teacher are
unchanged, else trained ``jobs`` at a time), its inference timed alone, then report and plots. All
of them on one embedded data set (``dataset``: the shapes, or the hard shapes)."""

import functools
import glob
import hashlib
import json
import os
import time
from typing import Dict, List, NamedTuple, Sequence

import torch

from ..checkpoint import Checkpointer
from ..data import register_shapes_datasets
from ..data.register import registered_shapes_root
from ..survey.backends import LocalBackend
from ..survey.plots import plot_results
from ..survey.report import convergence, format_table, paired_gains, regime, schedule_share
from ..survey.runner import run_trials
from ..survey.trials import fingerprint, names_teacher, plan_trials, save_run
from .experiments import CONFIG_DIR, diagnosis_experiments, experiments
from .report import header, plot_gains, row, summarize, write_results
from .rundirs import fresh_run_dir, output_lock
from .training import (
    LR_STEPS,
    DemoData,
    demo_config,
    demo_data,
    inference_ms,
    lr_steps,
    register_worker_data,
    saved_model_ms,
    train,
    train_trial,
)


def run_demo(
    output: str,
    methods: List[str],
    seeds,
    teacher_iters: int,
    student_iters: int,
    eval_points: int = 3,
    extra_opts: List = (),
    jobs: int = 1,
    dataset: str = "shapes",
    pretrain_iters: int = 1500,
    student_lr_steps=LR_STEPS,
) -> Dict:
    """``seeds``: one count for every method, or a dict method -> count. ``jobs`` student runs
    train at once, each in its own process with ``cpu_count // jobs`` threads (``jobs=1``: in this
    process, with torch's default threads). Holds the lock of ``output`` throughout: a second
    demo into the same output fails at once. Every run it trains starts in a fresh run directory
    (:func:`~detkd.demo.rundirs.fresh_run_dir`). ``dataset``: "shapes" or "hard"; every run, the
    teacher's too, trains and is evaluated on it (give each data set its own ``output``: the CLI
    does). On a data set whose runs start pretrained (``DemoData.pretrained``), the ResNet trunks
    of the teacher's and the students' depths are pretrained first, ``pretrain_iters`` iterations
    each (:mod:`detkd.demo.pretrain`), cached like the teacher. ``student_lr_steps``: where the
    students' learning rate drops, as shares of their schedule (the teacher's: ``LR_STEPS``).
    The teacher is trained, or its cache evaluated, only where a chosen method distils from it
    (:func:`distils_from_teacher`); without one the table has no teacher row. Returns the
    table's rows: name -> one per seed, each with its ``seed``."""
    with output_lock(output):
        if jobs < 1:
            raise ValueError(f"run_demo: jobs must be >= 1, got {jobs}")
        known = {**experiments(), **diagnosis_experiments()}
        seeds_of = seeds if isinstance(seeds, dict) else {m: seeds for m in methods}
        threads = torch.get_num_threads() if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)
        data = demo_data(dataset)
        register_shapes_datasets(kind=data.kind)
        os.makedirs(output, exist_ok=True)
        start = time.perf_counter()
        trunks = _pretrained_trunks(output, data, pretrain_iters)
        chosen = {m: known[m] for m in methods}
        if any(distils_from_teacher(e) for e in chosen.values()):
            teacher_run, weights, teacher_fp, cached, teacher_seed = _teacher(
                output, teacher_iters, extra_opts, data, trunks
            )
        else:  # MSSD and the baselines alone: no run reads a teacher, so none is trained
            teacher_run = weights = teacher_fp = teacher_seed = cached = None
        trials, runs, pending = plan_students(
            output,
            chosen,
            seeds_of,
            student_iters,
            eval_points,
            extra_opts,
            weights,
            teacher_fp,
            data,
            trunks,
            student_lr_steps,
        )
        for trial in pending:  # all checked before a student trains: a refused directory stops it
            fresh_run_dir(trial.cfg.OUTPUT_DIR)
        backend = LocalBackend(
            jobs,
            threads if jobs > 1 else None,
            register_worker_data,
            (registered_shapes_root(data.kind), data.kind),
        )
        run_trials(
            pending, runs, backend, functools.partial(train_trial, data=data), prefix="[demo]"
        )
        # inference speed, timed here with no training beside it (the runs above share the CPU)
        for trial in trials.values():
            run = runs[trial.name, trial.seed]
            if not run.get("diverged") and not run.get("ms_timed_alone"):
                run.update(ms_per_image=saved_model_ms(trial.cfg), ms_timed_alone=True)
                save_run(trial, run)

        rows = {"teacher": [row(teacher_run, teacher_seed, data)]} if teacher_run else {}
        curves = {}
        for name in methods:
            rows[name] = [row(runs[name, seed], seed, data) for seed in range(seeds_of[name])]
            curves[name] = [runs[name, seed]["curve"] for seed in range(seeds_of[name])]
        baseline_of = {n: known[n].baseline for n in methods}
        table = format_table(rows) + "\n\n" + summarize(rows, baseline_of, data)
        table += "\n\n" + convergence(curves)
        table += "\n\n" + schedule_share(curves, baseline_of)
        head = header(
            teacher_iters,
            student_iters,
            jobs,
            threads,
            (time.perf_counter() - start) / 60,
            cached,
            torch.get_num_threads(),
            data,
        )
        regime_line = regime(curves, [n for n in methods if not baseline_of[n]])
        head += regime_line + "\n\n"
        gains = paired_gains(rows, baseline_of)
        write_results(
            output, head, table, {n: known[n] for n in methods}, rows, curves, gains, data
        )
        plot_results(rows, curves, output)
        plot_gains(rows, baseline_of, output, data)
        print("\n" + table, flush=True)
        print(f"\n[demo] {data.kind} set. {regime_line}", flush=True)
        print(
            f"\n[demo] wrote {output}/results.md, results.png, ap_curves.png, gains.png", flush=True
        )
        return rows


class Trunks(NamedTuple):
    """Pretrained ResNet trunks: depth -> weights file, and one fingerprint of them all."""

    files: Dict[int, str]
    key: str

    def opts(self, config_file: str, overrides: Sequence = ()) -> List:
        """``MODEL.WEIGHTS`` of the trunk of the depth of ``config_file`` (with ``overrides``, a
        diagnosis variant's KEY VALUE list), its keys where that backbone holds its ResNet (none
        without trunks)."""
        if not self.files:
            return []
        cfg = demo_config(config_file, list(overrides))
        return ["MODEL.WEIGHTS", trunk_for_backbone(self.files[cfg.MODEL.RESNETS.DEPTH], cfg)]


def trunk_for_backbone(weights: str, cfg) -> str:
    """A pretrained trunk (``weights``: ``backbone.bottom_up.*``, as an FPN holds its ResNet) with
    its keys where ``cfg``'s backbone holds its ResNet: ``weights`` itself for an FPN, else a copy
    beside it named after the module's path (a PAFPN wraps its FPN: keys
    ``backbone.fpn.bottom_up.*``, file ``<weights>.fpn.bottom_up.pth``), written once. A backbone
    without a ResNet is an error that names it."""
    from detectron2.modeling import build_backbone
    from detectron2.modeling.backbone import ResNet

    backbone = build_backbone(cfg)
    paths = [name for name, m in backbone.named_modules() if isinstance(m, ResNet)]
    if len(paths) != 1:
        raise ValueError(
            f"{cfg.MODEL.BACKBONE.NAME}: a pretrained trunk needs one ResNet in the backbone, "
            f"found {len(paths)}"
        )
    if paths[0] == "bottom_up":
        return weights
    copy = f"{os.path.splitext(weights)[0]}.{paths[0]}.pth"
    if not os.path.isfile(copy) or os.path.getmtime(copy) < os.path.getmtime(weights):
        canonical = "backbone.bottom_up."
        state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
        stray = [k for k in state if not k.startswith(canonical)]
        if stray:
            raise ValueError(
                f"{weights}: not a pretrained trunk, keys {stray[:3]} outside {canonical}"
            )
        moved = {f"backbone.{paths[0]}.{k[len(canonical):]}": v for k, v in state.items()}
        torch.save({"model": moved, "__author__": "detkd.demo.pretrain"}, copy + ".tmp")
        os.replace(copy + ".tmp", copy)
    return copy


NO_TRUNKS = Trunks({}, "")


def trunk_file(output: str, depth: int) -> str:
    """Where the demo caches its ResNet-``depth`` trunk for the data set folder ``output``
    (``<output>/pretrain_R<depth>/model_final.pth``)."""
    return os.path.join(output, f"pretrain_R{depth}", "model_final.pth")


def _pretrained_trunks(output: str, data: DemoData, iters: int) -> Trunks:
    """The ResNet trunks every run of ``data`` starts from (none unless ``data.pretrained``): one
    per depth among the demo's configs, pretrained on ``data``'s generator
    (:func:`~detkd.demo.pretrain.pretrain_backbone`), cached in ``<output>/pretrain_R<depth>``
    while their settings are unchanged."""
    if not data.pretrained:
        return NO_TRUNKS
    from ..data.register import SPECS
    from .pretrain import CROP, PRETRAIN_SEED, pretrain_backbone

    spec = SPECS[data.kind]()
    depths = {}
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))):
        cfg = demo_config(path, [])
        if cfg.MODEL.BACKBONE.NAME.startswith("build_resnet"):
            depths.setdefault(cfg.MODEL.RESNETS.DEPTH, path)
    files, keys = {}, []
    for depth, path in sorted(depths.items()):
        weights = trunk_file(output, depth)
        folder = os.path.dirname(weights)
        cfg = demo_config(path, [])
        key = hashlib.sha1(
            json.dumps(
                [cfg.MODEL.RESNETS, spec.key(), iters, CROP, PRETRAIN_SEED], default=str
            ).encode()
        ).hexdigest()[:12]
        stamp = os.path.join(folder, "CONFIG_FINGERPRINT")
        if os.path.isfile(weights) and os.path.isfile(stamp) and open(stamp).read() == key:
            print(f"[demo] ResNet-{depth} trunk: cached ({weights})", flush=True)
        else:
            print(f"[demo] ResNet-{depth} trunk: pretraining {iters} iterations", flush=True)
            fresh_run_dir(folder)
            state, summary = pretrain_backbone(cfg, spec, iters)
            torch.save({"model": state, "__author__": "detkd.demo.pretrain"}, weights)
            with open(os.path.join(folder, "summary.json"), "w") as f:
                json.dump(summary, f)
            with open(stamp, "w") as f:
                f.write(key)
        files[depth] = weights
        keys.append(key)
    return Trunks(files, "-".join(keys))


def _teacher(
    output: str, teacher_iters: int, extra_opts: List, data: DemoData, trunks: Trunks = NO_TRUNKS
):
    """The teacher's run on the ``data`` set (trained, or its cached weights evaluated), its
    weights file, its config's fingerprint (:func:`~detkd.survey.trials.fingerprint`), whether it
    was cached, and its config's seed."""
    teacher_dir = os.path.join(output, "teacher")
    teacher_file = os.path.join(CONFIG_DIR, "teacher.yaml")
    t_cfg = demo_config(
        teacher_file,
        [
            "SOLVER.MAX_ITER",
            teacher_iters,
            "SOLVER.STEPS",
            lr_steps(teacher_iters),
            "OUTPUT_DIR",
            teacher_dir,
            "DATASETS.TEST",
            (data.val,),
            "TEST.EVAL_PERIOD",
            0,
            *data.opts(teacher=False),
            *data.teacher_training,
            *trunks.opts(teacher_file),
            *extra_opts,
        ],
    )
    weights = os.path.join(teacher_dir, "model_final.pth")
    stamp = os.path.join(teacher_dir, "CONFIG_FINGERPRINT")
    own = fingerprint(t_cfg)
    fp = own + (f"-{trunks.key}" if trunks.key else "")
    cached = os.path.isfile(weights) and os.path.isfile(stamp) and open(stamp).read() == fp
    if cached:
        print(f"[demo] teacher: cached ({weights})", flush=True)
        from detectron2.modeling import build_model

        from ..engine import DistillTrainer

        model = build_model(t_cfg)
        Checkpointer(model).load(weights)
        both = t_cfg.clone()
        both.DATASETS.TEST = (data.val, data.voc_val)
        run = dict(
            results=DistillTrainer.test(both, model),
            curve=[],
            train_seconds=float("nan"),
            params=sum(p.numel() for p in model.parameters()),
            ms_per_image=inference_ms(model, t_cfg),
        )
    else:
        print(f"[demo] teacher: training {teacher_iters} iterations", flush=True)
        fresh_run_dir(teacher_dir)
        run = train(t_cfg, data)
        run["ms_per_image"] = saved_model_ms(t_cfg)
        with open(stamp, "w") as f:
            f.write(fp)
    return run, weights, own, cached, t_cfg.SEED


def distils_from_teacher(experiment) -> bool:
    """Whether the demo ``experiment``'s runs read the teacher (its config names one): only then
    does the demo train or evaluate a teacher for it."""
    return names_teacher(demo_config(os.path.join(CONFIG_DIR, experiment.config), []))


def plan_students(
    output: str,
    chosen: Dict,
    seeds_of: Dict,
    student_iters: int,
    eval_points: int,
    extra_opts: List,
    weights: str,
    teacher_fp: str,
    data: DemoData,
    trunks: Trunks = NO_TRUNKS,
    at=LR_STEPS,
):
    """Every student run of the ``chosen`` experiments (name -> Experiment) on the ``data`` set,
    planned by the survey (:func:`~detkd.survey.trials.plan_trials`): a dict (name, seed) ->
    Trial, the runs read back from a ``run.json`` of the same key, and the trials left to
    train. ``teacher_fp`` keys the runs that distil from the teacher, ``trunks``' key every run.
    ``at``: where the students' learning rate drops, as shares of their schedule."""
    arms = {}
    for name, experiment in chosen.items():
        config = os.path.join(CONFIG_DIR, experiment.config)
        uses_teacher = distils_from_teacher(experiment)
        overrides = [*experiment.opts, *extra_opts]  # last: they win over the demo's settings
        arms[name] = demo_config(
            config,
            [
                "SOLVER.MAX_ITER",
                student_iters,
                "SOLVER.STEPS",
                lr_steps(student_iters, at),
                "TEST.EVAL_PERIOD",
                max(student_iters // eval_points, 1),
                "DATASETS.TEST",
                (data.val,),
                *(["MODEL.DISTILL.TEACHER.WEIGHTS", weights] if uses_teacher else []),
                *data.opts(teacher=uses_teacher),
                *trunks.opts(config, overrides),
                *overrides,
            ],
        )
    return plan_trials(arms, seeds_of, output, key_suffix=trunks.key, teacher_suffix=teacher_fp)
