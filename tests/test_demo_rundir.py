"""The demo's output directories: a run trained again starts clean (a stale metrics.json would mix
two runs' AP curves), a directory the demo did not make is refused, and one demo at a time writes
into an output directory."""

import functools
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TINY, make_cfg

from detkd import demo

STALE = {
    "metrics.json": json.dumps({"iteration": 999, "bbox/AP": 99.0}) + "\n",
    "events.out.tfevents.1.host": "x",
    "last_checkpoint": "model_0000999.pth",
    "model_0000999.pth": "x",
    "log.txt": "old run\n",
}


def _stale_run(path, owned_by):
    """An earlier run's files in ``path``; ``owned_by`` (None: nothing) marks it the demo's."""
    files = dict(STALE)
    if owned_by:
        files[owned_by] = '{"key": "old", "run": {}}'
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)


@pytest.mark.parametrize("owned_by", ["run.json", "CONFIG_FINGERPRINT", "the marker"])
def test_stale_run_of_the_demo_is_cleared_and_its_curve_gone(tmp_path, capsys, owned_by):
    run = tmp_path / "baseline" / "seed0"
    _stale_run(run, demo.RUN_MARKER if owned_by == "the marker" else owned_by)
    demo.fresh_run_dir(str(run))
    assert os.listdir(run) == [demo.RUN_MARKER]
    assert f"removing the stale run in {run}" in capsys.readouterr().out
    # the new run's writer starts a new metrics.json: its curve is the new run's points only
    (run / "metrics.json").write_text(json.dumps({"iteration": 1, "bbox/AP": 3.0}) + "\n")
    assert demo.ap_curve(str(run)) == [(1, 3.0)]


def test_fresh_run_dir_makes_a_missing_or_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    for run in (tmp_path / "new" / "seed0", tmp_path / "empty"):
        demo.fresh_run_dir(str(run))
        assert os.listdir(run) == [demo.RUN_MARKER]


def test_directory_the_demo_did_not_make_is_refused(tmp_path):
    run = tmp_path / "chen" / "seed0"
    _stale_run(run, owned_by=None)
    with pytest.raises(RuntimeError, match="did not write") as e:
        demo.fresh_run_dir(str(run))
    assert str(run) in str(e.value)
    assert sorted(os.listdir(run)) == sorted(STALE)  # nothing deleted


@pytest.mark.slow
def test_demo_retrains_a_stale_run_from_a_clean_directory(tmp_path):
    """A run.json of another config (so the run is trained again) beside a stale metrics.json: the
    AP curve the demo reports, and the metrics.json it leaves, hold only the new run's points; the
    teacher, of another fingerprint, is retrained in a clean directory too (a method that distils
    from it is chosen: without one the demo trains no teacher)."""
    run, teacher = tmp_path / "baseline" / "seed0", tmp_path / "teacher"
    _stale_run(run, owned_by="run.json")
    _stale_run(teacher, owned_by="CONFIG_FINGERPRINT")
    demo.run_demo(
        str(tmp_path),
        ["baseline", "chen"],
        seeds=1,
        teacher_iters=1,
        student_iters=2,
        eval_points=1,
        extra_opts=TINY,
    )
    curve = json.loads((tmp_path / "results.json").read_text())["curves"]["baseline"][0]
    assert "Regime: " in (tmp_path / "results.md").read_text()  # which regime it shows
    assert curve and all(it < 999 for it, _ in curve)
    assert demo.ap_curve(str(run)) == [tuple(p) for p in curve]
    for d in (run, teacher):
        assert not (d / "model_0000999.pth").exists() and (d / demo.RUN_MARKER).exists()
        assert '"iteration": 999' not in (d / "metrics.json").read_text()


def test_second_lock_on_one_output_fails_until_the_first_is_released(tmp_path):
    out = str(tmp_path / "demo")
    with demo.output_lock(out):
        # a second open file description, as another demo process would have
        with pytest.raises(RuntimeError, match="held by another run") as e:
            with demo.output_lock(out):
                pass
        assert out in str(e.value) and f"pid {os.getpid()}" in str(e.value)
    with demo.output_lock(out):
        pass
    with pytest.raises(ValueError):  # released on an exception too
        with demo.output_lock(out):
            raise ValueError("boom")
    with demo.output_lock(out):
        pass


def test_second_demo_process_on_one_output_fails_at_once(tmp_path):
    out = str(tmp_path / "demo")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"))
    with demo.output_lock(out):
        proc = subprocess.run(
            [sys.executable, "-m", "detkd.demo", "--quick", "--jobs", "1", "--output", out],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )
    assert proc.returncode != 0
    # the message names the directory and its holder
    assert f"demo: {out} is held by another run: pid {os.getpid()} on " in proc.stderr
    # it stopped before writing anything; the first demo's release removed its holder record
    assert sorted(os.listdir(out)) == [demo.LOCK_FILE]


def test_fingerprint_follows_what_trains_the_weights():
    """A run is cached under its config's fingerprint: the teacher (a plain GeneralizedRCNN) keeps
    its fingerprint when a MODEL.DISTILL setting changes (it never reads them: a new detkd default
    once threw away a trained demo teacher), a student does not; the output path never counts."""
    from detkd.demo.training import demo_config
    from detkd.survey.trials import fingerprint

    def fp(config, *opts):
        return fingerprint(demo_config(os.path.join(REPO, "configs/demo", config), list(opts)))

    teacher = fp("teacher.yaml")
    assert fp("teacher.yaml", "MODEL.DISTILL.BALANCE.AUTO_TARGET", 3.0) == teacher
    assert fp("teacher.yaml", "OUTPUT_DIR", "elsewhere") == teacher
    assert fp("teacher.yaml", "SOLVER.BASE_LR", 0.03) != teacher
    student = fp("distill_fgd.yaml")
    assert fp("distill_fgd.yaml", "MODEL.DISTILL.BALANCE.AUTO_TARGET", 3.0) != student
    assert fp("distill_fgd.yaml", "OUTPUT_DIR", "elsewhere") == student


def test_a_key_added_at_its_neutral_value_keeps_every_cached_run():
    """A config key detkd adds later (listed in NEUTRAL_KEYS with the value that trains as before)
    leaves the fingerprint unchanged at that value, so the cached runs stay valid; at any other
    value it counts (adding MSSD.ADAPT without this retrained every cached demo run)."""
    from detkd.demo.training import demo_config
    from detkd.distillers import registered_distillers
    from detkd.survey.trials import NEUTRAL_KEYS, fingerprint

    factors = {
        f"MODEL.DISTILL.{cls.config_block}.BALANCE_FACTOR": 1.0
        for cls in registered_distillers()
        if cls.auto_balanced and cls.__module__.split(".")[0] == "detkd"  # not a test's own method
    }
    assert len(factors) == 7
    assert NEUTRAL_KEYS == {
        "MODEL.DISTILL.MSSD.ADAPT": False,
        "MODEL.DISTILL.MSSD.NORMALIZE": False,
        "MODEL.DISTILL.FGD.NORMALIZE": False,
        "MODEL.DISTILL.MGD.NORMALIZE": False,
        "MODEL.DISTILL.HINT.NORMALIZE": False,
        **factors,
    }
    for key, config, other in (
        ("MODEL.DISTILL.MSSD.ADAPT", "distill_mssd.yaml", True),
        ("MODEL.DISTILL.MSSD.NORMALIZE", "distill_mssd.yaml", True),
        ("MODEL.DISTILL.FGD.NORMALIZE", "distill_fgd.yaml", True),
        ("MODEL.DISTILL.MGD.NORMALIZE", "distill_mgd.yaml", True),
        ("MODEL.DISTILL.MGD.BALANCE_FACTOR", "distill_mgd.yaml", 3.0),
        ("MODEL.DISTILL.HINT.NORMALIZE", "distill_chen.yaml", True),
        ("MODEL.DISTILL.HINT.BALANCE_FACTOR", "distill_chen.yaml", 5.0),
        ("MODEL.DISTILL.CWD.BALANCE_FACTOR", "distill_cwd.yaml", 3.0),
        ("MODEL.DISTILL.FGD.BALANCE_FACTOR", "distill_fgd.yaml", 3.0),
        ("MODEL.DISTILL.PKD.BALANCE_FACTOR", "distill_pkd.yaml", 5.0),
    ):
        cfg = demo_config(os.path.join(REPO, "configs/demo", config), [])
        *path, last = key.split(".")
        node_of = lambda c: functools.reduce(getattr, path, c)  # noqa: E731
        neutral = NEUTRAL_KEYS[key]
        # a default shipped off its neutral value (CWD's, PKD's, FGD's, MGD's and the hint's factor
        # 3.0; FGD's, MGD's, MSSD's and the hint's NORMALIZE True) trains anew; a config at the
        # neutral value finds the cached runs
        shipped = {
            "MODEL.DISTILL.CWD.BALANCE_FACTOR": 3.0,
            "MODEL.DISTILL.PKD.BALANCE_FACTOR": 3.0,
            "MODEL.DISTILL.FGD.BALANCE_FACTOR": 3.0,
            "MODEL.DISTILL.MGD.BALANCE_FACTOR": 3.0,
            "MODEL.DISTILL.FGD.NORMALIZE": True,
            "MODEL.DISTILL.MGD.NORMALIZE": True,
            "MODEL.DISTILL.MSSD.NORMALIZE": True,
            "MODEL.DISTILL.HINT.NORMALIZE": True,
            "MODEL.DISTILL.HINT.BALANCE_FACTOR": 3.0,
        }.get(key, neutral)
        assert node_of(cfg)[last] == shipped and type(node_of(cfg)[last]) is type(neutral), key
        default_fingerprint = fingerprint(cfg)
        cfg.defrost()
        node_of(cfg)[last] = neutral
        without = cfg.clone()
        del node_of(without)[last]  # the config before the key existed
        assert fingerprint(cfg) == fingerprint(without), key
        assert (default_fingerprint == fingerprint(without)) == (shipped == neutral), key
        changed = cfg.clone()
        changed.defrost()
        node_of(changed)[last] = other
        assert fingerprint(changed) != fingerprint(cfg), key
        assert node_of(cfg)[last] == neutral  # the fingerprint changes no config


def test_a_method_that_is_off_leaves_its_balance_factor_out():
    """A method's BALANCE_FACTOR trains nothing where the method is off, so it is not part of the
    fingerprint there: CWD's default of 3.0 leaves a baseline's fingerprint what it was at 1.0 (its
    cached runs, 2400 iterations each on the glyphs, stay valid), while a run with the method on
    retrains at another factor."""
    from detkd.demo.training import demo_config
    from detkd.survey.trials import fingerprint

    def fp(config, *opts):
        return fingerprint(demo_config(os.path.join(REPO, "configs/demo", config), list(opts)))

    baseline = demo_config(os.path.join(REPO, "configs/demo/student.yaml"), [])
    assert baseline.MODEL.DISTILL.CWD.BALANCE_FACTOR == 3.0
    assert not baseline.MODEL.DISTILL.CWD.ENABLED
    before = baseline.clone()  # the config before the key existed: the runs cached then
    before.defrost()
    for block in ("CWD", "PKD", "FGD", "MGD"):
        del before.MODEL.DISTILL[block]["BALANCE_FACTOR"]
    # FGD, MGD and the hint ship on standardized maps; the runs cached before had them off
    before.MODEL.DISTILL.FGD.NORMALIZE = before.MODEL.DISTILL.MGD.NORMALIZE = False
    before.MODEL.DISTILL.HINT.NORMALIZE = False
    del before.MODEL.DISTILL.HINT["BALANCE_FACTOR"]
    assert baseline.MODEL.DISTILL.PKD.BALANCE_FACTOR == 3.0
    assert baseline.MODEL.DISTILL.FGD.NORMALIZE and baseline.MODEL.DISTILL.MGD.NORMALIZE
    assert fingerprint(baseline) == fingerprint(before) == fp("student.yaml")
    # a method that is off leaves out every key NEUTRAL_KEYS lists for its block, at any value
    assert fp("student.yaml", "MODEL.DISTILL.MSSD.ADAPT", True) == fingerprint(baseline)
    assert fp("distill_cwd.yaml", "MODEL.DISTILL.FGD.NORMALIZE", False) == fp("distill_cwd.yaml")
    # on, it counts: FGD's default and its paper form are two runs
    assert fp("distill_fgd.yaml", "MODEL.DISTILL.FGD.NORMALIZE", False) != fp("distill_fgd.yaml")
    for key, value in (("CWD", 1.0), ("CWD", 5.0), ("FGD", 1.0), ("CROSS_HEAD", 0.5), ("PKD", 1.0)):
        opts = (f"MODEL.DISTILL.{key}.BALANCE_FACTOR", value)
        assert fp("student.yaml", *opts) == fingerprint(baseline), key
        # another method's factor leaves an FGD run's fingerprint; FGD's own changes it
        assert (fp("distill_fgd.yaml", *opts) == fp("distill_fgd.yaml")) == (key != "FGD"), key
    # with CWD on, its factor counts: 1.0 and 3.0 are two runs
    on = ("MODEL.DISTILL.CWD.ENABLED", True)
    factor = "MODEL.DISTILL.CWD.BALANCE_FACTOR"
    assert fp("student.yaml", *on, factor, 1.0) != fp("student.yaml", *on, factor, 3.0)
    assert fp("student.yaml", *on) != fingerprint(baseline)
    assert baseline.MODEL.DISTILL.CWD.BALANCE_FACTOR == 3.0  # the fingerprint changes no config


def test_a_changed_default_retrains_only_the_runs_of_its_method(monkeypatch):
    """MSSD's WEIGHTS default is 0, where runs were cached under 1.0 per level (FORMER_DEFAULTS):
    where MSSD is off (the baseline, every other method) a config at the default keeps the
    fingerprint it had under the earlier default, so those runs stay cached, and any other value
    counts as before; a run that trains MSSD counts its weights."""
    from detkd.demo.training import demo_config
    from detkd.survey import trials
    from detkd.survey.trials import FORMER_DEFAULTS, fingerprint

    assert FORMER_DEFAULTS == {"MODEL.DISTILL.MSSD.WEIGHTS": ([1.0] * 4, [0.0] * 4)}

    def earlier(cfg, weights):
        """The fingerprint the config had under the earlier default, its MSSD at ``weights``."""
        other = cfg.clone()
        other.defrost()
        other.MODEL.DISTILL.MSSD.WEIGHTS = weights
        with monkeypatch.context() as m:
            m.setattr(trials, "FORMER_DEFAULTS", {})
            return fingerprint(other)

    def at(cfg, weights):
        other = cfg.clone()
        other.defrost()
        other.MODEL.DISTILL.MSSD.WEIGHTS = weights
        return fingerprint(other)

    for config in ("student.yaml", "distill_cwd.yaml", "distill_chen.yaml"):
        cfg = demo_config(os.path.join(REPO, "configs/demo", config), [])
        assert not cfg.MODEL.DISTILL.MSSD.ENABLED and cfg.MODEL.DISTILL.MSSD.WEIGHTS == [0.0] * 4
        # at the default: the fingerprint of the same config cached under 1.0 per level
        assert fingerprint(cfg) == earlier(cfg, [1.0] * 4) != earlier(cfg, [0.0] * 4), config
        # set to another value in a block that is off (all_no_mssd's 0.1): as before the change
        assert at(cfg, [0.1] * 4) == earlier(cfg, [0.1] * 4) != fingerprint(cfg), config
        assert cfg.MODEL.DISTILL.MSSD.WEIGHTS == [0.0] * 4  # the fingerprint changes no config
    # MSSD on: each weight trains other weights, and the rule leaves its fingerprint alone
    mssd = demo_config(os.path.join(REPO, "configs/demo/distill_mssd.yaml"), [])
    keys = {at(mssd, [w] * 4) for w in (0.0, 0.1, 1.0)}
    assert len(keys) == 3 and fingerprint(mssd) == earlier(mssd, [0.0] * 4)


def test_a_run_is_trained_from_its_seed(tmp_path):
    """The demo builds its trainer itself (train_net's default_setup never runs), so it seeds
    torch, numpy and random from cfg.SEED: two runs of seed 0 end with the same weights, a run of
    seed 1 with others (without the seeding a seed only names a run)."""
    from detkd.demo.training import demo_config, train

    def weights(seed, name):
        out = tmp_path / name
        opts = [*TINY, "SEED", seed, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", 2]
        opts += ["SOLVER.STEPS", (), "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", ()]
        train(demo_config(os.path.join(REPO, "configs/demo/student.yaml"), opts))
        return torch.load(out / "model_final.pth", weights_only=True)["model"]

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_fingerprint_counts_the_run_version_of_students(monkeypatch):
    """Raising RUN_VERSION (a training-code change that alters a student's weights) retrains every
    student run; the cached teacher stays."""
    from detkd.demo.training import demo_config
    from detkd.survey import trials

    def fp(config):
        return trials.fingerprint(demo_config(os.path.join(REPO, config), []))

    configs = ["configs/demo/student.yaml", "configs/demo/distill_fgd.yaml"]
    teacher, students = fp("configs/demo/teacher.yaml"), [fp(c) for c in configs]
    monkeypatch.setattr(trials, "RUN_VERSION", trials.RUN_VERSION + 1)
    assert fp("configs/demo/teacher.yaml") == teacher
    assert all(fp(c) != s for c, s in zip(configs, students))


def test_one_seed_one_student_init_whatever_it_distils(distill_cfg):
    """What makes a pair of runs a pair: under one seed, the baseline and every distilled student
    build the same initial student weights (the student is built before the teacher and the
    distillers' own layers draw from the random stream)."""
    from detectron2.modeling import build_model
    from detectron2.utils.env import seed_all_rng

    def student_weights(config):
        cfg = make_cfg(config) if config == "configs/demo/student.yaml" else distill_cfg(config)
        seed_all_rng(0)
        model = build_model(cfg)
        return {k: v for k, v in model.state_dict().items() if k.startswith("student.")}

    baseline = student_weights("configs/demo/student.yaml")
    assert len(baseline) > 100
    for config in ("distill_fgd.yaml", "distill_cross_head.yaml", "distill_chen.yaml"):
        distilled = student_weights("configs/demo/" + config)
        assert distilled.keys() == baseline.keys()
        assert all(torch.equal(distilled[k], baseline[k]) for k in baseline), config


# Every config key detkd adds to what a run's fingerprint hashes, as the runs cached at RUN_VERSION
# 3 were trained with (NEUTRAL_KEYS apart)
FINGERPRINTED_KEYS = """
    MODEL.DISTILL.ALLOW_UNSAFE_PICKLE MODEL.DISTILL.BALANCE.AUTO
    MODEL.DISTILL.BALANCE.AUTO_ITERS MODEL.DISTILL.BALANCE.AUTO_TARGET
    MODEL.DISTILL.BALANCE.AUTO_WINDOW MODEL.DISTILL.BALANCE.AUTO_WINDOW_MAX_RATIO
    MODEL.DISTILL.BALANCE.HIGH MODEL.DISTILL.BALANCE.LOG_PERIOD MODEL.DISTILL.BALANCE.LOW
    MODEL.DISTILL.BALANCE.NORMALIZE_BY_AREA MODEL.DISTILL.BOUNDED_REG.ENABLED
    MODEL.DISTILL.BOUNDED_REG.MARGIN MODEL.DISTILL.BOUNDED_REG.NU
    MODEL.DISTILL.BOUNDED_REG.TARGETS MODEL.DISTILL.CROSS_HEAD.BOX_WEIGHT
    MODEL.DISTILL.CROSS_HEAD.ENABLED MODEL.DISTILL.CROSS_HEAD.TEMPERATURE
    MODEL.DISTILL.CROSS_HEAD.WEIGHT MODEL.DISTILL.CWD.ENABLED MODEL.DISTILL.CWD.IN_FEATURES
    MODEL.DISTILL.CWD.TEMPERATURE MODEL.DISTILL.CWD.WEIGHT MODEL.DISTILL.FEATURE_RESIZE
    MODEL.DISTILL.FGD.ALPHA MODEL.DISTILL.FGD.BETA MODEL.DISTILL.FGD.ENABLED
    MODEL.DISTILL.FGD.GAMMA MODEL.DISTILL.FGD.IN_FEATURES MODEL.DISTILL.FGD.LAMBDA
    MODEL.DISTILL.FGD.TEMPERATURE MODEL.DISTILL.GUARD.ITERS MODEL.DISTILL.GUARD.MAX_RATIO
    MODEL.DISTILL.HINT.ADAPTATION_KERNEL MODEL.DISTILL.HINT.ENABLED MODEL.DISTILL.HINT.NORM
    MODEL.DISTILL.HINT.STUDENT_FEATURES MODEL.DISTILL.HINT.TEACHER_FEATURES
    MODEL.DISTILL.HINT.WEIGHT MODEL.DISTILL.INHERIT.ENABLED MODEL.DISTILL.INHERIT.PREFIXES
    MODEL.DISTILL.MGD.ALPHA MODEL.DISTILL.MGD.ENABLED MODEL.DISTILL.MGD.IN_FEATURES
    MODEL.DISTILL.MGD.MASK_RATIO MODEL.DISTILL.MGD.SEED MODEL.DISTILL.MSSD.ENABLED
    MODEL.DISTILL.MSSD.IN_FEATURES MODEL.DISTILL.MSSD.MASK_WEIGHTS MODEL.DISTILL.MSSD.WEIGHTS
    MODEL.DISTILL.PKD.ENABLED MODEL.DISTILL.PKD.IN_FEATURES MODEL.DISTILL.PKD.WEIGHT
    MODEL.DISTILL.SCHEDULE.STOP_ITER MODEL.DISTILL.SCHEDULE.WARMUP_ITERS
    MODEL.DISTILL.SOFT_CE.BACKGROUND_WEIGHT MODEL.DISTILL.SOFT_CE.ENABLED
    MODEL.DISTILL.SOFT_CE.MU MODEL.DISTILL.SOFT_CE.TARGETS MODEL.DISTILL.SOFT_CE.TEMPERATURE
    MODEL.DISTILL.SOFT_CE.WEIGHT MODEL.DISTILL.STUDENT_INPUT_SCALE
    MODEL.DISTILL.STUDENT_META_ARCHITECTURE MODEL.DISTILL.TEACHER.CONFIG_FILE
    MODEL.DISTILL.TEACHER.IGNORED_KEY_PREFIXES MODEL.DISTILL.TEACHER.OPTS
    MODEL.DISTILL.TEACHER.SANITY_MIN_RECALL MODEL.DISTILL.TEACHER.WEIGHTS MODEL.PAFPN.NORM
    SOLVER.AMP.PRECISION SOLVER.GLOBAL_GRAD_CLIP_NORM
""".split()


def test_a_new_config_key_does_not_make_every_cached_run_stale_unnoticed():
    """A key detkd adds counts in every run's fingerprint unless NEUTRAL_KEYS lists it, so a new
    key without an entry there makes every cached run stale, and the demo deletes and trains them
    again (HINT.NORMALIZE, added without one, cost a 2400-iteration glyphs baseline). A new key
    goes into NEUTRAL_KEYS at the value that trains as before; a key that changes what every run
    trains raises RUN_VERSION instead, and this list is written anew."""
    from detectron2.config import get_cfg

    from detkd.config import add_detkd_config
    from detkd.distillers import registered_distillers
    from detkd.survey.trials import NEUTRAL_KEYS, RUN_VERSION

    def keys(node, prefix=""):
        out = set()
        for name, value in node.items():
            out |= keys(value, prefix + name + ".") if isinstance(value, dict) else {prefix + name}
        return out

    cfg = get_cfg()
    add_detkd_config(cfg)
    # a test's own registered method adds its block too: not detkd's
    theirs = {
        f"MODEL.DISTILL.{cls.config_block}."
        for cls in registered_distillers()
        if cls.__module__.split(".")[0] != "detkd"
    }
    added = {
        k
        for k in keys(cfg) - keys(get_cfg()) - set(NEUTRAL_KEYS)
        if not any(k.startswith(block) for block in theirs)
    }
    assert RUN_VERSION == 3
    assert not added - set(FINGERPRINTED_KEYS), (
        f"{sorted(added - set(FINGERPRINTED_KEYS))}: new config keys count in every cached "
        "run's fingerprint; list each in detkd.survey.trials.NEUTRAL_KEYS at its neutral value"
    )
    assert added == set(FINGERPRINTED_KEYS), sorted(set(FINGERPRINTED_KEYS) - added)
