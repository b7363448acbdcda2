"""yaml keys of detkd: ``add_detkd_config(cfg)`` adds every ``MODEL.DISTILL.*`` key.

Defaults follow the papers (see ``shared/PAPERS.md``); every method is off by default so a
config that only names ``META_ARCHITECTURE: DistillRCNN`` trains a plain student.

``MODEL.DISTILL`` reads like a list of distilled pairs: each method block names what it
distils (``STUDENT_FEATURES`` / ``TEACHER_FEATURES`` or ``TARGETS``), its loss weights and
its own hyper-parameters.
"""
from detectron2.config import CfgNode as CN

# every method block under MODEL.DISTILL, by name: used to validate configs
METHOD_NAMES = ("HINT", "SOFT_CE", "BOUNDED_REG", "FGD", "MSSD")


def add_detkd_config(cfg):
    """Add detkd's keys (in place) to a detectron2 config and return it."""
    _C = cfg
    _C.MODEL.DISTILL = CN()
    # The student is built from this config with this meta-architecture.
    _C.MODEL.DISTILL.STUDENT_META_ARCHITECTURE = "GeneralizedRCNN"

    _C.MODEL.DISTILL.TEACHER = CN()
    # yaml or LazyConfig .py of the teacher; empty = no teacher (self-distillation only)
    _C.MODEL.DISTILL.TEACHER.CONFIG_FILE = ""
    # the teacher's checkpoint; required whenever CONFIG_FILE is set
    _C.MODEL.DISTILL.TEACHER.WEIGHTS = ""
    # "KEY VALUE" overrides applied to the teacher's config
    _C.MODEL.DISTILL.TEACHER.OPTS = []

    # Initialise student parameters from the teacher where names and shapes match.
    _C.MODEL.DISTILL.INHERIT = CN()
    _C.MODEL.DISTILL.INHERIT.ENABLED = False
    # parameter-name prefixes eligible for inheriting (student names, without "student.")
    _C.MODEL.DISTILL.INHERIT.PREFIXES = ["backbone.fpn_", "proposal_generator.", "roi_heads."]

    # Chen et al. 2017, Sec. 4.1: the student sees the image scaled by this factor, the teacher
    # at full resolution. Feature losses resize one side to the other (FEATURE_RESIZE).
    _C.MODEL.DISTILL.STUDENT_INPUT_SCALE = 1.0
    # "teacher_to_student" or "student_to_teacher"
    _C.MODEL.DISTILL.FEATURE_RESIZE = "teacher_to_student"

    # Hint learning (Chen et al. 2017, Sec. 3.3): ||V - adapt(Z)||^2
    _C.MODEL.DISTILL.HINT = CN()
    _C.MODEL.DISTILL.HINT.ENABLED = False
    _C.MODEL.DISTILL.HINT.WEIGHT = 0.5  # gamma
    # backbone ("res2".."res5") or FPN ("p2".."p6") names, paired in order
    _C.MODEL.DISTILL.HINT.STUDENT_FEATURES = ["res4"]
    _C.MODEL.DISTILL.HINT.TEACHER_FEATURES = ["res4"]
    _C.MODEL.DISTILL.HINT.ADAPTATION_KERNEL = 1  # 1 or 3
    _C.MODEL.DISTILL.HINT.NORM = "l2"  # "l2" or "l1"

    # Class-weighted soft cross-entropy (Chen et al. 2017, Sec. 3.1)
    _C.MODEL.DISTILL.SOFT_CE = CN()
    _C.MODEL.DISTILL.SOFT_CE.ENABLED = False
    _C.MODEL.DISTILL.SOFT_CE.TARGETS = ["rpn", "rcn"]
    _C.MODEL.DISTILL.SOFT_CE.MU = 0.5
    _C.MODEL.DISTILL.SOFT_CE.TEMPERATURE = 1.0
    _C.MODEL.DISTILL.SOFT_CE.BACKGROUND_WEIGHT = 1.5
    _C.MODEL.DISTILL.SOFT_CE.WEIGHT = 1.0

    # Teacher-bounded regression (Chen et al. 2017, Sec. 3.2)
    _C.MODEL.DISTILL.BOUNDED_REG = CN()
    _C.MODEL.DISTILL.BOUNDED_REG.ENABLED = False
    _C.MODEL.DISTILL.BOUNDED_REG.TARGETS = ["rpn", "rcn"]
    _C.MODEL.DISTILL.BOUNDED_REG.NU = 0.5
    _C.MODEL.DISTILL.BOUNDED_REG.MARGIN = 0.0

    # Focal and global distillation (Yang et al. CVPR 2022); Faster R-CNN release values
    _C.MODEL.DISTILL.FGD = CN()
    _C.MODEL.DISTILL.FGD.ENABLED = False
    _C.MODEL.DISTILL.FGD.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    _C.MODEL.DISTILL.FGD.TEMPERATURE = 0.5
    _C.MODEL.DISTILL.FGD.ALPHA = 5e-5
    _C.MODEL.DISTILL.FGD.BETA = 2.5e-5
    _C.MODEL.DISTILL.FGD.GAMMA = 5e-5
    _C.MODEL.DISTILL.FGD.LAMBDA = 5e-7

    # Multi-scale self-distillation (Jia et al. 2024); needs the PAFPN backbone
    _C.MODEL.DISTILL.MSSD = CN()
    _C.MODEL.DISTILL.MSSD.ENABLED = False
    _C.MODEL.DISTILL.MSSD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # per level, large maps (small objects) first
    _C.MODEL.DISTILL.MSSD.WEIGHTS = [1.0, 1.0, 1.0, 1.0]
    _C.MODEL.DISTILL.MSSD.MASK_WEIGHTS = [1.0, 1.0, 1.0, 1.0]

    # Global-norm gradient clipping over all trainable parameters (FGD trains with 35).
    # detectron2's SOLVER.CLIP_GRADIENTS clips per parameter; this clips the whole model. 0 = off.
    _C.SOLVER.GLOBAL_GRAD_CLIP_NORM = 0.0

    # PAFPN (FPN + bottom-up path aggregation), used by MSSD
    _C.MODEL.PAFPN = CN()
    _C.MODEL.PAFPN.NORM = ""
    return cfg


def load_config(config_file: str, opts=()) -> CN:
    """A detectron2 config with detkd's keys, merged from ``config_file`` and ``KEY VALUE`` ``opts``.

    Falls back to ``MODEL.DEVICE = "cpu"`` when CUDA is not available.
    """
    import torch
    from detectron2.config import get_cfg

    cfg = add_detkd_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg
