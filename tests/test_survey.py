"""detkd survey on the embedded shapes, tiny schedules: the arms from a user's config (methods,
groups, the grid and its refusals, all before anything trains), the pairing of a method with its
baseline, the cache and a resume after an interrupted trial, the report and best.yaml, and the
Ray backend giving the same table as the local one."""

import json
import os

import pytest
import torch
from conftest import REPO, TEACHER_YAML, TINY
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

from detkd.data import register_shapes_datasets
from detkd.survey import (
    BASELINE,
    LocalBackend,
    RayBackend,
    Survey,
    SurveyError,
    build_arms,
    parse_grid,
    parse_methods,
)
from detkd.survey.arms import check_arms, split_values
from detkd.survey.cli import main, parser, plan_survey, survey_schedule
from detkd.survey.runner import rank
from detkd.survey.training import train_trial
from detkd.survey.trials import fingerprint, load_run, names_teacher, plan_trials

PKD = os.path.join(REPO, "configs/demo/distill_pkd.yaml")


def _args(tmp_path, teacher_weights, *extra, methods="pkd,cwd", iters=3):
    opts = [str(o) for o in TINY] + [
        "MODEL.DISTILL.TEACHER.CONFIG_FILE",
        TEACHER_YAML,
        "MODEL.DISTILL.TEACHER.WEIGHTS",
        teacher_weights,
        "SOLVER.BASE_LR",
        "0.005",
    ]
    argv = ["--config-file", PKD, "--methods", methods, "--seeds", "1", "--iters", str(iters)]
    argv += ["--output", str(tmp_path / "survey"), "--eval-points", "1", *extra, *opts]
    return parser().parse_args(argv)


def test_methods_groups_and_combinations_parse_to_registered_names():
    assert parse_methods("pkd, cwd") == {"pkd": ("pkd",), "cwd": ("cwd",)}
    assert parse_methods("chen") == {"chen": ("hint", "soft_ce", "bounded_reg")}
    # members in registration order, whatever order they are written in
    assert parse_methods("cross_head+chen")["cross_head+chen"] == (
        "hint",
        "soft_ce",
        "bounded_reg",
        "cross_head",
    )
    with pytest.raises(SurveyError, match="unknown method 'pdk'.*known: hint, soft_ce"):
        parse_methods("pkd,pdk")
    with pytest.raises(SurveyError, match="always trained"):
        parse_methods("baseline")
    with pytest.raises(SurveyError, match="names no method"):
        parse_methods(" , ")
    assert split_values("0.1,0.3, (1, 2)") == ["0.1", "0.3", "(1, 2)"]


def test_the_grid_multiplies_only_the_arms_whose_block_it_names(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_pkd.yaml")
    grid = parse_grid(
        ["MODEL.DISTILL.BALANCE.AUTO_TARGET=0.1,1.0", "MODEL.DISTILL.PKD.WEIGHT=1,6"], cfg
    )
    arms, baseline_of = build_arms(cfg, parse_methods("pkd,cwd"), grid)
    assert list(arms) == [
        BASELINE,
        "pkd[BALANCE.AUTO_TARGET=0.1,PKD.WEIGHT=1]",
        "pkd[BALANCE.AUTO_TARGET=0.1,PKD.WEIGHT=6]",
        "pkd[BALANCE.AUTO_TARGET=1.0,PKD.WEIGHT=1]",
        "pkd[BALANCE.AUTO_TARGET=1.0,PKD.WEIGHT=6]",
        "cwd[BALANCE.AUTO_TARGET=0.1]",
        "cwd[BALANCE.AUTO_TARGET=1.0]",
    ]
    assert set(baseline_of.values()) == {BASELINE} and BASELINE not in baseline_of
    arm = arms["pkd[BALANCE.AUTO_TARGET=1.0,PKD.WEIGHT=1]"]
    assert arm.MODEL.DISTILL.BALANCE.AUTO_TARGET == 1.0 and arm.MODEL.DISTILL.PKD.WEIGHT == 1.0
    assert arm.MODEL.DISTILL.PKD.ENABLED and not arm.MODEL.DISTILL.CWD.ENABLED
    cwd = arms["cwd[BALANCE.AUTO_TARGET=0.1]"]
    assert cwd.MODEL.DISTILL.CWD.ENABLED and not cwd.MODEL.DISTILL.PKD.ENABLED
    assert cwd.MODEL.DISTILL.TEACHER.WEIGHTS == cfg.MODEL.DISTILL.TEACHER.WEIGHTS
    base = arms[BASELINE]
    assert not base.MODEL.DISTILL.PKD.ENABLED and base.MODEL.DISTILL.TEACHER.CONFIG_FILE == ""
    # the user's config is not changed by the arms made from it
    assert cfg.MODEL.DISTILL.PKD.ENABLED and cfg.MODEL.DISTILL.BALANCE.AUTO_TARGET != 0.1
    # a method's own balance factor is a key of its block: it multiplies that method's arms only
    grid = parse_grid(["MODEL.DISTILL.CWD.BALANCE_FACTOR=1,3"], cfg)
    arms, _ = build_arms(cfg, parse_methods("pkd,cwd"), grid)
    assert list(arms) == [BASELINE, "pkd", "cwd[CWD.BALANCE_FACTOR=1]", "cwd[CWD.BALANCE_FACTOR=3]"]
    assert arms["cwd[CWD.BALANCE_FACTOR=3]"].MODEL.DISTILL.CWD.BALANCE_FACTOR == 3.0


def test_a_grid_or_method_the_config_cannot_run_fails_naming_the_key(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_pkd.yaml")
    for item, match in [
        ("MODEL.DISTILL.PKD.WIEGHT=1", "no key MODEL.DISTILL.PKD.WIEGHT"),
        ("SOLVER.BASE_LR=0.1,0.2", "only keys under MODEL.DISTILL"),
        ("MODEL.DISTILL.PKD=1", "a block, not a value"),
        ("MODEL.DISTILL.PKD.WEIGHT", "KEY=v1,v2"),
    ]:
        with pytest.raises(SurveyError, match=match):
            parse_grid([item], cfg)
    grid = parse_grid(["MODEL.DISTILL.FGD.ALPHA=1e-5"], cfg)
    with pytest.raises(SurveyError, match="MODEL.DISTILL.FGD.ALPHA: no method of --methods"):
        build_arms(cfg, parse_methods("pkd"), grid)
    with pytest.raises(SurveyError, match="PKD.WEIGHT=abc"):
        build_arms(cfg, parse_methods("pkd"), parse_grid(["MODEL.DISTILL.PKD.WEIGHT=abc"], cfg))
    # a value of the right type that the method refuses: its own error names the key
    arms, _ = build_arms(
        cfg, parse_methods("pkd"), parse_grid(["MODEL.DISTILL.PKD.WEIGHT=-1"], cfg)
    )
    with pytest.raises(SurveyError, match=r"pkd\[PKD.WEIGHT=-1\].*MODEL.DISTILL.PKD.WEIGHT"):
        check_arms(arms)
    # MSSD needs a PAFPN student: refused before anything trains
    arms, _ = build_arms(cfg, parse_methods("mssd"), {})
    with pytest.raises(SurveyError, match="mssd: its config cannot run"):
        check_arms(arms)


def test_the_command_refuses_before_anything_trains(tmp_path, teacher_weights):
    with pytest.raises(SystemExit, match="unknown method 'fdg'"):
        main(vars_to_argv(_args(tmp_path, teacher_weights, methods="fdg")))
    with pytest.raises(SystemExit, match="MODEL.DISTILL.PKD.WEIGHT"):
        main(
            vars_to_argv(_args(tmp_path, teacher_weights, "--grid", "MODEL.DISTILL.PKD.WEIGHT=-2"))
        )
    assert not (tmp_path / "survey" / "pkd").exists()
    assert not (tmp_path / "survey" / BASELINE).exists()


def vars_to_argv(args):
    """The argv that parses back to ``args`` (the tests build them with :func:`_args`)."""
    argv = ["--config-file", args.config_file, "--methods", args.methods]
    argv += ["--seeds", str(args.seeds), "--iters", str(args.iters), "--output", args.output]
    argv += ["--eval-points", str(args.eval_points)]
    for g in args.grid:
        argv += ["--grid", g]
    return argv + list(args.opts)


def test_a_method_and_its_baseline_of_one_seed_start_from_the_same_student(tmp_path, distill_cfg):
    cfg = distill_cfg("configs/demo/distill_pkd.yaml")
    arms, _ = build_arms(cfg, parse_methods("pkd,chen"), {})
    trials, _, pending = plan_trials(arms, {n: 2 for n in arms}, str(tmp_path))
    assert len(pending) == 6

    def student_init(trial):
        seed_all_rng(trial.cfg.SEED)  # as train_config does before anything is built
        model = build_model(trial.cfg)
        student = getattr(model, "student", model)
        return {k: v.clone() for k, v in student.state_dict().items()}

    base0, base1 = student_init(trials[BASELINE, 0]), student_init(trials[BASELINE, 1])
    for name in ("pkd", "chen"):
        ours = student_init(trials[name, 0])
        assert ours.keys() == base0.keys()
        assert all(torch.equal(ours[k], base0[k]) for k in base0)
    assert not all(torch.equal(base0[k], base1[k]) for k in base0)


def test_the_schedule_scales_the_steps_and_sets_the_curve_points(distill_cfg):
    cfg = distill_cfg("configs/demo/distill_pkd.yaml", "SOLVER.MAX_ITER", 1000)
    cfg.defrost()
    cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = (750, 900), 100
    out = survey_schedule(cfg, 200, 4)
    assert out.SOLVER.MAX_ITER == 200 and tuple(out.SOLVER.STEPS) == (150, 180)
    assert out.SOLVER.WARMUP_ITERS == 50 and out.TEST.EVAL_PERIOD == 50
    same = survey_schedule(cfg, None, 2)
    assert same.SOLVER.MAX_ITER == 1000 and same.TEST.EVAL_PERIOD == 500


class Interrupt(Exception):
    pass


def _interrupting(after):
    """A trial function that trains ``after`` trials, then stops as a killed survey would."""
    done = []

    def fn(trial):
        if len(done) == after:
            raise Interrupt(f"stopped before {trial.name} seed {trial.seed}")
        done.append((trial.name, trial.seed))
        return train_trial(trial)

    return fn, done


def test_an_interrupted_survey_resumes_from_its_cache(tmp_path, teacher_weights, capsys):
    args = _args(tmp_path, teacher_weights)
    survey = plan_survey(args)
    assert list(survey.arms) == [BASELINE, "pkd", "cwd"]
    fn, done = _interrupting(1)
    with pytest.raises(Interrupt):
        survey.run(LocalBackend(1), fn)
    out = capsys.readouterr().out
    assert "baseline seed 0 done (1/3 trained), ETA" in out
    partial = (tmp_path / "survey" / "survey.md").read_text()
    assert "partial: trials still training" in partial and "1/3 trials finished" in partial
    assert json.loads((tmp_path / "survey" / "survey.json").read_text())["partial"] is True

    again = plan_survey(args)
    fn, done = _interrupting(10)
    data = again.run(LocalBackend(1), fn)
    assert done == [("pkd", 0), ("cwd", 0)]  # the baseline's run came from its cache
    assert "baseline seed 0: cached" in capsys.readouterr().out
    assert data["partial"] is False and set(data["rows"]) == {BASELINE, "pkd", "cwd"}
    report = (tmp_path / "survey" / "survey.md").read_text()
    assert "3/3 trials finished" in report and "## Ranking" in report
    assert "share of the baseline's schedule to reach its final AP" in report
    assert "\nRegime: " in report
    assert f"\n| pkd | {BASELINE} | " in report and f"\n| cwd | {BASELINE} | " in report
    assert (tmp_path / "survey" / "gains.png").is_file()
    # a changed suffix (pretrained weights every config starts from) changes every trial's key:
    # nothing is read back under the old one
    trial = plan_trials(again.arms, {n: 1 for n in again.arms}, again.output, "other")[0]
    assert load_run(trial["pkd", 0]) is None and load_run(trial[BASELINE, 0]) is None
    # a changed teacher changes the key of every trial that trains with it, not the baseline's
    trials, cached, pending = plan_trials(
        again.arms, {n: 1 for n in again.arms}, again.output, teacher_suffix="another teacher"
    )
    assert [(t.name, t.seed) for t in pending] == [("pkd", 0), ("cwd", 0)]
    assert set(cached) == {(BASELINE, 0)} and trials[BASELINE, 0].key == fingerprint(
        trials[BASELINE, 0].cfg
    )
    assert trials["pkd", 0].key == f"{fingerprint(trials['pkd', 0].cfg)}-another teacher"


def test_a_run_without_a_teacher_cached_under_a_teacher_s_key_reads_back_once_rekeyed(
    tmp_path, distill_cfg
):
    """A run of the student alone saved when every key joined the teacher's fingerprint reads
    back under the same teacher and is saved again under its own key, which no teacher changes."""
    cfg = distill_cfg("configs/demo/distill_pkd.yaml")
    arms, _ = build_arms(cfg, parse_methods("pkd"), {})
    assert not names_teacher(arms[BASELINE]) and names_teacher(arms["pkd"])
    trials, _, _ = plan_trials(arms, {n: 1 for n in arms}, str(tmp_path), "trunks", "teacher")
    base, pkd = trials[BASELINE, 0], trials["pkd", 0]
    own = fingerprint(base.cfg)
    assert base.key == f"{own}-trunks" and base.former_key == f"{own}-teacher-trunks"
    assert pkd.key == f"{fingerprint(pkd.cfg)}-teacher-trunks" and pkd.former_key == ""
    run = {"results": {}, "curve": [[2, 7.5]]}
    for trial in (base, pkd):
        os.makedirs(os.path.dirname(trial.cache))
        with open(trial.cache, "w") as f:  # as the runs were saved before
            json.dump({"key": f"{fingerprint(trial.cfg)}-teacher-trunks", "run": run}, f)
    _, cached, pending = plan_trials(arms, {n: 1 for n in arms}, str(tmp_path), "trunks", "teacher")
    assert cached == {(BASELINE, 0): run, ("pkd", 0): run} and pending == []
    assert json.loads(open(base.cache).read()) == {"key": base.key, "run": run}
    # saved again under its own key, the baseline stays cached under another teacher; pkd trains
    _, cached, pending = plan_trials(arms, {n: 1 for n in arms}, str(tmp_path), "trunks", "new")
    assert list(cached) == [(BASELINE, 0)] and [t.name for t in pending] == ["pkd"]
    # another start (trunks) is no former key of it: it trains again
    _, cached, _ = plan_trials(arms, {n: 1 for n in arms}, str(tmp_path), "other", "teacher")
    assert cached == {}


def test_the_report_ranks_and_writes_the_winner_as_a_config(tmp_path, distill_cfg):
    cfg = distill_cfg("configs/demo/distill_pkd.yaml")
    recipes, baseline_of = build_arms(cfg, parse_methods("pkd,cwd"), {})
    arms = {n: survey_schedule(r, 2, 1) for n, r in recipes.items()}
    survey = Survey(arms, baseline_of, 3, str(tmp_path), recipes=recipes)
    test_set = cfg.DATASETS.TEST[0]

    def run(ap):
        return {"results": {test_set: {"bbox": {"AP": ap}}}, "curve": [(2, ap)]}

    aps = {BASELINE: [10, 11, 12], "pkd": [12, 13.5, 14], "cwd": [9, 12, 12]}
    runs = {(n, s): run(ap) for n, values in aps.items() for s, ap in enumerate(values)}
    data = survey.write(runs, partial=False)
    # pkd: gains +2, +2.5, +2 -> mean 2.1667, interval above 0; cwd: -1, +1, 0 -> mean 0
    assert data["ranking"] == ["pkd", "cwd"] and data["best"] == "pkd"
    assert data["gains"]["pkd"]["gain"] == pytest.approx(13 / 6)
    best = (tmp_path / "best.yaml").read_text()
    assert "PKD:" in best and (tmp_path / "survey.md").read_text().count("Pick **pkd**") == 1
    # the recipe keeps the user's schedule, not the survey's
    assert f"MAX_ITER: {cfg.SOLVER.MAX_ITER}" in best
    # no interval above 0: no winner, no best.yaml
    runs.update({("pkd", s): run(ap) for s, ap in enumerate([9, 13, 12])})
    os.remove(tmp_path / "best.yaml")
    data = survey.write(runs, partial=False)
    assert data["best"] is None and not (tmp_path / "best.yaml").exists()
    assert "No method's paired gain" in (tmp_path / "survey.md").read_text()


def test_rank_puts_intervals_above_zero_first():
    from detkd.survey.report import paired_gains
    from detkd.survey.report import row as make_row

    def rows_of(values):
        return [
            make_row({"results": {"v": {"bbox": {"AP": v}}}}, s, "v") for s, v in enumerate(values)
        ]

    rows = {
        "b": rows_of([10, 10, 10]),
        "sure": rows_of([11, 11.2, 11.1]),  # +1.1, narrow
        "wide": rows_of([18, 8, 10]),  # +2, across 0
        "none": rows_of([]),
    }
    gains = paired_gains(rows, {"sure": "b", "wide": "b", "none": "b"})
    assert rank(gains) == ["sure", "wide", "none"]


def test_the_ray_backend_gives_the_local_backend_s_table(tmp_path, teacher_weights, shapes_data):
    """A real local Ray instance runs a tiny two-method survey: every trial ends with the weights
    the local backend's trial of the same seed ends with (one thread per trial on both), and the
    tables are the same."""
    pytest.importorskip("ray")
    tables, weights = {}, {}
    for name, backend in [
        ("local", LocalBackend(1, threads=1)),
        (
            "ray",
            RayBackend(
                "local",
                cpus_per_trial=1,
                initializer=register_shapes_datasets,
                initargs=(shapes_data, None, False),
                init_kwargs={"num_cpus": 2, "log_to_driver": False},
            ),
        ),
    ]:
        survey = plan_survey(_args(tmp_path / name, teacher_weights, iters=2))
        data = survey.run(backend)
        tables[name] = {n: [f"{r['AP']:.6f}" for r in rows] for n, rows in data["rows"].items()}
        assert set(tables[name]) == {BASELINE, "pkd", "cwd"}
        weights[name] = {
            arm: torch.load(
                os.path.join(survey.output, arm, "seed0", "model_final.pth"), weights_only=True
            )["model"]
            for arm in survey.arms
        }
    assert tables["ray"] == tables["local"]
    for arm, local in weights["local"].items():
        ray_weights = weights["ray"][arm]
        assert local.keys() == ray_weights.keys()
        assert all(torch.equal(local[k], ray_weights[k]) for k in local), arm
    # the trials moved: a distilled student's weights are not its initial ones
    assert not all(
        torch.equal(weights["local"]["pkd"][k], weights["local"]["cwd"][k])
        for k in weights["local"]["pkd"]
        if k in weights["local"]["cwd"]
    )


def test_the_last_quarter_gain_says_whether_a_schedule_has_converged():
    from detkd.survey.report import convergence, last_quarter_gain

    flat = [(299, 10.0), (599, 20.0), (899, 30.0), (1199, 32.0)]  # (32 - 30) / 32
    rising = [(299, 10.0), (599, 20.0), (899, 24.0), (1199, 32.0)]  # (32 - 24) / 32
    assert last_quarter_gain(flat) == pytest.approx(0.0625)
    assert last_quarter_gain(rising) == pytest.approx(0.25)
    assert last_quarter_gain([(1199, 5.0)]) != last_quarter_gain([(1199, 5.0)])  # NaN
    assert last_quarter_gain([(599, 0.0), (1199, 0.0)]) != 0.0  # NaN: no AP to share
    text = convergence({"baseline": [flat, flat], "fgd": [rising], "none": [[(9, 1.0)]]})
    assert "| baseline | 6.2 % (2 runs) | yes |" in text
    assert "| fgd | 25.0 % (1 runs) | no |" in text
    assert "| none | n/a" in text
    from detkd.survey.report import regime

    assert regime({"baseline": [flat, flat], "fgd": [rising]}, ["baseline"]) == (
        "Regime: **converged** (baseline gained 6.2 % of its final AP over the last quarter; "
        "converged: under 10 %)."
    )
    assert "**not converged** (baseline gained 6.2 %" in regime(
        {"baseline": [flat], "b2": [rising]}, ["baseline", "b2"]
    )  # every baseline has to be flat
    assert regime({"none": [[(9, 1.0)]]}, ["none"]).startswith("Regime: unknown")


def test_share_of_the_schedule_to_reach_the_baseline_by_hand():
    from detkd.survey.report import iteration_reaching, schedule_share

    base = [(400, 10.0), (800, 20.0), (1200, 24.0), (1600, 30.0)]
    fast = [(400, 20.0), (800, 30.0), (1200, 34.0), (1600, 36.0)]  # 30 at 800: 50 %
    between = [(400, 15.0), (800, 25.0), (1200, 33.0), (1600, 35.0)]  # 25 + 8 * 5/8: 1000
    slow = [(400, 5.0), (800, 10.0), (1200, 20.0), (1600, 28.0)]  # never 30
    assert iteration_reaching(fast, 30.0) == 800
    assert iteration_reaching(between, 30.0) == pytest.approx(1050.0)  # 800 + 400 * 5 / 8
    assert iteration_reaching(fast, 10.0) == pytest.approx(200.0)  # from AP 0 at iteration 0
    assert iteration_reaching(slow, 30.0) != iteration_reaching(slow, 30.0)  # NaN
    text = schedule_share(
        {"baseline": [base, base], "m": [fast, between], "s": [fast, slow], "x": [None, fast]},
        {"m": "baseline", "s": "baseline", "x": "baseline", "baseline": ""},
    )
    assert "| m | baseline | 58 % | 50 %, 66 % |" in text  # (800 + 1050) / 2 / 1600
    assert "| s | baseline | not reached in 1 of 2 seeds | 50 %, not reached |" in text
    assert "| x | baseline | 50 % | 50 % |" in text  # the seed without a run pairs with nothing
    assert "\n| baseline |" not in text  # a baseline is compared with nothing


def test_a_second_survey_into_a_held_folder_is_refused(tmp_path, teacher_weights):
    from detkd.engine.output_lock import OutputDirLocked, hold_output_dir

    survey = plan_survey(_args(tmp_path, teacher_weights))
    with hold_output_dir(survey.output, "a survey"):
        with pytest.raises(OutputDirLocked, match="held by another run"):
            survey.run(LocalBackend(1))
    assert not (tmp_path / "survey" / BASELINE).exists()


def test_the_teacher_is_evaluated_once_and_gives_the_gap(tmp_path, teacher_weights):
    from detkd.survey.runner import evaluate_teacher

    args = _args(tmp_path, teacher_weights, "--eval-teacher")
    survey = plan_survey(args)
    run = survey.teacher_run
    assert survey.test_set in run["results"] and run["params"] > 0
    # read back, not evaluated again, while the teacher's file is unchanged
    assert evaluate_teacher(load_config_of(args), survey.output) == json.loads(json.dumps(run))
    assert "teacher" in survey.rows({})


def load_config_of(args):
    from detkd.config import load_config

    return load_config(args.config_file, args.opts)


@pytest.mark.slow
def test_a_trial_of_several_processes_runs_under_launch(tmp_path, teacher_weights, shapes_data):
    """What a trial with several GPUs does, on the CPU: detectron2's launch with two processes
    (gloo), the first one's run read back; both processes train (the batch is split)."""
    survey = plan_survey(_args(tmp_path, teacher_weights, iters=2))
    trials, _, _ = plan_trials(survey.arms, {n: 1 for n in survey.arms}, survey.output)
    trial = trials["pkd", 0]
    run = train_trial(trial, 0, 2, register_shapes_datasets, (shapes_data, None, False))
    assert survey.test_set in run["results"] and run["params"] > 0
    assert os.path.isfile(os.path.join(trial.cfg.OUTPUT_DIR, "trial_run.json"))
    assert os.path.isfile(os.path.join(trial.cfg.OUTPUT_DIR, "model_final.pth"))


WORKER_SCRIPT = """
import os, sys, time
from detkd.survey.backends import LocalBackend
from sleeper import sleep_trial

if __name__ == "__main__":
    for _ in LocalBackend(2, 1).run(sleep_trial, [sys.argv[1] + "/a", sys.argv[1] + "/b"]):
        pass
"""

SLEEPER = """
import os, time

def sleep_trial(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
    return {}
"""


def test_a_killed_parent_leaves_no_local_worker_training(tmp_path):
    """A survey or demo killed (SIGKILL: no cleanup runs) takes its spawned trial workers with
    it: they would otherwise train on, and write into the run folders of the next survey."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "main.py").write_text(WORKER_SCRIPT)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    parent = subprocess.Popen([sys.executable, str(tmp_path / "main.py"), str(tmp_path)], env=env)
    pids = []
    deadline = time.time() + 120
    while len(pids) < 2 and time.time() < deadline:
        pids = [int((tmp_path / n).read_text() or 0) for n in "ab" if (tmp_path / n).exists()]
        pids = [p for p in pids if p]
        time.sleep(0.2)
    assert len(pids) == 2, "the two workers never started"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.time() + 20
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for pid in left:  # not to leave them sleeping when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent"
