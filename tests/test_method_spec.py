"""The declarative method spec: a method's ``params`` are its config block's keys and defaults,
its ``from_config`` and its constructor's checks (every error naming the key), for yaml and for
LazyConfig alike; its terms are spelled by ``term``."""

import math

import pytest
from conftest import make_cfg
from detectron2.modeling import build_model

from detkd.distillers import (
    CWDDistiller,
    Distiller,
    FGDDistiller,
    HintDistiller,
    MGDDistiller,
    Param,
    PKDDistiller,
    SoftCEDistiller,
    registered_distillers,
)
from detkd.distillers.params import (
    each,
    finite,
    integer,
    non_negative,
    one_of,
    one_per,
    positive,
    stages,
    unique,
    unit_interval,
)


def test_every_block_is_its_params_and_enabled():
    cfg = make_cfg("configs/demo/student.yaml")
    for cls in registered_distillers():
        block = cfg.MODEL.DISTILL[cls.config_block]
        assert cls.params, cls.__name__
        # BALANCE_FACTOR only where the automatic balance scales the method
        own_target = {"BALANCE_FACTOR"} if cls.auto_balanced else set()
        assert set(block) == {"ENABLED"} | own_target | {p.key for p in cls.params}, cls.__name__
        assert block.ENABLED is False
        if cls.auto_balanced:
            assert block.BALANCE_FACTOR == cls.balance_factor, cls.__name__
        for p in cls.params:
            expected = list(p.default) if isinstance(p.default, tuple) else p.default
            assert block[p.key] == expected, (cls.__name__, p.key)


def test_from_config_takes_each_key_of_the_block(distill_cfg):
    cfg = distill_cfg(
        "configs/demo/distill_cwd.yaml",
        "MODEL.DISTILL.CWD.TEMPERATURE",
        2.5,
        "MODEL.DISTILL.CWD.WEIGHT",
        3.0,
        "MODEL.DISTILL.CWD.IN_FEATURES",
        ["p3", "p4"],
    )
    args = CWDDistiller.from_config(cfg, {"p3": _Shape(64), "p4": _Shape(64)}, _teacher_shapes())
    assert args == dict(
        in_features=["p3", "p4"],
        temperature=2.5,
        weight=3.0,
        student_channels=[64, 64],
        teacher_channels=[128, 128],
    )
    # MGD's negative SEED is the run's
    cfg = distill_cfg("configs/demo/distill_mgd.yaml", "SEED", 7)
    assert MGDDistiller.config_args(cfg)["seed"] == 7
    cfg = distill_cfg("configs/demo/distill_mgd.yaml", "MODEL.DISTILL.MGD.SEED", 3, "SEED", 7)
    assert MGDDistiller.config_args(cfg)["seed"] == 3


class _Shape:
    def __init__(self, channels):
        self.channels = channels


def _teacher_shapes():
    return {f"p{k}": _Shape(128) for k in range(2, 7)}


def test_constructed_directly_the_defaults_are_the_declared_ones():
    """As LazyConfig builds it: arguments not given take the declared defaults."""
    pkd = PKDDistiller(in_features=["p3"], student_channels=[64], teacher_channels=[128])
    assert pkd.weight == 6.0 and pkd.in_features == ["p3"] and "p3" in pkd.align
    fgd = FGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4])
    assert fgd.weights == {"fg": 5e-5, "bg": 2.5e-5, "attention": 5e-5, "global": 5e-7}
    assert fgd.temperature == 0.5 and len(fgd.align) == 0  # FGDLoss aligns itself
    soft = SoftCEDistiller(targets=["rcn"])
    assert (soft.mu, soft.temperature, soft.background_weight, soft.weight) == (0.5, 1.0, 1.5, 1.0)
    assert soft.teacher_needs == frozenset({"rcn"})
    # the hint on standardized maps by default (docs/METHODS.md); normalize=False, the paper's
    # raw maps
    assert HintDistiller(student_channels=[4], teacher_channels=[4]).hints["res4"].normalize
    hint = HintDistiller(student_channels=[4], teacher_channels=[4], normalize=False)
    assert not hint.hints["res4"].normalize
    assert HintDistiller.balance_factor == 3.0
    with pytest.raises(TypeError, match=r"PKDDistiller has no parameter \['wieght'\]"):
        PKDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4], wieght=1.0)


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda: CWDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4],
                                 temperature=0.0),
            "MODEL.DISTILL.CWD.TEMPERATURE must be > 0 and finite, got 0.0",
        ),
        (
            lambda: PKDDistiller(in_features=["p3", "p3"], student_channels=[4, 4],
                                 teacher_channels=[4, 4]),
            r"MODEL.DISTILL.PKD.IN_FEATURES names \['p3'\] more than once",
        ),
        (
            lambda: MGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4],
                                 mask_ratio=1.5),
            r"MODEL.DISTILL.MGD.MASK_RATIO must be in \[0, 1\], got 1.5",
        ),
        (
            lambda: MGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4],
                                 seed=1.5),
            "MODEL.DISTILL.MGD.SEED must be an integer, got 1.5",
        ),
        (
            lambda: SoftCEDistiller(targets=[]),
            r"MODEL.DISTILL.SOFT_CE.TARGETS must be a non-empty subset of \['rpn', 'rcn'\]",
        ),
        (
            lambda: HintDistiller(student_features=["res4"], teacher_features=["res4", "p3"],
                                  student_channels=[4], teacher_channels=[4]),
            "MODEL.DISTILL.HINT.TEACHER_FEATURES must give one value per entry of "
            "STUDENT_FEATURES",
        ),
        (
            lambda: HintDistiller(student_channels=[4], teacher_channels=[4], norm="l3"),
            r"MODEL.DISTILL.HINT.NORM must be one of \['l2', 'l1'\], got 'l3'",
        ),
        (
            lambda: PKDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4],
                                 weight=float("inf")),
            "MODEL.DISTILL.PKD.WEIGHT must be a non-negative number and finite, got inf",
        ),
    ],
)  # fmt: skip
def test_each_check_names_the_key(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_checks_by_hand():
    for check, good, bad in [
        (non_negative, [0, 2.5], [-1e-9, math.nan, True, "1"]),
        (positive, [1e-9], [0, -1, math.inf]),
        (finite, [-3.0, 0], [math.inf, math.nan, None]),
        (unit_interval, [0.0, 1.0, 0.45], [-0.1, 1.01]),
        (integer, [0, -1], [1.0, True]),
        (stages, [["rpn"], ["rcn", "rpn"]], [[], ["roi"]]),
        (unique, [["p2", "p3"], []], [["p2", "p2"]]),
        (each(non_negative), [[0, 1]], [[1, -1]]),
        (one_of(1, 3), [1, 3], [2]),
    ]:
        for value in good:
            check("K", value, {})
        for value in bad:
            with pytest.raises(ValueError, match="^K "):
                check("K", value, {})
    one_per("levels", "LEVELS")("K", [1, 2], {"levels": ["a", "b"]})
    with pytest.raises(
        ValueError, match=r"one value per entry of LEVELS \(2: \['a', 'b'\]\), got 1"
    ):
        one_per("levels", "LEVELS")("K", [1], {"levels": ["a", "b"]})


def test_terms_are_spelled_from_the_name_and_an_attribute_cannot_hide_a_method():
    pkd = PKDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4])
    assert pkd.term("p3") == "loss_pkd_p3"
    assert (
        FGDDistiller(in_features=["p3"], student_channels=[4], teacher_channels=[4]).term(
            "fg", "p3"
        )
        == "loss_fgd_fg_p3"
    )

    class Clash(Distiller):
        config_block, name = "CLASH", "clash"
        params = (Param("TEACHER_FEATURES", ["p3"]),)

        def __init__(self, **params):
            super().__init__()
            self.set_params(params)

    with pytest.raises(TypeError, match="would hide its method teacher_features"):
        Clash()


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "MODEL.DISTILL.FGD.ALPHA",
            float("inf"),
            "FGD.ALPHA must be a non-negative number and finite",
        ),
        (
            "MODEL.DISTILL.HINT.WEIGHT",
            float("inf"),
            "HINT.WEIGHT must be a non-negative number and finite",
        ),
        (
            "MODEL.DISTILL.BOUNDED_REG.MARGIN",
            float("nan"),
            "BOUNDED_REG.MARGIN must be a finite number",
        ),
        ("MODEL.DISTILL.FGD.TEMPERATURE", float("inf"), "FGD.TEMPERATURE must be > 0 and finite"),
        (
            "MODEL.DISTILL.MSSD.WEIGHTS",
            [0.1, float("inf"), 0.1, 0.1],
            "MSSD.WEIGHTS must be a non-negative number",
        ),
        (
            "MODEL.DISTILL.HINT.STUDENT_FEATURES",
            ["res4", "res4"],
            r"HINT.STUDENT_FEATURES names \['res4'\] more " "than once",
        ),
        (
            "MODEL.DISTILL.FGD.IN_FEATURES",
            ["p3", "p3"],
            r"FGD.IN_FEATURES names \['p3'\] more than once",
        ),
    ],
)
def test_non_finite_weights_and_repeated_features_are_refused(distill_cfg, key, value, message):
    opts = [key, value]
    if key.startswith("MODEL.DISTILL.HINT.STUDENT"):
        opts += ["MODEL.DISTILL.HINT.TEACHER_FEATURES", ["res4", "res3"]]
    cfg = distill_cfg("configs/demo/distill_all.yaml", *opts)
    with pytest.raises(ValueError, match=message):
        build_model(cfg)
