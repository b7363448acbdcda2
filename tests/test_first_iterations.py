"""No distillation term can wreck the first iterations: every method trains to finite losses with a
teacher whose features are 100x or 0.01x their scale, its terms at the balance's target after the
window; a runaway term stops the run naming itself; the distillation schedule."""

import math
import os

import pytest
import torch
from conftest import TEACHER_YAML, make_cfg, train_batch
from detectron2.engine import HookBase
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from detkd import demo
from detkd.balance import RunawayGuard, RunawayTermError
from detkd.engine import DistillTrainer
from detkd.schedule import DistillSchedule

# every survey config of the demo (each method alone, the combinations, `all`)
SURVEY = {name: e.config for name, e in demo.survey_experiments().items()}
ITERS, WINDOW = 50, 20  # the demo students' AUTO_ITERS is 20


class _Record(HookBase):
    def __init__(self):
        self.rows = []

    def after_step(self):
        latest = self.trainer.storage.latest()
        self.rows.append({k: v for k, (v, it) in latest.items() if it == self.trainer.iter})


def _scaled_teacher(model, scale):
    """Multiply every feature map the teacher's backbone computes (its bottom-up maps, and so its
    FPN maps) by ``scale``."""

    def hook(module, inputs, outputs):
        return {k: v * scale for k, v in outputs.items()}

    model.teacher.backbone.bottom_up.register_forward_hook(hook)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [100.0, 0.01])
@pytest.mark.parametrize("method", sorted(SURVEY))
def test_every_method_stays_finite_at_any_teacher_scale(method, scale, tmp_path, teacher_weights):
    cfg = make_cfg(
        os.path.join("configs/demo", SURVEY[method]),
        "MODEL.DISTILL.TEACHER.CONFIG_FILE",
        TEACHER_YAML,
        "MODEL.DISTILL.TEACHER.WEIGHTS",
        teacher_weights,
        "SOLVER.MAX_ITER",
        ITERS,
        "SOLVER.STEPS",
        (),
        "TEST.EVAL_PERIOD",
        0,
        "DATASETS.TEST",
        (),
        "OUTPUT_DIR",
        str(tmp_path),
    )
    assert cfg.MODEL.DISTILL.BALANCE.AUTO and cfg.MODEL.DISTILL.BALANCE.AUTO_ITERS == WINDOW
    trainer = DistillTrainer(cfg)
    _scaled_teacher(trainer.model, scale)
    record = _Record()
    trainer.register_hooks([record])
    trainer.resume_or_load(resume=False)
    trainer.train()
    rows = record.rows
    assert len(rows) == ITERS
    for row in rows:
        losses = {k: v for k, v in row.items() if k.startswith("loss_")}
        assert losses and all(math.isfinite(v) for v in losses.values()), row
    balancer = trainer.model.balancer
    assert balancer.frozen
    # after the window each balanced method's terms stand at its target (its BALANCE_FACTOR times
    # AUTO_TARGET 1x the detection loss: CWD, PKD, FGD, MGD and the hint 3x): the median over the
    # rest of the run of (its terms / detection loss)
    assert cfg.MODEL.DISTILL.BALANCE.AUTO_TARGET == 1.0
    for name in balancer.method_names:
        target = balancer.targets[name]
        assert target == (3.0 if name in ("cwd", "pkd", "fgd", "mgd", "hint") else 1.0), name
        ratios = sorted(
            sum(v for k, v in row.items() if k.startswith(f"balance/loss_{name}_"))
            for row in rows[WINDOW:]
        )
        median = ratios[len(ratios) // 2]
        assert target / 3 < median < target * 3, (name, median)


def test_a_runaway_term_stops_the_first_iteration_naming_itself(distill_cfg):
    # FGD's foreground term at 10^4 times its published weight, trained at the raw weights on the
    # raw maps (the paper's form; standardized maps, the default, keep the term small)
    cfg = distill_cfg(
        "configs/demo/distill_fgd.yaml",
        "MODEL.DISTILL.FGD.NORMALIZE",
        False,
        "MODEL.DISTILL.BALANCE.AUTO",
        False,
        "MODEL.DISTILL.FGD.ALPHA",
        5e-5 * 1e4,
    )
    model = build_model(cfg).train()
    before = {k: v.clone() for k, v in model.named_parameters()}
    with EventStorage(start_iter=3):
        with pytest.raises(RunawayTermError) as e:
            model(train_batch(cfg))
    message = str(e.value)
    assert message.startswith("iteration 3: the distillation term loss_fgd_fg_")
    assert "x the detection loss" in message and "MAX_RATIO 1000" in message
    assert "MODEL.DISTILL.BALANCE.AUTO True" in message and "MODEL.DISTILL.FGD" in message
    assert isinstance(e.value, FloatingPointError)  # what detectron2's divergence errors are
    # raised in the forward, before the backward and the optimizer's step
    assert all(p.grad is None and torch.equal(before[k], p) for k, p in model.named_parameters())


def _losses(**values):
    return {k: torch.tensor(v) for k, v in values.items()}


def test_the_guard_by_hand():
    guard = RunawayGuard({"fgd": "FGD", "hint": "HINT"}, iters=10, max_ratio=1000.0)
    # detection 2.0: fgd 1500 + 100 is 800x, the hint 1x: nothing to say
    guard(_losses(loss_cls=1.0, loss_box_reg=1.0, loss_fgd_fg_p2=1500.0, loss_hint_res4=2.0), 0)
    with pytest.raises(RunawayTermError, match=r"iteration 9: .*loss_fgd_fg_p2 is 2002, 1e\+03x"):
        guard(_losses(loss_cls=1.0, loss_box_reg=1.0, loss_fgd_fg_p2=2002.0), 9)
    # after the first ITERS iterations a large ratio is the balance report's to warn about
    guard(_losses(loss_cls=1.0, loss_box_reg=1.0, loss_fgd_fg_p2=2e6), 10)
    # a non-finite loss at any iteration: the term named, every loss listed
    with pytest.raises(RunawayTermError) as e:
        guard(_losses(loss_cls=1.0, loss_hint_res4=float("inf")), 5000)
    assert "the distillation term loss_hint_res4 is inf" in str(e.value)
    assert "loss_cls 1" in str(e.value) and "MODEL.DISTILL.HINT" in str(e.value)
    # a detection loss first: the largest distillation term is named beside it
    with pytest.raises(RunawayTermError) as e:
        guard(_losses(loss_cls=float("nan"), loss_fgd_fg_p2=5.0, loss_hint_res4=7.0), 7)
    assert "the detection loss loss_cls is non-finite" in str(e.value)
    assert "the largest distillation term, loss_hint_res4, is 7" in str(e.value)
    with pytest.raises(ValueError, match="GUARD"):
        RunawayGuard({"fgd": "FGD"}, iters=-1)


def test_the_schedule_by_hand():
    s = DistillSchedule(warmup_iters=4, stop_iter=10)
    assert [s.factor(i) for i in (0, 1, 3, 4, 9, 10, 50)] == [0.25, 0.5, 1.0, 1.0, 1.0, 0.0, 0.0]
    # Chen's (1 - mu) = 0.5 on the hard loss moves towards 1 with the factor
    assert [s.scaled_hard_loss(0.5, i) for i in (0, 3, 10)] == [0.875, 0.5, 1.0]
    assert not DistillSchedule().active and DistillSchedule().factor(0) == 1.0
    with pytest.raises(ValueError, match="STOP_ITER"):
        DistillSchedule(warmup_iters=20, stop_iter=10)


def test_every_method_obeys_the_schedule_in_the_model(distill_cfg):
    # at the raw weights (the guard is off: on raw maps the tests' random teacher puts the hint at
    # ~10^5x the detection loss)
    opts = ["MODEL.DISTILL.BALANCE.AUTO", False, "MODEL.DISTILL.GUARD.ITERS", 0]
    opts += ["MODEL.DISTILL.SCHEDULE.WARMUP_ITERS", 4]
    cfg = distill_cfg("configs/demo/distill_chen.yaml", *opts)
    plain = build_model(distill_cfg("configs/demo/distill_chen.yaml", *opts[:4]))
    model = build_model(cfg).train()
    model.load_state_dict(plain.state_dict())
    plain.train()
    data = train_batch(cfg)
    for iteration, factor in ((0, 0.25), (2, 0.75), (7, 1.0)):
        outs = []
        for m in (plain, model):
            with EventStorage(start_iter=iteration) as storage:
                torch.manual_seed(0)
                outs.append({k: v.item() for k, v in m(data).items()})
        full, scheduled = outs
        for k, v in full.items():
            if k.startswith(("loss_hint_", "loss_soft_ce_", "loss_bounded_reg_")):
                assert scheduled[k] == pytest.approx(factor * v, rel=1e-5), k
        # the hard classification loss: (1 - mu) moved towards 1 by the factor
        mu = cfg.MODEL.DISTILL.SOFT_CE.MU
        if "loss_cls" in full and mu:
            raw = full["loss_cls"] / (1 - mu)
            assert scheduled["loss_cls"] == pytest.approx(raw * (1 + factor * -mu), rel=1e-5)
        logged = storage.latest().get("distill/schedule")
        assert logged is not None and logged[0] == pytest.approx(factor)
