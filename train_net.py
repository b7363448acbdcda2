#!/usr/bin/env python
"""Train and evaluate detkd distillers, detectron2-style.

    python train_net.py --config-file configs/demo/distill_fgd.yaml [--num-gpus N] [KEY VALUE ...]
    python train_net.py --config-file configs/lazy/demo_distill_fgd.py [key=value ...]
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --eval-teacher        # the teacher, same evaluator
    python train_net.py --config-file ... --resume

yaml configs go through ``DistillTrainer`` (a DefaultTrainer); LazyConfig ``.py`` files through
the same loop detectron2's ``lazyconfig_train_net.py`` uses. Multi-process runs go through
``detectron2.engine.launch`` (gloo on CPU).
"""

import contextlib
import logging
import os

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import detkd  # noqa: F401  registers DistillRCNN and the PAFPN backbone
from detkd import load_config
from detkd.balance import BalanceReport, method_names
from detkd.checkpoint import Checkpointer
from detkd.config import student_only_config
from detkd.data import register_datasets
from detkd.engine import DistillTrainer, add_global_norm_clipping, hold_output_dir
from detkd.engine.teacher_check import lazy_sanity_check
from detkd.engine.trainer import wrap_ddp
from detkd.modeling import teacher_of

logger = logging.getLogger("detkd")


# ----- yaml -------------------------------------------------------------------------------
def setup_detkd_logger(output_dir):
    """detkd's own messages (loaded tensors, inherited tensors, teacher keys) into log.txt too."""
    setup_logger(output_dir, distributed_rank=comm.get_rank(), name="detkd")


def setup_yaml(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_detkd_logger(cfg.OUTPUT_DIR)
    return cfg


def evaluate_student(cfg, resume: bool = False):
    """``--eval-only``: the student alone (no teacher is built, so none of its files is needed),
    loaded from MODEL.WEIGHTS (a DistillRCNN checkpoint, a plain detector's, an exported
    student)."""
    model = DistillTrainer.build_model(student_only_config(cfg))
    checkpointer = Checkpointer(
        model, save_dir=cfg.OUTPUT_DIR, allow_unsafe_pickle=cfg.MODEL.DISTILL.ALLOW_UNSAFE_PICKLE
    )
    if not cfg.MODEL.WEIGHTS and not (resume and checkpointer.has_checkpoint()):
        raise ValueError(
            "--eval-only needs MODEL.WEIGHTS (or --resume with a checkpoint in OUTPUT_DIR): "
            "without weights it would evaluate a randomly initialised student"
        )
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    return DistillTrainer.test(cfg, model)


def main_yaml(args):
    cfg = setup_yaml(args)
    register_datasets(tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST))
    if args.eval_teacher:
        return DistillTrainer.test(cfg, teacher_of(cfg))
    if args.eval_only:
        res = evaluate_student(cfg, resume=args.resume)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # the final evaluation's results (DefaultTrainer returns them only with TEST.EXPECTED_RESULTS)
    return trainer.last_eval_results


# ----- LazyConfig ------------------------------------------------------------------------------
def lazy_test(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    ret = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(ret)
    return ret


def main_lazy(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    if not torch.cuda.is_available():
        cfg.train.device = "cpu"
    default_setup(cfg, args)
    setup_detkd_logger(cfg.train.output_dir)
    allow_unsafe = cfg.train.get("allow_unsafe_pickle", False)
    names = []
    for key in ("train", "test"):
        if key in cfg.dataloader:
            ds = cfg.dataloader[key].dataset
            n = ds.get("names", None)
            names += [n] if isinstance(n, str) else list(n or [])
    register_datasets(names)

    if args.eval_teacher:
        if cfg.model.get("teacher") is None:
            raise ValueError("--eval-teacher needs model.teacher in the LazyConfig")
        return lazy_test(cfg, instantiate(cfg.model.teacher).to(cfg.train.device))

    if args.eval_only:
        if not cfg.train.init_checkpoint:
            raise ValueError(
                "--eval-only needs train.init_checkpoint: without weights it would evaluate "
                "a randomly initialised model"
            )
        # the student alone: no teacher (nor its files) is needed to evaluate it
        for key, empty in (("teacher", None), ("distillers", []), ("inherit_prefixes", None)):
            if key in cfg.model:
                cfg.model[key] = empty
        model = instantiate(cfg.model).to(cfg.train.device)
        Checkpointer(model, allow_unsafe_pickle=allow_unsafe).load(cfg.train.init_checkpoint)
        return lazy_test(cfg, model)

    model = instantiate(cfg.model)
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    clip = cfg.train.get("global_grad_clip_norm", 0.0)
    if clip:
        optim = add_global_norm_clipping(
            optim, clip, {id(p): n for n, p in model.named_parameters()}
        )
    train_loader = instantiate(cfg.dataloader.train)
    model = wrap_ddp(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    checkpointer = Checkpointer(
        model, cfg.train.output_dir, trainer=trainer, allow_unsafe_pickle=allow_unsafe
    )
    trainer.register_hooks(
        [
            lazy_sanity_check(cfg.dataloader),
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: lazy_test(cfg, model)),
            # each distillation term against the detection loss (train.balance_log_period)
            BalanceReport(method_names(model), cfg.train.get("balance_log_period", 20)),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def import_user_modules(paths) -> None:
    """Import each module name or ``.py`` file in ``paths`` (``--import``): e.g. a file that
    registers your own distiller, so its config block exists before the config is read. Runs in
    every process (``launch`` starts workers that import only this script)."""
    import importlib
    import importlib.util
    import sys

    for path in paths:
        if path.endswith(".py"):
            # a name of its own (a file called config.py must not be taken for another module)
            name = "detkd_import_" + "".join(
                c if c.isalnum() else "_" for c in os.path.abspath(path)
            )
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None:
                raise FileNotFoundError(f"--import {path}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(path)


def main(args):
    import_user_modules(args.imports)
    if comm.get_world_size() > 1 and not torch.cuda.is_available():
        # CPU processes share the cores: one thread each by default
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    if args.config_file.endswith(".py"):
        return main_lazy(args)
    return main_yaml(args)


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--eval-teacher",
        action="store_true",
        help="evaluate the teacher (MODEL.DISTILL.TEACHER) with the same evaluator",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import this module or .py file first, e.g. one that registers your own "
        "distillation method (repeatable)",
    )
    return parser


def output_dir_of(args) -> str:
    """The OUTPUT_DIR (yaml) or ``train.output_dir`` (LazyConfig) that ``args`` will write into;
    a yaml config's embedded demo data is generated here, once, before any worker starts."""
    if args.config_file.endswith(".py"):
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
        return cfg.train.output_dir
    cfg = load_config(args.config_file, args.opts)
    register_datasets(tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST))
    return cfg.OUTPUT_DIR


def invoke(argv=None):
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    import_user_modules(args.imports)
    output_dir = output_dir_of(args)
    purpose = (
        "evaluating the teacher"
        if args.eval_teacher
        else "evaluating"
        if args.eval_only
        else "training"
    )
    purpose += f" {args.config_file}"
    # one run per output directory: the main process of the first machine holds its lock for the
    # whole run, every launched process included (the others write nothing there)
    lock = (
        hold_output_dir(
            output_dir,
            purpose,
            "Wait for it to finish, or give this run another OUTPUT_DIR.",
        )
        if args.machine_rank == 0
        else contextlib.nullcontext()
    )
    with lock:
        if args.num_gpus * args.num_machines == 1:
            return main(args)  # what launch() would do, keeping the results for the caller
        return launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )


if __name__ == "__main__":
    invoke()
