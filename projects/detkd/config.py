"""yaml keys of detkd: ``add_detkd_config(cfg)`` adds every ``MODEL.DISTILL.*`` key.

Defaults follow the papers (see ``shared/PAPERS.md``); every method is off by default so a
config that only names ``META_ARCHITECTURE: DistillRCNN`` trains a plain student.

``MODEL.DISTILL`` reads like a list of distilled pairs: each method block names what it
distils (``STUDENT_FEATURES`` / ``TEACHER_FEATURES`` or ``TARGETS``), its loss weights and
its own hyper-parameters. The method blocks come from the registered methods
(:mod:`detkd.distillers`): each method's class declares its own block.
"""

import os

from detectron2.config import CfgNode as CN


def _registered_methods():
    from .distillers import registered_distillers  # importing the package registers detkd's methods

    return registered_distillers()


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
    # Checkpoint keys the teacher does not use are an error, except under these prefixes
    # (e.g. ["roi_heads.mask_head."] for a Mask R-CNN checkpoint in a box-only teacher).
    _C.MODEL.DISTILL.TEACHER.IGNORED_KEY_PREFIXES = []

    # Teacher sanity check, before the first step: its recall of the GT boxes of the first training
    # images (IoU 0.5, right class); under this a loud warning (an untrained or mismatched teacher).
    _C.MODEL.DISTILL.TEACHER.SANITY_MIN_RECALL = 0.3

    # Balance between the distillation terms and the detection loss (detkd.balance).
    _C.MODEL.DISTILL.BALANCE = CN()
    # every LOG_PERIOD iterations log.txt gets each term's ratio to the detection loss; a warning
    # names a term whose median ratio stayed under LOW or over HIGH
    _C.MODEL.DISTILL.BALANCE.LOG_PERIOD = 20
    _C.MODEL.DISTILL.BALANCE.LOW = 0.01
    _C.MODEL.DISTILL.BALANCE.HIGH = 10.0
    # automatic balance: over the first AUTO_ITERS iterations measure each method's terms against
    # the detection loss, then fix one scale per method so that its ratio is its BALANCE_FACTOR
    # times AUTO_TARGET (each method's block has a BALANCE_FACTOR: 1.0; CWD, PKD, FGD, MGD, the
    # hint 3.0).
    # 1.0: the size of the detection loss (FGD's authors' advice); at their published weights on
    # the demo (raw maps), FGD, MGD, MSSD and the head cross-forward start at 0.6-3x, PKD at ~15x
    # and CWD at ~60x, and at 800-pixel COCO inputs with another teacher Chen's hint ~500x, MGD
    # ~800x. On by default (no term can wreck the first iterations at any feature scale); AUTO
    # False trains at the papers' exact weights
    _C.MODEL.DISTILL.BALANCE.AUTO = True
    _C.MODEL.DISTILL.BALANCE.AUTO_ITERS = 50
    _C.MODEL.DISTILL.BALANCE.AUTO_TARGET = 1.0
    # while measuring, train with the scale measured so far ("running") or at the raw weights
    # ("raw"); AUTO_WINDOW_MAX_RATIO m > 0: the running window only scales a method down to m
    # times the detection loss, never up (0: to its target, up or down)
    _C.MODEL.DISTILL.BALANCE.AUTO_WINDOW = "running"
    _C.MODEL.DISTILL.BALANCE.AUTO_WINDOW_MAX_RATIO = 0.0
    # divide the feature terms that sum over a level's positions (FGD, MGD) by the level's H*W
    _C.MODEL.DISTILL.BALANCE.NORMALIZE_BY_AREA = False

    # AMP's autocast type (detectron2's AMPTrainer takes float16 or bfloat16; its config has no key)
    _C.SOLVER.AMP.PRECISION = "float16"

    # when the distillation terms count: a linear warm-up of their weight over WARMUP_ITERS
    # iterations (0: none), none of them from STOP_ITER on (0: never); every method obeys it
    _C.MODEL.DISTILL.SCHEDULE = CN()
    _C.MODEL.DISTILL.SCHEDULE.WARMUP_ITERS = 0
    _C.MODEL.DISTILL.SCHEDULE.STOP_ITER = 0

    # a runaway term stops the run before anything is updated, naming the term and the keys that
    # fix it: a non-finite loss at any iteration, or a term over MAX_RATIO times the detection
    # loss in the first ITERS iterations
    _C.MODEL.DISTILL.GUARD = CN()
    _C.MODEL.DISTILL.GUARD.ITERS = 100
    _C.MODEL.DISTILL.GUARD.MAX_RATIO = 1000.0

    # Weight files are read without running code (tensors, numpy arrays, plain containers). Set
    # True only for files you trust: full unpickling runs whatever the file's author put in it.
    _C.MODEL.DISTILL.ALLOW_UNSAFE_PICKLE = False

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

    # One block per registered distillation method (detkd.distillers), off by default: the
    # method's class declares the block's keys. A method the automatic balance scales also has
    # BALANCE_FACTOR: the balance scales it to BALANCE_FACTOR * BALANCE.AUTO_TARGET times the
    # detection loss (the class's balance_factor is the default, its evidence in docs/METHODS.md)
    for method in _registered_methods():
        _C.MODEL.DISTILL[method.config_block] = CN({"ENABLED": False})
        if method.auto_balanced:
            _C.MODEL.DISTILL[method.config_block].BALANCE_FACTOR = float(method.balance_factor)
        method.add_config(_C.MODEL.DISTILL[method.config_block])

    # Global-norm gradient clipping over all trainable parameters (FGD trains with 35).
    # detectron2's SOLVER.CLIP_GRADIENTS clips per parameter; this clips the whole model. 0 = off.
    _C.SOLVER.GLOBAL_GRAD_CLIP_NORM = 0.0

    # PAFPN backbone (FPN + a bottom-up path aggregation), for self-distillation from the
    # top-down maps
    _C.MODEL.PAFPN = CN()
    _C.MODEL.PAFPN.NORM = ""
    return cfg


# the teacher's paths, resolved like _BASE_ (see resolve_path)
PATH_KEYS = ("MODEL.DISTILL.TEACHER.CONFIG_FILE", "MODEL.DISTILL.TEACHER.WEIGHTS")
MODEL_ZOO_PREFIX = "model_zoo://"


def resolve_path(path: str, config_file: str = "") -> str:
    """Where a path named in a config points.

    * ``model_zoo://NAME`` is ``NAME`` among detectron2's packaged configs
      (``model_zoo://COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml``);
    * an absolute path or a URL is returned as it is;
    * a relative path is looked up from the working directory and, when ``config_file`` is given,
      from that file's folder (as ``_BASE_`` is). If both exist and differ it is an error; if
      neither exists, ``path`` is returned unchanged (the caller reports it missing).
    """
    if not path or "://" in path and not path.startswith(MODEL_ZOO_PREFIX):
        return path
    if path.startswith(MODEL_ZOO_PREFIX):
        from detectron2 import model_zoo

        try:
            return model_zoo.get_config_file(path[len(MODEL_ZOO_PREFIX) :])
        except RuntimeError as e:
            raise FileNotFoundError(
                f"{path}: not a config of detectron2's model zoo ({e})"
            ) from None
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    candidates = [os.path.abspath(path)]
    if config_file:
        candidates.append(os.path.abspath(os.path.join(os.path.dirname(config_file), path)))
    found = list(dict.fromkeys(c for c in candidates if os.path.exists(c)))
    if len(found) > 1 and not os.path.samefile(found[0], found[1]):
        raise ValueError(
            f"{path!r} (named in {config_file}) is ambiguous: both {found[0]} (from the working "
            f"directory) and {found[1]} (next to the config) exist; give an absolute path"
        )
    return found[0] if found else path


def _file_setting(config_file: str, key: str) -> str:
    """The file in ``config_file``'s ``_BASE_`` chain whose yaml sets ``key`` last ("" if none)."""
    import yaml

    with open(config_file) as f:
        node = yaml.safe_load(f) or {}
    value = node
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is not None:
        return config_file
    base = node.get("_BASE_")
    if not base:
        return ""
    base = os.path.expanduser(base)
    if not base.startswith(("/", "https://", "http://")):
        base = os.path.join(os.path.dirname(config_file), base)
    return _file_setting(base, key)


def load_config(config_file: str, opts=()) -> CN:
    """A detectron2 config with detkd's keys, merged from ``config_file`` and ``KEY VALUE``
    ``opts``.

    The teacher's config file and weights (:data:`PATH_KEYS`) are resolved with
    :func:`resolve_path`, relative to the config file that sets them (or to the working directory
    when ``opts`` set them), so the result works from any directory. Falls back to
    ``MODEL.DEVICE = "cpu"`` when CUDA is not available.
    """
    import torch
    from detectron2.config import get_cfg

    cfg = add_detkd_config(get_cfg())
    cfg.merge_from_file(config_file)
    opts = list(opts)
    cfg.merge_from_list(opts)
    for key in PATH_KEYS:
        node, name = cfg, key.split(".")
        for part in name[:-1]:
            node = node[part]
        if name[-1] == "WEIGHTS" and str(node[name[-1]]).startswith(MODEL_ZOO_PREFIX):
            raise ValueError(
                f"{key}={node[name[-1]]!r}: model_zoo:// names a config; for the zoo's weights "
                "use its detectron2:// URL (detectron2.model_zoo.get_checkpoint_url)"
            )
        in_opts = key in opts[0::2]
        node[name[-1]] = resolve_path(
            node[name[-1]], "" if in_opts else _file_setting(config_file, key)
        )
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def method_blocks(cfg: CN):
    """The config blocks of the registered distillation methods that ``cfg`` has."""
    return [m.config_block for m in _registered_methods() if m.config_block in cfg.MODEL.DISTILL]


def enabled_methods(cfg: CN):
    """The names (``Distiller.name``) of the registered methods ``cfg`` enables, in registration
    order."""
    return [
        m.name
        for m in _registered_methods()
        if m.config_block in cfg.MODEL.DISTILL and cfg.MODEL.DISTILL[m.config_block].ENABLED
    ]


# what determines the weights a run trains: a resume warns when any of it changed
TRAINING_SECTIONS = ("MODEL", "SOLVER", "INPUT", "DATASETS.TRAIN")


def _flat(node, prefix: str):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: node}


def changed_keys(old: CN, new: CN, sections=TRAINING_SECTIONS):
    """``(key, old value, new value)`` for every key under ``sections`` (dotted) whose value
    differs between ``old`` and ``new`` (a key one of them lacks has the value ``None`` there)."""
    changed = []
    for section in sections:
        a, b = old, new
        for part in section.split("."):
            a = a.get(part) if isinstance(a, dict) else None
            b = b.get(part) if isinstance(b, dict) else None
        fa, fb = _flat(a, section), _flat(b, section)
        for key in sorted(set(fa) | set(fb)):
            va, vb = fa.get(key), fb.get(key)
            if isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)):
                va, vb = list(va), list(vb)
            if va != vb:
                changed.append((key, fa.get(key), fb.get(key)))
    return changed


def student_only_config(cfg: CN) -> CN:
    """``cfg`` for the student alone (evaluation, export, drawing): no teacher, no distillation
    method.

    The student and its input scale are unchanged, so its predictions are those of the full model.
    """
    out = cfg.clone()
    out.defrost()
    t = out.MODEL.DISTILL.TEACHER
    t.CONFIG_FILE, t.WEIGHTS, t.OPTS = "", "", []
    for block in method_blocks(out):
        out.MODEL.DISTILL[block].ENABLED = False
    out.MODEL.DISTILL.INHERIT.ENABLED = False
    return out
