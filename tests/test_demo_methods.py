"""Which methods the demo and the benchmarks run comes from the registry and configs/demo alone:
every registered method of detkd is enabled in a survey config of the demo (a new method without a
demo config fails here), and the survey is discovered from the distill_*.yaml files."""

import os
import sys

import pytest
import torch
from conftest import REPO

from detkd import load_config
from detkd.demo import CONFIG_DIR, experiments, survey_experiments
from detkd.demo.experiments import config_description
from detkd.distillers import registered_distillers
from detkd.survey.trials import fingerprint


def _detkd_methods():
    """detkd's own registered methods (another test registers a user's method, which has no demo
    config: see test_external_method.py)."""
    return [cls for cls in registered_distillers() if cls.__module__.split(".")[0] == "detkd"]


def test_every_registered_method_is_enabled_in_a_survey_config():
    survey = survey_experiments()
    cfgs = [load_config(os.path.join(CONFIG_DIR, e.config)) for e in survey.values()]
    assert _detkd_methods()
    for cls in _detkd_methods():
        block = cls.config_block
        assert any(cfg.MODEL.DISTILL[block].ENABLED for cfg in cfgs), (
            f"{cls.__name__} (MODEL.DISTILL.{block}) is enabled in no survey config of the demo: "
            "add a configs/demo/distill_<name>.yaml that enables it"
        )


def test_survey_experiments_are_described_and_compared_with_the_baseline():
    known = experiments()
    survey = survey_experiments()
    assert survey and list(known)[-len(survey) :] == list(survey)  # the survey runs last
    for name, e in survey.items():
        assert e.config == f"distill_{name}.yaml" and e.description and not e.gain
        assert e.baseline in known and not known[e.baseline].gain
        assert e.description == config_description(os.path.join(CONFIG_DIR, e.config))
    # each student is compared with the baseline of its backbone: MSSD and all need PAFPN
    for name, e in survey.items():
        backbone = load_config(os.path.join(CONFIG_DIR, e.config)).MODEL.BACKBONE.NAME
        assert (
            backbone
            == load_config(os.path.join(CONFIG_DIR, known[e.baseline].config)).MODEL.BACKBONE.NAME
        )
    assert survey["mssd"].baseline == survey["all"].baseline == "baseline_pafpn"
    assert survey["fgd"].baseline == survey["cross_head"].baseline == "baseline"
    assert survey["cross_head_chen"].baseline == "baseline"  # a combination on the FPN student
    # single methods first, then combinations by the number of methods they enable
    assert list(survey)[-2:] == ["cross_head_chen", "all"]
    # the half-resolution Chen config belongs with the low-resolution comparison, not the survey
    assert os.path.isfile(os.path.join(CONFIG_DIR, "distill_chen_lowres.yaml"))
    assert "distill_chen_lowres.yaml" not in {e.config for e in known.values()}


def test_survey_discovery_rules(tmp_path):
    def write(name, text):
        (tmp_path / name).write_text(text)

    base = os.path.join(CONFIG_DIR, "{}.yaml")
    write("distill_one.yaml", f"# One method.\n_BASE_: \"{base.format('distill_fgd')}\"\n")
    write("distill_every.yaml", f"# Every method\n_BASE_: \"{base.format('distill_all')}\"\n")
    write(
        "distill_half.yaml",
        f"# Half resolution.\n_BASE_: \"{base.format('distill_fgd')}\"\n"
        "MODEL:\n  DISTILL:\n    STUDENT_INPUT_SCALE: 0.5\n",
    )
    write("distill_none.yaml", f"# No method.\n_BASE_: \"{base.format('student')}\"\n")
    write("other.yaml", f"# Not distill_.\n_BASE_: \"{base.format('distill_fgd')}\"\n")
    survey = survey_experiments(str(tmp_path))
    assert list(survey) == ["one", "every"]  # fewer methods first
    assert survey["one"].description == "One method"
    assert survey["every"].config == "distill_every.yaml"
    write("distill_undescribed.yaml", f"_BASE_: \"{base.format('distill_fgd')}\"\n")
    with pytest.raises(ValueError, match="distill_undescribed.yaml does not start with a comment"):
        survey_experiments(str(tmp_path))
    os.remove(tmp_path / "distill_undescribed.yaml")
    write(
        "distill_r50.yaml",
        f"# Another backbone.\n_BASE_: \"{base.format('distill_fgd')}\"\n"
        "MODEL:\n  BACKBONE:\n    NAME: build_retinanet_resnet_fpn_backbone\n",
    )
    with pytest.raises(ValueError, match="distill_r50.yaml: its backbone build_retinanet_resnet"):
        survey_experiments(str(tmp_path))


def test_benchmark_methods_are_the_demo_survey():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_distill import methods

    assert methods() == {name: e.config for name, e in survey_experiments().items()}


def _flat(cfg, prefix=""):
    """A config as {"A.B.C": value}."""
    out = {}
    for key, value in cfg.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_diagnosis_variants_change_only_their_own_keys(tmp_path):
    """Each diagnosis variant is its method's student with its own overrides and nothing else: the
    trials the demo plans for the variant and for its method differ in those keys (and the output
    folder) alone, and it is compared with its method's baseline."""
    from detkd.demo.experiments import DIAGNOSIS, diagnosis_experiments
    from detkd.demo.runner import Trunks, plan_students
    from detkd.demo.training import demo_data

    survey, variants = survey_experiments(), diagnosis_experiments()
    assert set(variants) == set(DIAGNOSIS) and not set(variants) & set(experiments())
    assert variants["fgd_t0.1"].opts == (
        "MODEL.DISTILL.FGD.NORMALIZE",
        False,
        "MODEL.DISTILL.FGD.BALANCE_FACTOR",
        1.0,
        "MODEL.DISTILL.BALANCE.AUTO_TARGET",
        0.1,
    )
    known = {**experiments(), **variants}
    chosen = {**{d[0]: known[d[0]] for d in DIAGNOSIS.values()}, **variants}
    trunks = {}  # students start from a pretrained trunk (a stand-in: one tensor)
    for depth in (18, 34):
        trunks[depth] = str(tmp_path / f"r{depth}.pth")
        torch.save(
            {"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}}, trunks[depth]
        )
    trials, runs, pending = plan_students(
        str(tmp_path),
        chosen,
        dict.fromkeys(chosen, 1),
        80,
        4,
        [],
        "t.pth",
        "fp",
        demo_data(),
        Trunks(trunks, "trunks"),
    )
    assert not runs and len(pending) == len(chosen)
    for name, (method, description, opts, *compared_with) in DIAGNOSIS.items():
        assert variants[name].baseline == (compared_with or [known[method].baseline])[0]
        assert description and variants[name].config == known[method].config
        mine, theirs = _flat(trials[name, 0].cfg), _flat(trials[method, 0].cfg)
        changed = {k for k in mine if mine[k] != theirs[k]} - {"OUTPUT_DIR"}
        # a variant that changes the backbone starts from the trunk's copy for that backbone
        moved = {"MODEL.WEIGHTS"} if "MODEL.BACKBONE.NAME" in opts[::2] else set()
        # a key set to its method's own value pins it against a later default: only FGD's, MGD's,
        # MSSD's and the hint's NORMALIZE, which the variants on standardized maps set since before
        # it was on, MSSD's WEIGHTS, which the variants with its self-distillation off set since
        # before it shipped off, and the hint's BALANCE_FACTOR, which chen_hint_norm_f3 set at 3
        # before it shipped so
        pinned = set(opts[::2]) - changed - moved
        allowed = {f"MODEL.DISTILL.{m}.NORMALIZE" for m in ("FGD", "MGD", "MSSD", "HINT")}
        allowed |= {"MODEL.DISTILL.MSSD.WEIGHTS", "MODEL.DISTILL.HINT.BALANCE_FACTOR"}
        assert pinned <= allowed, name
        # mssd_norm_mask_only and chen_hint_norm_f3 measured the setting their method ships at
        # since: each is its method, kept by name for the runs it cached
        shipped_since = ("mssd_norm_mask_only", "chen_hint_norm_f3")
        assert changed == (set(opts[::2]) - pinned) | moved, name
        assert bool(changed) == (name not in shipped_since), name
        same_key = trials[name, 0].key == trials[method, 0].key
        assert same_key == (name in shipped_since), name
    assert trials["fgd_t0.1", 0].cfg.MODEL.DISTILL.BALANCE.AUTO_TARGET == 0.1
    assert trials["cwd_t3", 0].cfg.MODEL.DISTILL.BALANCE.AUTO_TARGET == 3.0
    # CWD ships at 3x; the variants measured at 1x pin its factor there, so their runs stay cached
    assert trials["cwd", 0].cfg.MODEL.DISTILL.CWD.BALANCE_FACTOR == 3.0
    for name in ("cwd_t3", "cwd_t0.1", "cwd_f1", "cwd_fpn128"):
        assert trials[name, 0].cfg.MODEL.DISTILL.CWD.BALANCE_FACTOR == 1.0, name
    assert trials["pkd_t3", 0].cfg.MODEL.DISTILL.BALANCE.AUTO_TARGET == 3.0
    # PKD ships at 3x too, its variants measured at 1x pinned there
    assert trials["pkd", 0].cfg.MODEL.DISTILL.PKD.BALANCE_FACTOR == 3.0
    for name in ("pkd_t3", "pkd_t0.1", "pkd_f1"):
        assert trials[name, 0].cfg.MODEL.DISTILL.PKD.BALANCE_FACTOR == 1.0, name
    for name in ("fgd_norm_t3", "mgd_norm_t3"):
        assert trials[name, 0].cfg.MODEL.DISTILL.BALANCE.AUTO_TARGET == 3.0, name
    assert trials["fgd_norm_t3", 0].cfg.MODEL.DISTILL.FGD.NORMALIZE
    assert trials["mgd_norm_t3", 0].cfg.MODEL.DISTILL.MGD.NORMALIZE
    # FGD and MGD ship standardized at 3x; the variants measured before pin the paper's form at 1x
    # (or, on standardized maps, 1x), so their runs stay cached
    for block, method in (("FGD", "fgd"), ("MGD", "mgd")):
        shipped = trials[method, 0].cfg.MODEL.DISTILL[block]
        assert shipped.NORMALIZE and shipped.BALANCE_FACTOR == 3.0, method
        paper = trials[f"{method}_paper", 0].cfg.MODEL.DISTILL[block]
        assert not paper.NORMALIZE and paper.BALANCE_FACTOR == 1.0, method
    # all_no_mssd's MSSD is off at the weights `all` carried when it was measured (its cache key)
    assert trials["all_no_mssd", 0].cfg.MODEL.DISTILL.MSSD.WEIGHTS == [0.1] * 4
    assert not trials["all_no_mssd", 0].cfg.MODEL.DISTILL.MSSD.ENABLED
    for name in ("fgd_t0.1", "fgd_no_bg", "fgd_p3_p6", "fgd_scratch", "all_no_mssd"):
        fgd = trials[name, 0].cfg.MODEL.DISTILL.FGD
        assert not fgd.NORMALIZE and fgd.BALANCE_FACTOR == 1.0, name
    for name in ("fgd_norm", "fgd_norm_t3", "cross_head_fgd_norm"):
        fgd = trials[name, 0].cfg.MODEL.DISTILL.FGD
        assert fgd.NORMALIZE and fgd.BALANCE_FACTOR == 1.0, name
    for name in ("mgd_no_mask", "mgd_t0.1", "mgd_t3"):
        mgd = trials[name, 0].cfg.MODEL.DISTILL.MGD
        assert not mgd.NORMALIZE and mgd.BALANCE_FACTOR == 1.0, name
    for name in ("mgd_norm", "mgd_norm_t3"):
        mgd = trials[name, 0].cfg.MODEL.DISTILL.MGD
        assert mgd.NORMALIZE and mgd.BALANCE_FACTOR == 1.0, name
    # MSSD ships standardized with its self-distillation off (its Gaussian mask term alone); the
    # variants measured before pin the paper's form, and both terms at the demo's 0.1 per level
    shipped = trials["mssd", 0].cfg.MODEL.DISTILL.MSSD
    assert shipped.NORMALIZE and shipped.WEIGHTS == [0.0] * 4 and shipped.MASK_WEIGHTS == [1.0] * 4
    assert trials["mssd_norm", 0].cfg.MODEL.DISTILL.MSSD.NORMALIZE
    assert trials["mssd_norm", 0].cfg.MODEL.DISTILL.MSSD.WEIGHTS == [0.1] * 4
    # the variants on standardized maps, the rest pinned to the paper's form
    standardized = ["mssd_norm", "mssd_norm_mask_only", "mssd_norm_sd_only"]
    standardized += ["mssd_norm_adapt", "mssd_norm_adapt_sd_only", "mssd_stop600"]
    for name in standardized:
        mssd = trials[name, 0].cfg.MODEL.DISTILL.MSSD
        assert mssd.NORMALIZE and mssd.ADAPT == ("adapt" in name), name
    # each term alone: the other's weights at 0, its own at configs/demo/distill_mssd.yaml's
    mssd = trials["mssd_norm_mask_only", 0].cfg.MODEL.DISTILL.MSSD
    assert mssd.WEIGHTS == [0.0] * 4 and mssd.MASK_WEIGHTS == [1.0] * 4
    mssd = trials["mssd_norm_adapt", 0].cfg.MODEL.DISTILL.MSSD
    assert mssd.WEIGHTS == [0.1] * 4 and mssd.MASK_WEIGHTS == [1.0] * 4
    # MSSD as it ships, stopped at a quarter of the glyphs students' schedule
    stopped = trials["mssd_stop600", 0].cfg.MODEL.DISTILL
    assert stopped.MSSD.WEIGHTS == [0.0] * 4 and stopped.MSSD.MASK_WEIGHTS == [1.0] * 4
    assert stopped.SCHEDULE.STOP_ITER == 600 and stopped.SCHEDULE.WARMUP_ITERS == 0
    for name in ("mssd_norm_sd_only", "mssd_norm_adapt_sd_only"):
        mssd = trials[name, 0].cfg.MODEL.DISTILL.MSSD
        assert mssd.WEIGHTS == [0.1] * 4 and mssd.MASK_WEIGHTS == [0.0] * 4, name
    paper_form = [n for n, (method, *_) in DIAGNOSIS.items() if method == "mssd"]
    paper_form = [n for n in paper_form if n not in standardized]
    assert len(paper_form) == 11 and "mssd_paper" in paper_form
    for name in paper_form:
        mssd = trials[name, 0].cfg.MODEL.DISTILL.MSSD
        assert not mssd.NORMALIZE, name
        # the self-distillation at the demo's 0.1 per level, but where a variant turns it off
        sd_off = name in ("mssd_mask_only", "mssd_zero")
        assert mssd.WEIGHTS == [0.0 if sd_off else 0.1] * 4, name
    shipped, paper = trials["all", 0].cfg.MODEL.DISTILL, trials["all_paper", 0].cfg.MODEL.DISTILL
    assert shipped.MSSD.NORMALIZE and shipped.FGD.NORMALIZE and shipped.FGD.BALANCE_FACTOR == 3.0
    assert not paper.MSSD.NORMALIZE and not paper.FGD.NORMALIZE and paper.FGD.BALANCE_FACTOR == 1.0
    # `all` carries MSSD as it ships; all_paper its two terms as measured
    assert shipped.MSSD.WEIGHTS == [0.0] * 4 and paper.MSSD.WEIGHTS == [0.1] * 4
    # the head cross-forward with CWD: both on, CWD at its own default 3x
    both = trials["cross_head_cwd", 0].cfg.MODEL.DISTILL
    assert both.CROSS_HEAD.ENABLED and both.CWD.ENABLED and both.CWD.BALANCE_FACTOR == 3.0
    # Chen's terms apart: its output terms without the hint, and the hint alone at 3x
    chen = trials["chen_no_hint", 0].cfg.MODEL.DISTILL
    assert not chen.HINT.ENABLED and chen.SOFT_CE.ENABLED and chen.BOUNDED_REG.ENABLED
    hint = trials["chen_hint_t3", 0].cfg.MODEL.DISTILL
    assert hint.HINT.ENABLED and not hint.SOFT_CE.ENABLED and not hint.BOUNDED_REG.ENABLED
    assert hint.BALANCE.AUTO_TARGET == 3.0 and hint.HINT.BALANCE_FACTOR == 1.0
    assert not hint.HINT.NORMALIZE
    assert trials["chen_hint_norm_t3", 0].cfg.MODEL.DISTILL.HINT.NORMALIZE
    # Chen's hint ships standardized at 3x; the variants measured before pin the paper's form at
    # 1x, or its 1x on standardized maps; chen_hint_norm_f3 is the default, pinned
    for name in ("chen", "cross_head_chen", "all", "chen_hint_norm_f3"):
        shipped = trials[name, 0].cfg.MODEL.DISTILL.HINT
        assert shipped.NORMALIZE and shipped.BALANCE_FACTOR == 3.0, name
    for name in ("chen_paper", "cross_head_chen_paper", "all_paper", "all_no_mssd", "chen_hint_t3"):
        paper = trials[name, 0].cfg.MODEL.DISTILL.HINT
        assert not paper.NORMALIZE and paper.BALANCE_FACTOR == 1.0, name
    for name in ("chen_hint_norm", "chen_hint_norm_t3"):
        one_x = trials[name, 0].cfg.MODEL.DISTILL.HINT
        assert one_x.NORMALIZE and one_x.BALANCE_FACTOR == 1.0, name
    assert trials["cross_head_chen_paper", 0].cfg.MODEL.DISTILL.CROSS_HEAD.ENABLED
    # the runs cached under chen_hint_norm_f3 are chen's as it ships; chen_paper's are the runs
    # cached under chen before the switch (the keys at their neutral values, as before they were)
    assert trials["chen", 0].key == trials["chen_hint_norm_f3", 0].key
    assert trials["chen_paper", 0].key != trials["chen", 0].key
    before = trials["chen", 0].cfg.clone()  # Chen's config before the hint's two keys were set
    before.defrost()
    for key in ("NORMALIZE", "BALANCE_FACTOR"):
        del before.MODEL.DISTILL.HINT[key]
    assert fingerprint(trials["chen_paper", 0].cfg) == fingerprint(before)
    # a student from random weights is compared with the baseline from random weights
    assert variants["fgd_scratch"].baseline == "baseline_scratch"
    assert variants["baseline_scratch"].baseline == "" and survey["fgd"].baseline == "baseline"
    assert trials["fgd", 0].cfg.MODEL.WEIGHTS == trunks[18]
    # a PAFPN student gets the trunk's copy with its keys under the PAFPN's FPN
    assert trials["mssd", 0].cfg.MODEL.WEIGHTS == str(tmp_path / "r18.fpn.bottom_up.pth")
    # so does a variant that moves its method onto the PAFPN
    pafpn = trials["cross_head_pafpn", 0].cfg
    assert pafpn.MODEL.BACKBONE.NAME == "build_resnet_pafpn_backbone"
    assert pafpn.MODEL.WEIGHTS == str(tmp_path / "r18.fpn.bottom_up.pth")
    assert trials["fgd_scratch", 0].cfg.MODEL.WEIGHTS == ""
    assert trials["fgd_t0.1", 0].cfg.OUTPUT_DIR == os.path.join(str(tmp_path), "fgd_t0.1", "seed0")
    assert tuple(trials["fgd", 0].cfg.SOLVER.STEPS) == (60, 75)  # 75 % and 93.75 % of 80
    other = plan_students(
        str(tmp_path),
        {"fgd": survey["fgd"]},
        {"fgd": 1},
        90,
        3,
        [],
        "t.pth",
        "fp",
        demo_data(),
        at=(2 / 3, 8 / 9),
    )[0]
    assert tuple(other["fgd", 0].cfg.SOLVER.STEPS) == (60, 80)
    assert list(trials["fgd_p3_p6", 0].cfg.MODEL.DISTILL.FGD.IN_FEATURES) == [
        "p3",
        "p4",
        "p5",
        "p6",
    ]
