"""Loss balance made visible and automatic, and the teacher sanity check of the first step."""

import json
import logging
import os
import sys
import types

import pytest
import torch
from conftest import REPO, short_run, train_batch
from detectron2.engine import hooks
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage

from detkd.balance import BalanceReport, LossBalancer, balance_factors, detection_terms
from detkd.batch import DistillBatch, SideOutputs
from detkd.checkpoint import Checkpointer
from detkd.distillers import FGDDistiller
from detkd.engine import DistillTrainer


# ----- visible ------------------------------------------------------------------------------------
class _Trainer:
    def __init__(self, storage):
        self.storage = storage


def test_detection_terms_are_the_detectors_own():
    names = ["loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_fgd_fg_p2", "loss_soft_ce_rcn", "lr"]
    assert detection_terms(names, ["fgd", "soft_ce"]) == [
        "loss_cls",
        "loss_box_reg",
        "loss_rpn_cls",
    ]


def test_report_logs_ratios_and_warns_by_name(detkd_log):
    report = BalanceReport(["fgd", "hint"], period=2, low=0.01, high=10.0)
    with EventStorage() as storage:
        report.trainer = _Trainer(storage)
        for it in range(2):
            storage.iter = it
            storage.put_scalars(
                loss_cls=1.0,
                loss_box_reg=3.0,
                loss_fgd_fg_p2=80.0,
                loss_hint_res4=0.02,
                loss_fgd_bg_p2=2.0,
                smoothing_hint=False,
            )
            report.after_step()
        assert storage.latest()["balance/loss_fgd_fg_p2"][0] == pytest.approx(20.0)
        assert storage.latest()["balance/loss_hint_res4"][0] == pytest.approx(0.005)
        assert storage.latest()["balance/loss_fgd_bg_p2"][0] == pytest.approx(0.5)
    records = [r for r in detkd_log.records if r.name.startswith("detkd.balance")]
    summary = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert summary and "loss_fgd_fg_p2 20" in summary[0]
    warnings = " ".join(r.getMessage() for r in records if r.levelno == logging.WARNING)
    assert "['loss_hint_res4'] stayed under 0.01" in warnings
    assert "['loss_fgd_fg_p2'] stayed over 10" in warnings
    assert "loss_fgd_bg_p2" not in warnings


@pytest.mark.slow
def test_ratios_reach_metrics_json_through_train_net(tmp_path, teacher_weights):
    sys.path.insert(0, REPO)
    import train_net

    out = tmp_path / "run"
    train_net.invoke(
        short_run(
            os.path.join(REPO, "configs/demo/distill_fgd.yaml"),
            out,
            1,  # one step: metrics.json smooths losses (a median) but not ratios
            "DATASETS.TEST",
            "()",
            "MODEL.DISTILL.TEACHER.WEIGHTS",
            teacher_weights,
            "MODEL.DISTILL.BALANCE.LOG_PERIOD",
            "1",
        )  # fmt: skip
    )
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    row = next(r for r in rows if "balance/loss_fgd_global_p3" in r)
    detection = sum(row[k] for k in ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"))
    assert row["balance/loss_fgd_global_p3"] == pytest.approx(
        row["loss_fgd_global_p3"] / detection, rel=1e-3
    )
    assert "distillation terms / detection loss" in (out / "log.txt").read_text()


def test_trainer_puts_the_report_before_the_writers(distill_cfg, tmp_path):
    cfg = distill_cfg("configs/demo/distill_fgd.yaml", "OUTPUT_DIR", str(tmp_path))
    trainer = DistillTrainer(cfg)
    kinds = [type(h) for h in trainer._hooks]
    assert kinds.index(BalanceReport) < kinds.index(hooks.PeriodicWriter)
    report = trainer._hooks[kinds.index(BalanceReport)]
    assert report.method_names == ["fgd"] and report.period == 20


# ----- automatic ----------------------------------------------------------------------------------
def _step(balancer, det, a, b):
    losses = {
        "loss_cls": torch.tensor(det / 2),
        "loss_box_reg": torch.tensor(det / 2),
        "loss_a_x": torch.tensor(a),
        "loss_b_y": torch.tensor(b / 2),
        "loss_b_z": torch.tensor(b / 2),
    }
    with EventStorage():
        return {k: v.item() for k, v in balancer(losses).items()}


def test_auto_balance_toy_by_hand_frozen_after_k():
    balancer = LossBalancer(["a", "b"], enabled=True, iters=2, target=0.5, window="raw").train()
    # measuring at the raw weights: losses unchanged; ratios a: 4/2 = 2 then 4/4 = 1;
    # b: 0.2/2 = 0.1 then 0.8/4 = 0.2
    assert _step(balancer, 2.0, 4.0, 0.2)["loss_a_x"] == 4.0 and not balancer.frozen
    assert _step(balancer, 4.0, 4.0, 0.8)["loss_b_y"] == pytest.approx(0.4)
    assert balancer.frozen
    # scale = target / mean ratio: a 0.5 / 1.5 = 1/3, b 0.5 / 0.15 = 10/3
    assert [balancer.scale("a").item(), balancer.scale("b").item()] == pytest.approx(
        [1 / 3, 10 / 3], rel=1e-5
    )
    out = _step(balancer, 2.0, 3.0, 0.6)
    assert out["loss_a_x"] == pytest.approx(1.0) and out["loss_b_y"] == pytest.approx(1.0)
    assert out["loss_b_z"] == pytest.approx(1.0) and out["loss_cls"] == 1.0  # detection untouched
    # frozen: later ratios change nothing
    _step(balancer, 100.0, 1.0, 1.0)
    assert [balancer.scale("a").item(), balancer.scale("b").item()] == pytest.approx(
        [1 / 3, 10 / 3], rel=1e-5
    )
    # restored from a state dict (a checkpoint): frozen with the same scales
    restored = LossBalancer(["a", "b"], enabled=True, iters=2, target=0.5, window="raw").train()
    restored.load_state_dict(balancer.state_dict())
    assert restored.frozen and [
        restored.scale("a").item(),
        restored.scale("b").item(),
    ] == pytest.approx([1 / 3, 10 / 3], rel=1e-5)
    assert _step(restored, 2.0, 3.0, 0.6)["loss_a_x"] == pytest.approx(1.0)


def test_a_frozen_balance_resumed_with_other_targets_follows_them(detkd_log):
    """Frozen at target 0.5 (ratios a 1.5, b 0.15: scales 1/3 and 10/3), resumed at target 1.0
    with b's factor 3: a 1 / 1.5 = 2/3, b 3 / 0.15 = 20, from the checkpoint's ratios, logged;
    resumed with AUTO_ITERS 1 (under the 2 it measured): the same scales, nothing logged as
    moved; saved while measuring and resumed with AUTO_ITERS 1: frozen on load."""

    def moved():  # one record per message (caplog can see a record twice)
        records = {id(r): r for r in detkd_log.records}.values()
        return [r.getMessage() for r in records if "move from" in r.getMessage()]

    balancer = LossBalancer(["a", "b"], enabled=True, iters=2, target=0.5, window="raw").train()
    _step(balancer, 2.0, 4.0, 0.2)
    _step(balancer, 4.0, 4.0, 0.8)
    assert balancer.frozen
    shorter = LossBalancer(["a", "b"], enabled=True, iters=1, target=0.5, window="raw").train()
    shorter.load_state_dict(balancer.state_dict())
    assert shorter.frozen and [shorter.scale(m).item() for m in "ab"] == pytest.approx(
        [1 / 3, 10 / 3], rel=1e-5
    )
    assert not moved()
    resumed = LossBalancer(
        ["a", "b"], enabled=True, iters=2, target=1.0, window="raw", factors={"b": 3.0}
    ).train()
    resumed.load_state_dict(balancer.state_dict())
    assert resumed.frozen and [resumed.scale(m).item() for m in "ab"] == pytest.approx(
        [2 / 3, 20.0], rel=1e-5
    )
    out = _step(resumed, 2.0, 3.0, 0.6)  # a: 3 * 2/3; b's half: 0.3 * 20
    assert out["loss_a_x"] == pytest.approx(2.0) and out["loss_b_y"] == pytest.approx(6.0)
    assert len(moved()) == 1 and "['a', 'b']" in moved()[0] and "b x3.333" in moved()[0]
    # a balancer with no method (a baseline student's) loads its checkpoint: nothing to restore
    empty = LossBalancer([], enabled=True, iters=1, target=1.0)
    empty.load_state_dict({"measured_iters": torch.tensor(1)})
    assert empty.frozen and not empty.method_names
    # the balance off: the checkpoint's buffers are loaded, no scale applied or moved
    off = LossBalancer(["a", "b"], enabled=False, iters=2, target=1.0).train()
    off.load_state_dict(balancer.state_dict())
    assert _step(off, 2.0, 3.0, 0.6)["loss_a_x"] == 3.0 and len(moved()) == 1
    # saved after 1 of 2 steps (raw window: scales still 1), resumed with AUTO_ITERS 1: frozen
    # on load at the ratio of the one step measured (a 2, b 0.1)
    first = LossBalancer(["a", "b"], enabled=True, iters=2, target=0.5, window="raw").train()
    _step(first, 2.0, 4.0, 0.2)
    early = LossBalancer(["a", "b"], enabled=True, iters=1, target=0.5, window="raw").train()
    early.load_state_dict(first.state_dict())
    assert early.frozen and [early.scale(m).item() for m in "ab"] == pytest.approx(
        [0.25, 5.0], rel=1e-5
    )
    # a method that measured 0 cannot freeze on load: the error says how to measure on
    silent = LossBalancer(["a", "b"], enabled=True, iters=2, target=0.5, window="raw").train()
    _step(silent, 2.0, 4.0, 0.0)
    with pytest.raises(
        FloatingPointError, match=r"\['b'\] measured a ratio of 0.*AUTO_ITERS over 1"
    ):
        LossBalancer(["a", "b"], enabled=True, iters=1, target=0.5).load_state_dict(
            silent.state_dict()
        )


def test_a_methods_factor_multiplies_the_common_target():
    balancer = LossBalancer(
        ["a", "b"], enabled=True, iters=2, target=0.5, window="raw", factors={"b": 6.0}
    ).train()
    assert balancer.targets == {"a": 0.5, "b": 3.0}
    _step(balancer, 2.0, 4.0, 0.2)
    _step(balancer, 4.0, 4.0, 0.8)
    # mean ratios a 1.5, b 0.15 (as above): a 0.5 / 1.5 = 1/3, b at 6 * 0.5: 3.0 / 0.15 = 20
    assert [balancer.scale("a").item(), balancer.scale("b").item()] == pytest.approx(
        [1 / 3, 20.0], rel=1e-5
    )
    out = _step(balancer, 2.0, 3.0, 0.6)
    assert out["loss_a_x"] == pytest.approx(1.0) and out["loss_b_y"] == pytest.approx(6.0)
    # the running window scales to each method's own target too: after one step b stands at 3x
    running = LossBalancer(["a", "b"], enabled=True, iters=5, target=0.5, factors={"b": 6.0})
    out = _step(running.train(), 2.0, 4.0, 0.2)
    assert out["loss_a_x"] / 2.0 == pytest.approx(0.5, rel=1e-5)
    assert (out["loss_b_y"] + out["loss_b_z"]) / 2.0 == pytest.approx(3.0, rel=1e-5)
    with pytest.raises(ValueError, match=r"does not scale: \['c'\]"):
        LossBalancer(["a"], enabled=True, factors={"c": 2.0})
    with pytest.raises(ValueError, match="must be > 0"):
        LossBalancer(["a"], enabled=True, factors={"a": 0.0})


def test_balance_factor_key_in_the_model_and_its_refusal(distill_cfg):
    # the running window at the target from the first step (the demo's caps it at 100x)
    opts = [
        "MODEL.DISTILL.BALANCE.AUTO_TARGET",
        0.25,
        "MODEL.DISTILL.BALANCE.AUTO_WINDOW_MAX_RATIO",
        0.0,
    ]
    cfg = distill_cfg("configs/demo/distill_cwd.yaml", *opts)
    assert cfg.MODEL.DISTILL.CWD.BALANCE_FACTOR == 3.0  # the shipped default (docs/METHODS.md)
    assert build_model(cfg).balancer.targets == {"cwd": 0.75}
    pkd = distill_cfg("configs/demo/distill_pkd.yaml", *opts)
    assert pkd.MODEL.DISTILL.PKD.BALANCE_FACTOR == 3.0  # PKD's shipped default too
    assert build_model(pkd).balancer.targets == {"pkd": 0.75}
    for config, block, name in (
        ("distill_fgd.yaml", "FGD", "fgd"),
        ("distill_mgd.yaml", "MGD", "mgd"),
        ("distill_chen.yaml", "HINT", "hint"),
    ):
        shipped = distill_cfg(f"configs/demo/{config}", *opts)
        assert shipped.MODEL.DISTILL[block].BALANCE_FACTOR == 3.0  # FGD's, MGD's, the hint's too
        assert build_model(shipped).balancer.targets == {name: 0.75}
    own = distill_cfg(
        "configs/demo/distill_cwd.yaml", *opts, "MODEL.DISTILL.CWD.BALANCE_FACTOR", 12.0
    )
    model = build_model(own).train()
    assert balance_factors(own, model.distillers.values()) == {"cwd": 12.0}
    assert model.balancer.targets == {"cwd": 3.0}
    # at the first step the running window puts CWD's terms at 12 * 0.25 = 3x the detection loss
    with EventStorage():
        losses = model(train_batch(own))
    cwd = sum(v.item() for k, v in losses.items() if k.startswith("loss_cwd_"))
    detection = sum(v.item() for k, v in losses.items() if not k.startswith("loss_cwd_"))
    assert cwd / detection == pytest.approx(3.0, rel=1e-4)
    # a block without the key (a config built before the method was registered) names the key
    missing = distill_cfg("configs/demo/distill_cwd.yaml")
    missing.defrost()
    del missing.MODEL.DISTILL.CWD["BALANCE_FACTOR"]
    with pytest.raises(KeyError, match=r"MODEL\.DISTILL\.CWD\.BALANCE_FACTOR is missing"):
        balance_factors(missing, model.distillers.values())
    for bad in (0.0, -1.0):
        cfg = distill_cfg("configs/demo/distill_cwd.yaml", "MODEL.DISTILL.CWD.BALANCE_FACTOR", bad)
        with pytest.raises(ValueError, match=r"MODEL\.DISTILL\.CWD\.BALANCE_FACTOR must be > 0"):
            build_model(cfg)


def test_built_without_a_balancer_each_method_takes_its_class_factor(distill_cfg):
    """As LazyConfig builds DistillRCNN (no balancer given): each method's target is its
    ``balance_factor`` times the default target 1.0."""
    from detkd.modeling import DistillRCNN

    args = DistillRCNN.from_config(distill_cfg("configs/demo/distill_cwd.yaml"))
    del args["balancer"]
    assert DistillRCNN(**args).balancer.targets == {"cwd": 3.0}  # CWDDistiller's own 3.0
    (cwd,) = args["distillers"]
    cwd.balance_factor = 5.0  # as a class declaring 5.0 would
    assert DistillRCNN(**args).balancer.targets == {"cwd": 5.0}


def test_a_method_cannot_declare_a_key_every_block_has(monkeypatch):
    from detkd.distillers import DISTILLER_REGISTRY, PKDDistiller, registered_distillers
    from detkd.distillers.params import Param

    class Clashing(PKDDistiller):
        config_block, name = "CLASHING", "clashing"
        params = (*PKDDistiller.params, Param("BALANCE_FACTOR", 2.0))

    monkeypatch.setitem(DISTILLER_REGISTRY._obj_map, "Clashing", Clashing)
    with pytest.raises(TypeError, match=r"Clashing: \['BALANCE_FACTOR'\] are keys every block"):
        registered_distillers()


def test_the_running_window_trains_with_the_scale_measured_so_far():
    """The default window: each measured step already scales the terms by target / (mean ratio so
    far), so the terms stand at the target from the first step; the frozen scales are the raw
    window's (the same formula over all the window's steps)."""
    balancer = LossBalancer(["a", "b"], enabled=True, iters=2, target=0.5).train()
    assert balancer.window == "running"
    # step 1: ratios a 4 / 2 = 2, b 0.2 / 2 = 0.1 -> scales 0.25 and 5
    first = _step(balancer, 2.0, 4.0, 0.2)
    assert first["loss_a_x"] == pytest.approx(1.0) and first["loss_b_y"] == pytest.approx(0.5)
    assert first["loss_cls"] == 1.0 and not balancer.frozen
    # step 2: ratios 1 and 0.2 -> means 1.5 and 0.15: frozen at 1/3 and 10/3, applied at once
    second = _step(balancer, 4.0, 4.0, 0.8)
    assert balancer.frozen
    assert second["loss_a_x"] == pytest.approx(4 / 3) and second["loss_b_y"] == pytest.approx(4 / 3)
    assert [balancer.scale("a").item(), balancer.scale("b").item()] == pytest.approx(
        [1 / 3, 10 / 3], rel=1e-5
    )
    # a term that measured 0 so far is left as it is (no 0 * inf)
    zero = LossBalancer(["a"], enabled=True, iters=3, target=1.0).train()
    assert _step(zero, 2.0, 0.0, 0.0)["loss_a_x"] == 0.0 and zero.scale("a").item() == 1.0
    with pytest.raises(ValueError, match="AUTO_WINDOW"):
        LossBalancer(["a"], enabled=True, window="scaled")


def test_a_window_max_ratio_only_scales_down():
    """AUTO_WINDOW_MAX_RATIO 1.5: while measuring a method is held under 1.5x the detection loss
    (a at 2x is scaled by 1.5 / 2), one under it keeps its weight (b at 0.1x, not raised); the
    frozen scales are the target's as always."""
    balancer = LossBalancer(
        ["a", "b"], enabled=True, iters=2, target=0.5, window_max_ratio=1.5
    ).train()
    first = _step(balancer, 2.0, 4.0, 0.2)
    assert first["loss_a_x"] == pytest.approx(3.0) and first["loss_b_y"] == pytest.approx(0.1)
    _step(balancer, 4.0, 4.0, 0.8)
    assert balancer.frozen and [balancer.scale("a").item(), balancer.scale("b").item()] == (
        pytest.approx([1 / 3, 10 / 3], rel=1e-5)
    )
    with pytest.raises(ValueError, match="AUTO_WINDOW_MAX_RATIO"):
        LossBalancer(["a"], enabled=True, window_max_ratio=-1.0)


def test_auto_balance_leaves_unscaled_methods_out_of_both_sides():
    """A method the balance does not scale (``unscaled``) keeps its terms, and they are not
    counted in the detection loss either: a's ratio is 4 / 2 (the detection loss alone), not
    4 / (2 + 0.2), and b's terms never move."""
    balancer = LossBalancer(["a"], enabled=True, iters=1, target=1.0, unscaled=["b"]).train()
    _step(balancer, 2.0, 4.0, 0.2)
    assert balancer.frozen and balancer.scale("a").item() == pytest.approx(0.5)
    out = _step(balancer, 2.0, 4.0, 0.2)
    assert out["loss_a_x"] == pytest.approx(2.0) and out["loss_b_y"] == pytest.approx(0.1)
    assert not hasattr(balancer, "scale_b")


def test_chen_keeps_its_soft_ce_and_bounded_regression_weights(distill_cfg):
    """Soft CE and bounded regression rework the detector's own losses: AUTO scales only the
    hint, and measures it against the detector's terms alone."""
    cfg = distill_cfg("configs/demo/distill_chen.yaml", "MODEL.DISTILL.BALANCE.AUTO", True)
    model = build_model(cfg)
    assert model.balancer.method_names == ["hint"]
    assert model.balancer.unscaled_prefixes == ("loss_soft_ce_", "loss_bounded_reg_")


def test_a_non_finite_step_is_not_measured():
    """The trainer raises on a non-finite loss and updates nothing: the balance must not count
    that step either (the test of the trainer checks the whole state dict)."""
    balancer = LossBalancer(["a"], enabled=True, iters=2, target=1.0, unscaled=["b"]).train()
    _step(balancer, 2.0, float("inf"), 0.2)
    assert balancer.measured_iters.item() == 0 and balancer.ratio_sum_a.item() == 0.0
    _step(balancer, 2.0, 4.0, 0.2)
    _step(balancer, 2.0, 2.0, 0.2)
    # ratios 4 / 2 and 2 / 2: scale 1 / 1.5
    assert balancer.frozen and balancer.scale("a").item() == pytest.approx(1 / 1.5)


def test_auto_balance_off_and_refusals():
    off = LossBalancer(["a"], enabled=False).train()
    assert _step(off, 2.0, 4.0, 0.2)["loss_a_x"] == 4.0 and off.scale("a").item() == 1.0
    with pytest.raises(ValueError, match="AUTO_TARGET"):
        LossBalancer(["a"], enabled=True, iters=5, target=0.0)
    dead = LossBalancer(["a", "b"], enabled=True, iters=1).train()
    with pytest.raises(FloatingPointError, match=r"\['b'\] measured a ratio of 0"):
        _step(dead, 2.0, 1.0, 0.0)


def test_auto_balance_in_the_model_and_on_resume(distill_cfg, tmp_path):
    opts = [
        "MODEL.DISTILL.BALANCE.AUTO",
        True,
        "MODEL.DISTILL.BALANCE.AUTO_ITERS",
        2,
        "MODEL.DISTILL.BALANCE.AUTO_TARGET",
        0.25,
        # FGD's paper form at factor 1 (its defaults: standardized maps at 3x), whose raw terms
        # the random teacher puts far above the detection loss
        "MODEL.DISTILL.FGD.NORMALIZE",
        False,
        "MODEL.DISTILL.FGD.BALANCE_FACTOR",
        1.0,
    ]
    data = train_batch(distill_cfg("configs/demo/distill_fgd.yaml", *opts))
    # the default running window: FGD's terms stand at the target from the first step; the demo
    # students' (AUTO_WINDOW_MAX_RATIO 100) hold them at 100x (the random teacher puts them at
    # ~10^5x)
    for max_ratio, expected in ((0.0, 0.25), (100.0, 100.0)):
        window = ["MODEL.DISTILL.BALANCE.AUTO_WINDOW_MAX_RATIO", max_ratio]
        running = build_model(distill_cfg("configs/demo/distill_fgd.yaml", *opts, *window))
        with EventStorage():
            losses = running.train()(data)
        fgd = sum(v.item() for k, v in losses.items() if k.startswith("loss_fgd_"))
        detection = sum(v.item() for k, v in losses.items() if not k.startswith("loss_fgd_"))
        assert fgd / detection == pytest.approx(expected, rel=1e-4)
    # measured at the raw weights: the scale is target / mean raw ratio (the random teacher puts
    # FGD at ~10^5 times the detection loss there: the runaway guard is off)
    cfg = distill_cfg(
        "configs/demo/distill_fgd.yaml",
        *opts,
        "MODEL.DISTILL.BALANCE.AUTO_WINDOW",
        "raw",
        "MODEL.DISTILL.GUARD.ITERS",
        0,
    )
    model = build_model(cfg).train()
    ratios = []
    with EventStorage():
        for _ in range(2):
            losses = model(data)
            fgd = sum(v.item() for k, v in losses.items() if k.startswith("loss_fgd_"))
            ratios.append(
                fgd / sum(v.item() for k, v in losses.items() if not k.startswith("loss_fgd_"))
            )
        assert model.balancer.frozen
        scale = model.balancer.scale("fgd").item()
        assert scale == pytest.approx(0.25 / (sum(ratios) / 2), rel=1e-3)
        torch.manual_seed(0)
        scaled = model(data)
    Checkpointer(model, str(tmp_path)).save("balanced")
    resumed = build_model(cfg).train()
    Checkpointer(resumed, str(tmp_path)).load(str(tmp_path / "balanced.pth"))
    assert resumed.balancer.frozen and resumed.balancer.scale("fgd").item() == pytest.approx(scale)
    with EventStorage():
        torch.manual_seed(0)
        again = resumed(data)
    for k in scaled:
        assert again[k].item() == pytest.approx(scaled[k].item(), rel=1e-4), k


def test_area_normalization_divides_summed_feature_terms_by_hw():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 4, 6, 5, generator=g), torch.randn(2, 4, 6, 5, generator=g)
    batch = DistillBatch(
        student=SideOutputs({"p3": s}),
        teacher=SideOutputs({"p3": t}),
        gt_boxes=[torch.tensor([[0.0, 0.0, 16.0, 16.0]])] * 2,
        image_sizes=[(48, 40)] * 2,
        strides={"p3": 8.0},
    )
    fgd = FGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4])
    plain = fgd(batch)
    batch.normalize_by_area = True
    normalized = fgd(batch)
    for k in plain:
        assert normalized[k].item() == pytest.approx(plain[k].item() / 30, rel=1e-5), k


# ----- teacher sanity check -----------------------------------------------------------------------
def _teacher_that_finds(model, classes_shift=0):
    """Replace the teacher's inference by one that returns the batch's GT (a perfect teacher), with
    its classes shifted by ``classes_shift`` (a teacher of another class order)."""

    def inference(batched_inputs, do_postprocess=True):
        out = []
        for x in batched_inputs:
            inst = Instances(x["instances"].image_size)
            inst.pred_boxes = x["instances"].gt_boxes
            inst.pred_classes = (x["instances"].gt_classes + classes_shift) % 5
            inst.scores = torch.ones(len(inst.pred_boxes))
            out.append(inst)
        return out

    model.teacher.inference = inference


@pytest.mark.parametrize(
    "teacher,passes", [("untrained", False), ("perfect", True), ("other classes", False)]
)
def test_teacher_sanity_check_before_the_first_step(distill_cfg, detkd_log, teacher, passes):
    """DistillTrainer's hook checks the teacher on the first training images with a box, before
    the first step; training steps do not check it again."""
    from detkd.engine.teacher_check import sanity_check_of

    cfg = distill_cfg("configs/demo/distill_fgd.yaml")
    model = build_model(cfg).train()
    if teacher != "untrained":
        _teacher_that_finds(model, classes_shift=0 if teacher == "perfect" else 1)
    check = sanity_check_of(cfg)
    check.trainer = types.SimpleNamespace(model=model)
    with EventStorage() as storage:
        check.before_train()
        recall = storage.latest()["teacher/sanity_recall"][0]
        model(train_batch(cfg))  # a training step: not checked again
    # one record per message (caplog sees a record twice where "detkd" still propagates)
    records = list({id(r): r for r in detkd_log.records}.values())
    messages = [r for r in records if "sanity check" in r.getMessage().lower()]
    assert len(messages) == 1
    if passes:
        assert recall == 1.0 and messages[0].levelno == logging.INFO
    else:
        assert recall < 0.3 and messages[0].levelno == logging.WARNING
        assert "TEACHER SANITY CHECK FAILED" in messages[0].getMessage()


def test_auto_balance_resumed_mid_measurement_equals_uninterrupted(detkd_log):
    whole = LossBalancer(["a", "b"], enabled=True, iters=2, target=0.5).train()
    _step(whole, 2.0, 4.0, 0.2)
    half = LossBalancer(["a", "b"], enabled=True, iters=2, target=0.5).train()
    half.load_state_dict(whole.state_dict())  # a checkpoint after the first measured step
    for balancer in (whole, half):
        _step(balancer, 4.0, 4.0, 0.8)
    assert half.frozen and [half.scale(m).item() for m in "ab"] == pytest.approx(
        [1 / 3, 10 / 3], rel=1e-5
    )
    # a checkpoint measured for other methods is not applied: measured again, with a warning
    other = LossBalancer(["a", "c"], enabled=True, iters=2, target=0.5).train()
    other.load_state_dict(whole.state_dict(), strict=False)
    assert not other.frozen and other.scale("a").item() == 1.0
    assert any("measured for other methods" in r.getMessage() for r in detkd_log.records)
