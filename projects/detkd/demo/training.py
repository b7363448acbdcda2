"""One run of the demo: train and evaluate a config (in this process or a worker process), its AP
curve, its inference speed, and the fingerprint that says whether a saved run is still valid."""

import hashlib
import json
import logging
import multiprocessing
import os
import statistics
import time
from typing import Dict, List, NamedTuple, Tuple

import torch
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..checkpoint import Checkpointer
from ..config import load_config, student_only_config
from ..data import register_shapes_datasets
from ..data.register import SPECS, embedded_datasets


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
    """The embedded data set ``kind`` ("shapes", "hard") as the demo uses it."""
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


# The hard set's teacher trains at half the shapes teacher's learning rate: at 0.02 (SEED 1) its
# classification loss rose to 17.6 around iteration 80, and clipped, it did not diverge but
# collapsed to background for good (loss_cls ~0.54 to the end, 0 AP after 800 iterations).
# The data sets whose runs start from pretrained trunks: on the glyphs set a from-scratch ResNet-34
# teacher reached 4.0 AP after 1500 iterations (its classification loss flat from iteration 300)
PRETRAINED = ("glyphs",)

# The glyphs set's teacher trains at the hard set's rate too (its photographs and clutter make it
# the harder of the two to start on).
TEACHER_TRAINING = {"hard": ("SOLVER.BASE_LR", 0.01), "glyphs": ("SOLVER.BASE_LR", 0.01)}


SHAPES = demo_data("shapes")
TEST_SETS = (SHAPES.val, SHAPES.voc_val)


def demo_config(config_file: str, opts: List):
    """``config_file`` with ``KEY VALUE`` ``opts`` (values other than lists made strings)."""
    return load_config(
        config_file, [str(o) if not isinstance(o, (list, tuple)) else o for o in opts]
    )


def lr_steps(max_iter: int):
    """LR drops at 75 % and 93.75 % of the schedule (distinct, inside it)."""
    steps = {int(max_iter * 0.75), int(max_iter * 0.9375)}
    return tuple(sorted(s for s in steps if 0 < s < max_iter))


# Part of every student run's fingerprint: a change of the demo's training code that alters the
# weights a student config trains raises it, so the student runs cached before are trained again.
RUN_VERSION = 3


def fingerprint(cfg) -> str:
    """Hash of what determines trained weights (not output paths or evaluation settings). A model
    that is not a ``DistillRCNN`` (the demo teacher) ignores ``MODEL.DISTILL``: a new detkd default
    there does not retrain it. A student's counts :data:`RUN_VERSION` too; the teacher's does not
    (it is in no pair of runs, and its cached weights stay a valid teacher)."""
    parts = {k: cfg[k] for k in ("MODEL", "INPUT", "SOLVER", "DATALOADER", "SEED")}
    if cfg.MODEL.META_ARCHITECTURE != "DistillRCNN":
        parts["MODEL"] = {k: v for k, v in cfg.MODEL.items() if k != "DISTILL"}
    else:
        parts["RUNS"] = RUN_VERSION
    parts["TRAIN"] = list(cfg.DATASETS.TRAIN)
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


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


def train(cfg, data: DemoData = SHAPES) -> Dict:
    """Train with DistillTrainer (AP on the COCO-form val split logged during training), then
    evaluate on the VOC-form split too (of the ``data`` set); return results, AP curve, wall
    seconds and parameters."""
    from ..engine import DistillTrainer

    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    # train_net's default_setup seeds every run from cfg.SEED; the demo builds its trainer itself,
    # so it seeds here: one config and seed train the same weights, and under one seed a student
    # and its baseline start from the same student weights (the pairing of gains by seed rests on
    # it)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model = trainer.model
    student = getattr(model, "student", model)
    results = {data.val: trainer.last_eval_results or {}}
    voc_cfg = cfg.clone()
    voc_cfg.defrost()
    voc_cfg.DATASETS.TEST = (data.voc_val,)
    results[data.voc_val] = DistillTrainer.test(voc_cfg, model)
    return dict(
        results=results,
        curve=ap_curve(cfg.OUTPUT_DIR),
        train_seconds=seconds,
        params=sum(p.numel() for p in student.parameters()),
    )


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


def init_worker(threads: int, data_root: str, kind: str = "shapes"):
    """Set up a spawned worker process: its thread count and the datasets the parent registered."""
    torch.set_num_threads(threads)
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
        print(f"[demo] {name} seed {seed} diverged: {e}", flush=True)
        return dict(
            results={},
            curve=[],
            train_seconds=float("nan"),
            params=0,
            ms_per_image=float("nan"),
            diverged=True,
        )
