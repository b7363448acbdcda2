"""Which experiments the demo runs: the low-resolution comparison and the survey's baseline, listed
here, and the survey of the distillation methods, discovered from ``configs/demo`` and the registry
(:func:`survey_experiments`, which the benchmarks use too)."""

import glob
import os
from typing import Dict, NamedTuple, Tuple

from ..config import load_config
from ..distillers import registered_distillers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIG_DIR = os.path.join(ROOT, "configs", "demo")
SURVEY_PREFIX = "distill_"  # configs/demo/distill_<name>.yaml: the survey experiment <name>
SURVEY_BASELINE = "baseline"


class Experiment(NamedTuple):
    config: str  # file name in CONFIG_DIR
    description: str
    baseline: str = ""  # the experiment it is compared with ("": none, it is a baseline)
    gain: bool = False  # in the low-resolution comparison (seeds: --seeds), else the survey
    opts: Tuple = ()  # KEY VALUE overrides of the config (a diagnosis variant's change)


# the comparison the demo is built around (run with --seeds), then the survey's baseline: the
# demo's own experiments, not methods of the registry
GAIN_COMPARISON = {
    "lowres_baseline": Experiment(
        "lowres_student.yaml", "teacher architecture at half resolution, no teacher", gain=True
    ),
    "lowres_inherit": Experiment(
        "lowres_inherit.yaml",
        "half resolution, inherits the teacher, no distillation loss",
        "lowres_baseline",
        True,
    ),
    "lowres_chen_inherit": Experiment(
        "lowres_distill_chen.yaml",
        "half resolution, inherits the teacher, Chen hints + RCN " "soft CE + bounded reg",
        "lowres_baseline",
        True,
    ),
}
# the survey's baselines, one per student backbone: a survey student is compared with the baseline
# of its own backbone (MSSD needs PAFPN; against the FPN baseline its gain would mix the loss with
# the extra bottom-up path)
BASELINES = {
    SURVEY_BASELINE: Experiment("student.yaml", "ResNet-18/FPN-64 student, no teacher"),
    "baseline_pafpn": Experiment(
        "student_pafpn.yaml", "ResNet-18/PAFPN-64 student, no teacher (the baseline of MSSD, all)"
    ),
}


def baseline_of_backbone() -> Dict[str, str]:
    """``MODEL.BACKBONE.NAME`` -> the survey baseline (a name in :data:`BASELINES`) of that
    backbone."""
    return {
        load_config(os.path.join(CONFIG_DIR, e.config)).MODEL.BACKBONE.NAME: name
        for name, e in BASELINES.items()
    }


def config_description(path: str) -> str:
    """The first line of the comment a config file starts with (a trailing period dropped)."""
    with open(path) as f:
        first = f.readline()
    if not first.startswith("#") or not first.lstrip("#").strip():
        raise ValueError(f"{path} does not start with a comment line describing it")
    return first.lstrip("#").strip().rstrip(".")


def survey_experiments(config_dir: str = CONFIG_DIR) -> Dict[str, Experiment]:
    """The survey of the distillation methods: every ``distill_<name>.yaml`` in ``config_dir``
    that enables a registered method (``MODEL.DISTILL[cls.config_block].ENABLED``) on a student
    at full resolution, as experiment ``<name>``, described by the config's first comment line and
    compared with the baseline student. A half-resolution config (``STUDENT_INPUT_SCALE`` != 1)
    belongs with the low-resolution comparison, not the survey. Single methods come first, then
    combinations: ordered by the number of methods enabled, then by name. Each is compared with
    the baseline of its backbone (:func:`baseline_of_backbone`); a backbone no baseline has is an
    error that names the config."""
    baselines = baseline_of_backbone()
    found = []
    for path in sorted(glob.glob(os.path.join(config_dir, SURVEY_PREFIX + "*.yaml"))):
        cfg = load_config(path)
        enabled = [c for c in registered_distillers() if cfg.MODEL.DISTILL[c.config_block].ENABLED]
        if not enabled or cfg.MODEL.DISTILL.STUDENT_INPUT_SCALE != 1.0:
            continue
        file = os.path.basename(path)
        name = file[len(SURVEY_PREFIX) : -len(".yaml")]
        backbone = cfg.MODEL.BACKBONE.NAME
        if backbone not in baselines:
            raise ValueError(
                f"{path}: its backbone {backbone} has no baseline student in the demo (known: "
                f"{sorted(baselines)}); add one to BASELINES in detkd/demo/experiments.py"
            )
        found.append(
            (len(enabled), name, Experiment(file, config_description(path), baselines[backbone]))
        )
    return {name: experiment for _, name, experiment in sorted(found, key=lambda f: f[:2])}


def _one_x(block: str) -> tuple:
    """A method's block at 1x the detection loss (``BALANCE_FACTOR 1.0``), as KEY VALUE opts."""
    return (f"MODEL.DISTILL.{block}.BALANCE_FACTOR", 1.0)


def _paper_form(block: str) -> tuple:
    """A method's block in its paper's form, raw maps at 1x (``NORMALIZE False``,
    ``BALANCE_FACTOR 1.0``), as KEY VALUE opts."""
    return (f"MODEL.DISTILL.{block}.NORMALIZE", False) + _one_x(block)


# FGD's, MGD's and Chen's hint's former defaults, the paper's form at 1x the detection loss, and
# their 1x on standardized maps: the variants measured before each shipped standardized at 3x pin
# what they measured, so they train, and are cached, as measured
_FGD_PAPER, _FGD_1X = _paper_form("FGD"), _one_x("FGD")
_MGD_PAPER, _MGD_1X = _paper_form("MGD"), _one_x("MGD")
_CHEN_PAPER, _HINT_1X = _paper_form("HINT"), _one_x("HINT")
# MSSD's self-distillation at the weight the demo measures it with (0.1 per level; MSSD's default
# is 0, the term off): the variants with both terms, or the self-distillation alone, pin it, so
# they train, and are cached, as measured
_MSSD_SD = ("MODEL.DISTILL.MSSD.WEIGHTS", [0.1, 0.1, 0.1, 0.1])
# the paper's form (NORMALIZE False) with both terms: the MSSD variants on raw maps pin it
_MSSD_PAPER = ("MODEL.DISTILL.MSSD.NORMALIZE", False) + _MSSD_SD
# both terms on standardized maps: the variants on standardized maps pin them; either term off,
# for its partner alone
_MSSD_NORM = ("MODEL.DISTILL.MSSD.NORMALIZE", True) + _MSSD_SD
_MSSD_SD_OFF = ("MODEL.DISTILL.MSSD.WEIGHTS", [0.0, 0.0, 0.0, 0.0])
_MSSD_MASK_OFF = ("MODEL.DISTILL.MSSD.MASK_WEIGHTS", [0.0, 0.0, 0.0, 0.0])
_MSSD_ADAPT = ("MODEL.DISTILL.MSSD.ADAPT", True)
# MSSD as it ships, pinned: standardized, its self-distillation off
_MSSD_SHIPPED = ("MODEL.DISTILL.MSSD.NORMALIZE", True) + _MSSD_SD_OFF

# Chen's hint alone (its output terms off) balanced to 3x the detection loss
_CHEN_HINT_ALONE_T3 = (
    "MODEL.DISTILL.SOFT_CE.ENABLED",
    False,
    "MODEL.DISTILL.BOUNDED_REG.ENABLED",
    False,
    "MODEL.DISTILL.BALANCE.AUTO_TARGET",
    3.0,
)

# The diagnosis of the methods' misses (DEMO.md, *Diagnosis*): each variant is a survey method's
# config with one change, in one key or a few (or one change on top of another variant's:
# fgd_norm_no_bg is fgd_norm without its background term; a CWD or PKD variant measured at the
# method's former 1x pins its BALANCE_FACTOR at 1.0, an FGD, MGD or Chen variant the paper's form
# at 1x or its 1x, an MSSD variant its form (raw or standardized maps) and its self-distillation's
# weight, so it trains, and is cached, as measured),
# answering one hypothesis, paired with the method's baseline under the same seeds. name ->
# (survey method or baseline, what it changes and why, KEY VALUE overrides[, the experiment it is
# compared with when not the method's baseline]). Run by name, beside its method and baseline:
# python -m detkd.demo --methods baseline,fgd,fgd_t0.1 ...
DIAGNOSIS = {
    "fgd_t0.1": (
        "fgd",
        "FGD balanced to 0.1x the detection loss (is 1x too strong?)",
        _FGD_PAPER + ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 0.1),
    ),
    "fgd_t0.3": (
        "fgd",
        "FGD balanced to 0.3x the detection loss",
        _FGD_PAPER + ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 0.3),
    ),
    "fgd_fg_bg": (
        "fgd",
        "FGD's fg and bg feature terms only (attention and global off)",
        _FGD_PAPER + ("MODEL.DISTILL.FGD.GAMMA", 0.0, "MODEL.DISTILL.FGD.LAMBDA", 0.0),
    ),
    "fgd_att_global": (
        "fgd",
        "FGD's attention and global terms only (fg and bg off)",
        _FGD_PAPER + ("MODEL.DISTILL.FGD.ALPHA", 0.0, "MODEL.DISTILL.FGD.BETA", 0.0),
    ),
    "fgd_norm": (
        "fgd",
        "FGD on the maps standardized per channel (is the teacher's raw activation scale, a few "
        "heavy-tailed channels on background texture, what FGD spends itself on?)",
        _FGD_1X + ("MODEL.DISTILL.FGD.NORMALIZE", True),
    ),
    "fgd_norm_no_bg": (
        "fgd",
        "FGD on standardized maps without its background feature term (does imitating the "
        "photographs' background cost, once no channel dominates?)",
        _FGD_1X + ("MODEL.DISTILL.FGD.NORMALIZE", True, "MODEL.DISTILL.FGD.BETA", 0.0),
    ),
    "fgd_norm_p3_p6": (
        "fgd",
        "FGD on standardized maps without p2, the level with the most positions (which levels "
        "should be distilled?)",
        _FGD_1X
        + (
            "MODEL.DISTILL.FGD.NORMALIZE",
            True,
            "MODEL.DISTILL.FGD.IN_FEATURES",
            ["p3", "p4", "p5", "p6"],
        ),
    ),
    "fgd_no_bg": (
        "fgd",
        "FGD without its background feature term (the photographs' texture not imitated)",
        _FGD_PAPER + ("MODEL.DISTILL.FGD.BETA", 0.0),
    ),
    "fgd_no_fg": (
        "fgd",
        "FGD without its foreground feature term",
        _FGD_PAPER + ("MODEL.DISTILL.FGD.ALPHA", 0.0),
    ),
    "fgd_p3_p6": (
        "fgd",
        "FGD without p2, the level with the most positions",
        _FGD_PAPER + ("MODEL.DISTILL.FGD.IN_FEATURES", ["p3", "p4", "p5", "p6"]),
    ),
    "fgd_warmup": (
        "fgd",
        "FGD ramped up over its first 400 iterations",
        _FGD_PAPER + ("MODEL.DISTILL.SCHEDULE.WARMUP_ITERS", 400),
    ),
    "fgd_stop": (
        "fgd",
        "FGD stopped at iteration 1200 (the rest of the schedule without it)",
        _FGD_PAPER + ("MODEL.DISTILL.SCHEDULE.STOP_ITER", 1200),
    ),
    "baseline_scratch": (
        "baseline",
        "the baseline student from random weights, not its pretrained trunk",
        ("MODEL.WEIGHTS", ""),
    ),
    "baseline_2400": (
        "baseline",
        "the baseline on 2400 iterations, its LR dropping at 2/3 and 8/9 of them as in "
        "detectron2's 1x schedule (measured beside the 1600-iteration runs: does it converge?)",
        ("SOLVER.MAX_ITER", 2400, "SOLVER.STEPS", (1600, 2133), "TEST.EVAL_PERIOD", 600),
    ),
    "fgd_scratch": (
        "fgd",
        "FGD into a student from random weights (does FGD pay where the student starts from "
        "nothing, as on the held-out handwriting?)",
        _FGD_PAPER + ("MODEL.WEIGHTS", ""),
        "baseline_scratch",
    ),
    "mssd_adapt": (
        "mssd",
        "MSSD's PAN outputs reach their FPN maps through a 1x1 adaptation layer (identity at "
        "the start) instead of being pulled onto them",
        _MSSD_PAPER + _MSSD_ADAPT,
    ),
    "mssd_adapt_sd_only": (
        "mssd",
        "MSSD's self-distillation alone through the 1x1 adaptation layer (mask term off): does "
        "the adapted form cost once the mask term, which alone costs as much as both, is gone?",
        _MSSD_PAPER + _MSSD_ADAPT + _MSSD_MASK_OFF,
    ),
    "mssd_norm": (
        "mssd",
        "MSSD with both terms on the maps standardized per channel (MSSD.NORMALIZE): does MSSD "
        "stop costing once neither term can move the scale of the PAN outputs? The runs that "
        "made it MSSD's default (cached apart)",
        _MSSD_NORM,
    ),
    "mssd_norm_mask_only": (
        "mssd",
        "MSSD on standardized maps with its Gaussian mask term alone (self-distillation off): "
        "which of its two terms costs on the glyphs? The runs that made it MSSD's default (cached "
        "apart)",
        _MSSD_SHIPPED,
    ),
    "mssd_norm_sd_only": (
        "mssd",
        "MSSD on standardized maps with its self-distillation alone (Gaussian mask term off): "
        "which of its two terms costs on the glyphs?",
        _MSSD_NORM + _MSSD_MASK_OFF,
    ),
    "mssd_norm_adapt": (
        "mssd",
        "MSSD with both terms on standardized maps, its self-distillation through the 1x1 "
        "adaptation layer: the PAN outputs of a PAFPN student are uncorrelated, channel by "
        "channel, with the FPN maps they start from; does a learned map between the two bases "
        "stop the self-distillation costing?",
        _MSSD_NORM + _MSSD_ADAPT,
    ),
    "mssd_norm_adapt_sd_only": (
        "mssd",
        "mssd_norm_adapt with its self-distillation alone (Gaussian mask term off): the "
        "adaptation layer against the self-distillation's whole cost",
        _MSSD_NORM + _MSSD_ADAPT + _MSSD_MASK_OFF,
    ),
    "mssd_stop600": (
        "mssd",
        "MSSD as it ships (its Gaussian mask term alone) stopped at iteration 600, a quarter of "
        "the glyphs students' schedule: on the glyphs it leads its PAFPN student at 600 "
        "iterations and trails it from 1200 on; does the student keep the lead, or end level, "
        "when it trains on without the term?",
        _MSSD_SHIPPED + ("MODEL.DISTILL.SCHEDULE.STOP_ITER", 600),
    ),
    "mssd_paper": (
        "mssd",
        "MSSD at its former default, the paper's form (NORMALIZE False): what the mssd rows of "
        "DEMO.md's tables before the switch measured",
        _MSSD_PAPER,
    ),
    "all_paper": (
        "all",
        "`all` at its former defaults, FGD's and MSSD's paper forms (FGD at 1x): what the all "
        "rows of DEMO.md's tables before the switches measured (Chen's hint as the paper's form "
        "at 1x too)",
        _FGD_PAPER + _MSSD_PAPER + _CHEN_PAPER,
    ),
    "mssd_mask_only": (
        "mssd",
        "MSSD's Gaussian mask term alone (self-distillation off)",
        _MSSD_PAPER + _MSSD_SD_OFF,
    ),
    "mssd_sd_only": (
        "mssd",
        "MSSD's self-distillation alone (Gaussian mask term off)",
        _MSSD_PAPER + _MSSD_MASK_OFF,
    ),
    "mssd_t0.1": (
        "mssd",
        "MSSD balanced to 0.1x the detection loss (does its share, not its form, cost?)",
        _MSSD_PAPER + ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 0.1),
    ),
    "mssd_zero": (
        "mssd",
        "MSSD built and run with both terms' weights at 0 and the balance off: its machinery "
        "alone (does enabling MSSD change the student apart from its loss?)",
        _MSSD_PAPER + _MSSD_SD_OFF + _MSSD_MASK_OFF + ("MODEL.DISTILL.BALANCE.AUTO", False),
    ),
    "baseline_pafpn_noclip": (
        "baseline_pafpn",
        "the PAFPN student without the global-norm gradient clip (the baseline of mssd_noclip)",
        ("SOLVER.GLOBAL_GRAD_CLIP_NORM", 0.0),
    ),
    "mssd_noclip": (
        "mssd",
        "MSSD without the global-norm gradient clip (35): does MSSD's gradient take the clip, "
        "scaling the detection loss's gradient down whatever MSSD's weight?",
        _MSSD_PAPER + ("SOLVER.GLOBAL_GRAD_CLIP_NORM", 0.0),
        "baseline_pafpn_noclip",
    ),
    "mssd_stop75": (
        "mssd",
        "MSSD stopped at iteration 75, half the shapes students' schedule (is its cost undone "
        "when the student trains on without it?)",
        _MSSD_PAPER + ("MODEL.DISTILL.SCHEDULE.STOP_ITER", 75),
    ),
    "mssd_w0": (
        "mssd",
        "MSSD scaled to the detection loss from the first step (AUTO_WINDOW_MAX_RATIO 0), not "
        "at its raw weights (2-3x) while the balance measures: is its cost done in those steps?",
        _MSSD_PAPER + ("MODEL.DISTILL.BALANCE.AUTO_WINDOW_MAX_RATIO", 0.0),
    ),
    "mssd_t0.1_w0": (
        "mssd",
        "MSSD at 0.1x the detection loss from the first step (AUTO_TARGET 0.1, "
        "AUTO_WINDOW_MAX_RATIO 0)",
        _MSSD_PAPER
        + (
            "MODEL.DISTILL.BALANCE.AUTO_TARGET",
            0.1,
            "MODEL.DISTILL.BALANCE.AUTO_WINDOW_MAX_RATIO",
            0.0,
        ),
    ),
    "mgd_no_mask": (
        "mgd",
        "MGD without its random mask (the generator sees every position)",
        _MGD_PAPER + ("MODEL.DISTILL.MGD.MASK_RATIO", 0.0),
    ),
    "mgd_norm": (
        "mgd",
        "MGD with the generated and the teacher's maps standardized per channel",
        _MGD_1X + ("MODEL.DISTILL.MGD.NORMALIZE", True),
    ),
    "cross_head_fgd_norm": (
        "cross_head",
        "the head cross-forward with FGD on standardized maps: the two that pay on the glyphs, "
        "together (does the imitation add to the head's?)",
        _FGD_1X + ("MODEL.DISTILL.FGD.ENABLED", True, "MODEL.DISTILL.FGD.NORMALIZE", True),
    ),
    "baseline_fpn128": (
        "baseline",
        "the baseline student with the teacher's FPN width, 128 channels (the baseline of the "
        "*_fpn128 variants)",
        ("MODEL.FPN.OUT_CHANNELS", 128),
    ),
    "cwd_fpn128": (
        "cwd",
        "CWD into a student with the teacher's FPN width, 128 channels, so no align layer between "
        "them (does imitating through a 64 -> 128 align hold feature imitation back?), at 1x the "
        "detection loss as measured",
        ("MODEL.FPN.OUT_CHANNELS", 128, "MODEL.DISTILL.CWD.BALANCE_FACTOR", 1.0),
        "baseline_fpn128",
    ),
    "cross_head_pafpn": (
        "cross_head",
        "the head cross-forward into the PAFPN student (does it still pay on a student whose "
        "neck is already near the teacher?)",
        ("MODEL.BACKBONE.NAME", "build_resnet_pafpn_backbone"),
        "baseline_pafpn",
    ),
    "all_no_mssd": (
        "all",
        "`all` without MSSD: Chen's losses and FGD on the PAFPN student (is MSSD what `all` "
        "loses against its PAFPN baseline?)",
        # MSSD's weights as `all` carried them when measured: off, they train nothing, and keep
        # the runs cached
        _FGD_PAPER + _MSSD_SD + _CHEN_PAPER + ("MODEL.DISTILL.MSSD.ENABLED", False),
    ),
    "cwd_t0.1": (
        "cwd",
        "CWD balanced to 0.1x the detection loss",
        ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 0.1, "MODEL.DISTILL.CWD.BALANCE_FACTOR", 1.0),
    ),
    "mgd_t0.1": (
        "mgd",
        "MGD balanced to 0.1x the detection loss",
        _MGD_PAPER + ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 0.1),
    ),
    "pkd_t0.1": (
        "pkd",
        "PKD balanced to 0.1x the detection loss",
        ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 0.1, "MODEL.DISTILL.PKD.BALANCE_FACTOR", 1.0),
    ),
    "cwd_t3": (
        "cwd",
        "CWD balanced to 3x the detection loss (does it move the student's maps little because "
        "its balanced weight is too small to copy the teacher's?), as AUTO_TARGET 3 at factor 1: "
        "the runs that made 3x CWD's default, which trains the same target (cached apart)",
        ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 3.0, "MODEL.DISTILL.CWD.BALANCE_FACTOR", 1.0),
    ),
    "cwd_f1": (
        "cwd",
        "CWD at its former default, 1x the detection loss (BALANCE_FACTOR 1.0): what the cwd rows "
        "of DEMO.md's tables before 3x measured",
        ("MODEL.DISTILL.CWD.BALANCE_FACTOR", 1.0),
    ),
    "mgd_t3": (
        "mgd",
        "MGD balanced to 3x the detection loss (does it move the student's maps little because "
        "its balanced weight is too small?)",
        _MGD_PAPER + ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 3.0),
    ),
    "pkd_t3": (
        "pkd",
        "PKD balanced to 3x the detection loss (at 0.1x it lost 1.10 AP to 1x on the hard set: "
        "does more weight pay?), as AUTO_TARGET 3 at factor 1: the runs that made 3x PKD's "
        "default, which trains the same target (cached apart)",
        ("MODEL.DISTILL.BALANCE.AUTO_TARGET", 3.0, "MODEL.DISTILL.PKD.BALANCE_FACTOR", 1.0),
    ),
    "pkd_f1": (
        "pkd",
        "PKD at its former default, 1x the detection loss (BALANCE_FACTOR 1.0): what the pkd rows "
        "of DEMO.md's tables before 3x measured",
        ("MODEL.DISTILL.PKD.BALANCE_FACTOR", 1.0),
    ),
    "fgd_norm_t3": (
        "fgd",
        "FGD on standardized maps balanced to 3x the detection loss (the weight that made CWD "
        "pay on the glyphs: does it pay for FGD?)",
        _FGD_1X + ("MODEL.DISTILL.FGD.NORMALIZE", True, "MODEL.DISTILL.BALANCE.AUTO_TARGET", 3.0),
    ),
    "mgd_norm_t3": (
        "mgd",
        "MGD on standardized maps balanced to 3x the detection loss (the weight that made CWD "
        "pay on the glyphs: does it pay for MGD?)",
        _MGD_1X + ("MODEL.DISTILL.MGD.NORMALIZE", True, "MODEL.DISTILL.BALANCE.AUTO_TARGET", 3.0),
    ),
    "fgd_paper": (
        "fgd",
        "FGD at its former default, the paper's form at 1x the detection loss (NORMALIZE False, "
        "BALANCE_FACTOR 1.0): what the fgd rows of DEMO.md's tables before the switch measured",
        _FGD_PAPER,
    ),
    "mgd_paper": (
        "mgd",
        "MGD at its former default, the paper's form at 1x the detection loss (NORMALIZE False, "
        "BALANCE_FACTOR 1.0): what the mgd rows of DEMO.md's tables before the switch measured",
        _MGD_PAPER,
    ),
    "chen_paper": (
        "chen",
        "Chen's losses at their former default, the hint as the paper's form at 1x the detection "
        "loss (HINT.NORMALIZE False, HINT.BALANCE_FACTOR 1.0): what the chen rows of DEMO.md's "
        "tables before the switch measured",
        _CHEN_PAPER,
    ),
    "cross_head_chen_paper": (
        "cross_head_chen",
        "the head cross-forward with Chen's losses, the hint as the paper's form at 1x: what the "
        "cross_head_chen rows of DEMO.md's tables before the switch measured",
        _CHEN_PAPER,
    ),
    "chen_no_hint": (
        "chen",
        "Chen's output terms alone, soft CE and bounded regression, without the hint (which of "
        "Chen's terms costs AP on the converged glyphs?)",
        ("MODEL.DISTILL.HINT.ENABLED", False),
    ),
    "chen_hint_t3": (
        "chen",
        "Chen's hint alone balanced to 3x the detection loss, soft CE and bounded regression off "
        "(does the hint pay at the weight that made CWD and PKD pay on the glyphs?)",
        _CHEN_HINT_ALONE_T3 + _CHEN_PAPER,
    ),
    "chen_hint_norm_t3": (
        "chen",
        "Chen's hint alone on standardized maps (HINT.NORMALIZE) balanced to 3x the detection "
        "loss: does the hint on raw maps miss, as FGD's and MGD's paper forms do, because a few "
        "heavy-tailed teacher channels take its loss?",
        _CHEN_HINT_ALONE_T3 + ("MODEL.DISTILL.HINT.NORMALIZE", True) + _HINT_1X,
    ),
    "chen_hint_norm": (
        "chen",
        "Chen's losses whole with the hint on standardized maps (HINT.NORMALIZE): on raw maps a "
        "few images whose teacher res4 is 10^3-10^4x its median carry the hint and set its "
        "balanced scale; standardized, a batch's error is bounded: do Chen's losses pay then?",
        ("MODEL.DISTILL.HINT.NORMALIZE", True) + _HINT_1X,
    ),
    "chen_hint_norm_f3": (
        "chen",
        "Chen's losses whole with the hint on standardized maps at 3x the detection loss "
        "(HINT.BALANCE_FACTOR 3.0, the weight at which CWD, PKD, FGD and MGD pay on the "
        "glyphs): standardized at 1x the hint trains and gains, under 30 % of the gap; does "
        "more weight pay? (Chen's default since, pinned: the runs measured under this name)",
        ("MODEL.DISTILL.HINT.NORMALIZE", True, "MODEL.DISTILL.HINT.BALANCE_FACTOR", 3.0),
    ),
    "cross_head_cwd": (
        "cross_head",
        "the head cross-forward with CWD at its default 3x: the two that pay on the converged "
        "glyphs, together (does CWD add to the head's, where FGD did not?)",
        ("MODEL.DISTILL.CWD.ENABLED", True),
    ),
}


def diagnosis_experiments() -> Dict[str, Experiment]:
    """The :data:`DIAGNOSIS` variants as experiments: each its method's config and baseline (or the
    variant it names), with its one change in ``opts``."""
    known = {**BASELINES, **survey_experiments()}
    found = {}
    for name, (method, description, opts, *compared_with) in DIAGNOSIS.items():
        if method not in known:
            raise ValueError(f"diagnosis variant {name}: {method} is not a demo experiment")
        baseline = compared_with[0] if compared_with else known[method].baseline
        found[name] = known[method]._replace(
            description=description, opts=tuple(opts), baseline=baseline
        )
    return found


def experiments() -> Dict[str, Experiment]:
    """Every experiment the demo knows, in the order it runs them by default: the low-resolution
    comparison, the baseline student, the survey."""
    return {**GAIN_COMPARISON, **BASELINES, **survey_experiments()}
