"""One run of the demo: its data set, its config, trained and evaluated (the survey's
:func:`~detkd.survey.training.train_config`, with the VOC-form split too), its inference
speed."""

import logging
import multiprocessing
import os
import statistics
import time
from typing import Dict, List, NamedTuple, Tuple

import torch
from detectron2.utils.logger import setup_logger

from ..checkpoint import Checkpointer
from ..config import load_config, student_only_config
from ..data import register_shapes_datasets
from ..data.register import SPECS, embedded_datasets
from ..survey.training import diverged_run, train_config


class DemoData(NamedTuple):
    """The embedded data set a demo trains and evaluates on."""

    kind: str  # "shapes", "hard" or "glyphs" (detkd.data.register.SPECS)
    train: str  # COCO form, the training set
    val: str  # COCO form: COCOEvaluator, during training and after
    voc_val: str  # VOC form of the same images: PascalVOCDetectionEvaluator, after training
    num_classes: int
    # overrides of the demo teacher's training on this data set (not of its architecture)
    teacher_training: Tuple = ()
    # every run starts from a ResNet trunk pretrained on this data set (detkd.demo.pretrain)
    pretrained: bool = False

    def opts(self, teacher: bool) -> List:
        """Config overrides that move a demo config (written for the shapes set) onto this data set
        (none for the shapes set, so its runs' fingerprints and caches are unchanged); ``teacher``:
        the config builds the demo teacher inside (``MODEL.DISTILL.TEACHER.OPTS``) too."""
        if self.kind == "shapes":
            return []
        classes = ["MODEL.ROI_HEADS.NUM_CLASSES", str(self.num_classes)]
        return [
            "DATASETS.TRAIN",
            (self.train,),
            *classes,
            *(["MODEL.DISTILL.TEACHER.OPTS", classes] if teacher else []),
        ]


def demo_data(kind: str = "shapes") -> DemoData:
    """The embedded data set ``kind`` ("shapes", "hard", "glyphs") as the demo uses it."""
    train, val, _, voc_val = embedded_datasets(kind)
    return DemoData(
        kind,
        train,
        val,
        voc_val,
        len(SPECS[kind].classes),
        TEACHER_TRAINING.get(kind, ()),
        kind in PRETRAINED,
    )


# The data sets whose runs start from pretrained trunks: from scratch, the glyphs teacher's
# classification loss stalls (DEMO.md, *The glyphs set*)
PRETRAINED = ("glyphs",)

# The hard set's teacher trains at half the shapes teacher's learning rate: at 0.02 it collapses
# to background for good (DEMO.md); the glyphs teacher at the same rate.
TEACHER_TRAINING = {"hard": ("SOLVER.BASE_LR", 0.01), "glyphs": ("SOLVER.BASE_LR", 0.01)}


SHAPES = demo_data("shapes")
TEST_SETS = (SHAPES.val, SHAPES.voc_val)


def demo_config(config_file: str, opts: List):
    """``config_file`` with ``KEY VALUE`` ``opts`` (values other than lists made strings)."""
    return load_config(
        config_file, [str(o) if not isinstance(o, (list, tuple)) else o for o in opts]
    )


# where a demo run's learning rate drops, as shares of its schedule
LR_STEPS = (0.75, 0.9375)


def lr_steps(max_iter: int, at=LR_STEPS):
    """LR drops at the shares ``at`` of the schedule (distinct iterations, inside it)."""
    if not all(0 < a < 1 for a in at):
        raise ValueError(f"LR steps are shares of the schedule, each in (0, 1); got {tuple(at)}")
    steps = {int(max_iter * a) for a in at}
    return tuple(sorted(s for s in steps if 0 < s < max_iter))


def train(cfg, data: DemoData = SHAPES) -> Dict:
    """Train with DistillTrainer (AP logged on the COCO-form val split during training), then
    evaluate on the VOC-form split too (of the ``data`` set): the survey's
    :func:`~detkd.survey.training.train_config`."""
    return train_config(cfg, extra_test_sets=(data.voc_val,))


def inference_ms(model, cfg, n_images: int = 20) -> float:
    """Median batch-1 inference milliseconds on ``cfg``'s first test set, in this process (run when
    no training runs beside it, so every method is timed alike)."""
    from detectron2.data import build_detection_test_loader

    model.eval()
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
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


def saved_model_ms(cfg) -> float:
    """Inference ms/image of the model a finished run saved in ``cfg.OUTPUT_DIR``."""
    from detectron2.modeling import build_model

    model = build_model(student_only_config(cfg))  # the student alone: the teacher is not timed
    Checkpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    return inference_ms(model, cfg)


def register_worker_data(data_root: str, kind: str = "shapes"):
    """Register in a worker process the embedded data set the demo's process generated."""
    register_shapes_datasets(data_root, generate=False, kind=kind)


def train_run(name: str, seed: int, cfg, data: DemoData = SHAPES) -> Dict:
    """Train and evaluate one student run (in this process or a worker); a diverged run is a
    result, reported as such."""
    if multiprocessing.parent_process() is not None:  # a worker of run_demo(jobs > 1)
        # one console handler per run, named after it, so two runs' progress lines can be told apart
        logging.getLogger("detectron2").handlers.clear()
        setup_logger(name="detectron2", abbrev_name=f"{name}/s{seed}")
    try:
        return train(cfg, data)
    except FloatingPointError as e:
        return diverged_run(name, seed, e)


def train_trial(trial, data: DemoData = SHAPES) -> Dict:
    """:func:`train_run` of a survey :class:`~detkd.survey.trials.Trial` (the demo's trial
    function for the survey's backends)."""
    return train_run(trial.name, trial.seed, trial.cfg, data)
