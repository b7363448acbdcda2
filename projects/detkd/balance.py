"""The balance between the distillation terms and the detection loss: made visible, and optionally
set automatically.

Published weights were tuned for one resolution, one teacher and one data set; on others a term can
be a thousand times the detection loss, or nothing. Two tools, configured by
``MODEL.DISTILL.BALANCE``:

* :class:`BalanceReport` (a trainer hook, always on): after each step, from the loss values
  detectron2 has already logged (no extra device sync), each distillation term's ratio to the
  detection loss (the sum of the detector's own terms) goes to ``EventStorage`` as
  ``balance/<term>`` (``metrics.json``, TensorBoard); every ``LOG_PERIOD`` iterations ``log.txt``
  gets a summary line, and a warning names every term whose median ratio over that window stayed
  under ``LOW`` (1 %) or over ``HIGH`` (10x).
* :class:`LossBalancer` (a module of ``DistillRCNN``, active with ``AUTO``, on by default): over
  the first ``AUTO_ITERS`` training iterations it measures each method's terms against the
  detection loss (the mean of the ratio of the sum of a method's terms), then fixes one scale per
  method so that the ratio becomes its ``BALANCE_FACTOR`` times ``AUTO_TARGET``, freezes the
  scales, logs them, and keeps them and the measured ratios in the checkpoint (buffers), so a
  resumed run goes on with the same scales, or, resumed with another ``AUTO_TARGET`` or
  ``BALANCE_FACTOR``, with the scales of the new targets over the same measured ratios (logged).
  One scale per method, not per term, keeps a paper's own weighting between its terms (FGD's
  foreground, background, attention and global terms, a level against another). The measurement
  survives a resume mid-way. While it measures, the student trains with the scale measured so far
  (``AUTO_WINDOW "running"``: the same formula over the steps seen, so the scale is continuous when
  it freezes; with ``AUTO_WINDOW_MAX_RATIO`` m > 0, only scaled down to m times the detection
  loss), not at the raw published weights (``"raw"``), which can be 10^4 times the detection loss
  at another feature scale.
* :class:`RunawayGuard` (always on): at every step, before anything is updated, a non-finite loss,
  or in the first ``GUARD.ITERS`` iterations a distillation term over ``GUARD.MAX_RATIO`` times the
  detection loss, stops the run with :class:`RunawayTermError` naming the term, its ratio, the
  iteration and the keys that fix it.
"""

import logging
import math
import statistics
from collections import defaultdict, deque
from typing import Dict, Optional, Sequence

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import nn

from .utils import put_scalar

__all__ = [
    "balance_factors",
    "detection_terms",
    "method_names",
    "LossBalancer",
    "BalanceReport",
    "RunawayGuard",
    "RunawayTermError",
    "WINDOWS",
]

# how the automatic balance trains while it measures (MODEL.DISTILL.BALANCE.AUTO_WINDOW)
WINDOWS = ("running", "raw")

logger = logging.getLogger(__name__)


def detection_terms(loss_names, method_names: Sequence[str]):
    """The names among ``loss_names`` that are the detector's own (not ``loss_<method>_*``)."""
    prefixes = tuple(f"loss_{m}_" for m in method_names)
    return [k for k in loss_names if k.startswith("loss_") and not k.startswith(prefixes)]


def balance_factors(cfg, distillers) -> Dict[str, float]:
    """``{method name: its BALANCE_FACTOR}`` of the auto-balanced ``distillers``: the balance
    scales the method to ``BALANCE_FACTOR * MODEL.DISTILL.BALANCE.AUTO_TARGET`` times the
    detection loss. A factor that is not > 0 and finite is an error naming its key."""
    factors = {}
    for m in distillers:
        if not m.auto_balanced:
            continue
        block = cfg.MODEL.DISTILL[m.config_block]
        if "BALANCE_FACTOR" not in block:
            raise KeyError(
                f"MODEL.DISTILL.{m.config_block}.BALANCE_FACTOR is missing: build the config with "
                "detkd.add_detkd_config after the method is registered"
            )
        factor = float(block.BALANCE_FACTOR)
        if not (0 < factor < float("inf")):
            raise ValueError(
                f"MODEL.DISTILL.{m.config_block}.BALANCE_FACTOR must be > 0 and finite, "
                f"got {factor}"
            )
        factors[m.name] = factor
    return factors


def method_names(model) -> list:
    """The term prefixes (``Distiller.name``) of a (possibly DDP-wrapped) model's methods."""
    model = getattr(model, "module", model)
    return list(getattr(model, "distillers", {}))


class LossBalancer(nn.Module):
    """One scale per distillation method, measured over the first ``iters`` steps, then frozen.

    ``forward(losses)`` returns ``losses`` with every term of a method multiplied by the method's
    scale: while measuring, the scale measured so far (``window="running"``) or 1 (``"raw"``);
    always 1 when ``enabled`` is False. The scales, the sums measured
    so far and the count of measured steps are buffers named after the methods, so a checkpoint
    holds them and a resumed run goes on where it stopped; a checkpoint measured for other methods
    is not applied (measured again, with a warning).
    """

    def __init__(
        self,
        method_names: Sequence[str],
        enabled: bool = False,
        iters: int = 50,
        target: float = 1.0,
        unscaled: Sequence[str] = (),
        window: str = "running",
        window_max_ratio: float = 0.0,
        factors: Optional[Dict[str, float]] = None,
    ):
        """``method_names``: the methods it scales; ``unscaled``: methods whose terms keep their
        weights (:attr:`~detkd.distillers.Distiller.auto_balanced` False) but are not part of the
        detection loss either; ``factors``: a method's target is its factor times ``target``
        (``BALANCE_FACTOR`` of its block, :func:`balance_factors`; 1 where not given)."""
        super().__init__()
        if enabled and not (iters >= 1 and target > 0 and target < float("inf")):
            raise ValueError(
                f"MODEL.DISTILL.BALANCE: AUTO_ITERS must be >= 1 and AUTO_TARGET > 0 and "
                f"finite, got {iters} and {target}"
            )
        if window not in WINDOWS:
            raise ValueError(
                f"MODEL.DISTILL.BALANCE.AUTO_WINDOW must be one of {list(WINDOWS)}, got {window!r}"
            )
        if not (window_max_ratio >= 0 and window_max_ratio < float("inf")):
            raise ValueError(
                "MODEL.DISTILL.BALANCE.AUTO_WINDOW_MAX_RATIO must be >= 0 and finite, got "
                f"{window_max_ratio}"
            )
        self.window, self.window_max_ratio = window, float(window_max_ratio)
        self.method_names = list(method_names)
        self.unscaled_prefixes = tuple(f"loss_{m}_" for m in unscaled)
        self.enabled, self.iters, self.target = enabled, int(iters), float(target)
        factors = dict(factors or {})
        strays = sorted(set(factors) - set(self.method_names))
        if strays:
            raise ValueError(f"balance factors of methods it does not scale: {strays}")
        if not all(0 < f < float("inf") for f in factors.values()):
            raise ValueError(f"each method's balance factor must be > 0 and finite, got {factors}")
        # each method's target: its factor times the common one
        self.targets = {m: self.target * float(factors.get(m, 1.0)) for m in self.method_names}
        self.register_buffer("measured_iters", torch.zeros((), dtype=torch.long))
        for m in self.method_names:
            self.register_buffer(f"scale_{m}", torch.ones(()))
            self.register_buffer(f"ratio_sum_{m}", torch.zeros(()))
        self._seen = 0  # measured_iters, kept on the host: no device sync per step

    @property
    def frozen(self) -> bool:
        return self._seen >= self.iters

    def scale(self, method: str) -> torch.Tensor:
        return getattr(self, f"scale_{method}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        mine = [k for k in state_dict if k.startswith(prefix)]
        expected = {prefix + name for name, _ in self.named_buffers()}
        if mine and set(mine) != expected:
            logger.warning(
                "The checkpoint's automatic balance was measured for other methods (%s); "
                "measuring again for %s",
                sorted(k[len(prefix) :] for k in mine),
                self.method_names,
            )
            for k in mine:
                del state_dict[k]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._seen = int(self.measured_iters)
        if self.enabled and self.frozen and self.method_names:  # a baseline has none to scale
            self._restore_frozen()

    def _restore_frozen(self):
        """A checkpoint that has measured at least this config's ``AUTO_ITERS`` steps: each scale
        is this config's target over the ratio the checkpoint measured (the measurement is not
        repeated). That is the checkpoint's own scale unless the config asks for other targets
        (``AUTO_TARGET``, a ``BALANCE_FACTOR``), or the checkpoint was saved while it still
        measured; then the log names the scales that move. A ratio of 0 or a non-finite one is
        an error naming the methods."""
        loaded = [float(self.scale(m)) for m in self.method_names]
        try:
            recomputed = self._scales_from_sums()
        except FloatingPointError as e:
            raise FloatingPointError(
                f"{e} (loading a checkpoint; with MODEL.DISTILL.BALANCE.AUTO_ITERS over "
                f"{self._seen} the measurement goes on)"
            ) from e
        moved = [
            m
            for m, old, new in zip(self.method_names, loaded, recomputed)
            if not math.isclose(old, new, rel_tol=1e-5)
        ]
        for m, scale in zip(self.method_names, recomputed):
            self.scale(m).fill_(scale)
        if not moved:
            logger.info("Automatic balance restored from the checkpoint: %s", self.describe())
            return
        logger.info(
            "Automatic balance frozen on load from the ratios the checkpoint measured over %d "
            "iterations (%s) and this config's targets (%s): the scales of %s move from the "
            "checkpoint's (%s): %s",
            self._seen,
            ", ".join(f"{m} {float(r):.4g}" for m, r in zip(self.method_names, self._means())),
            ", ".join(f"{m} {t:.3g}" for m, t in self.targets.items()),
            moved,
            ", ".join(f"{m} x{s:.4g}" for m, s in zip(self.method_names, loaded)),
            self.describe(),
        )

    def describe(self) -> str:
        return ", ".join(f"{m} x{float(self.scale(m)):.4g}" for m in self.method_names)

    def forward(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if not (self.enabled and self.training and self.method_names):
            return losses
        method_of = {k: m for k in losses for m in self.method_names if k.startswith(f"loss_{m}_")}
        if self.frozen:
            return {
                k: v * self.scale(method_of[k]) if k in method_of else v for k, v in losses.items()
            }
        detection = sum(
            v.detach()
            for k, v in losses.items()
            if k.startswith("loss_")
            and k not in method_of
            and not k.startswith(self.unscaled_prefixes)
        )
        ratios = torch.stack(
            [
                sum(losses[k].detach() for k in method_of if method_of[k] == m)
                / detection.clamp(min=1e-12)
                for m in self.method_names
            ]
        )
        if comm.get_world_size() > 1:  # one set of ratios, so of scales, for every process
            torch.distributed.all_reduce(ratios)
            ratios /= comm.get_world_size()
        # a non-finite loss stops the step (the guard raises, nothing is updated): it must not
        # count as measured either (one device sync per step, only while measuring)
        if not bool(torch.isfinite(ratios).all()):
            return losses
        for m, ratio in zip(self.method_names, ratios):
            getattr(self, f"ratio_sum_{m}").add_(ratio)
        self._seen += 1
        self.measured_iters.fill_(self._seen)
        if self.frozen:
            self._freeze()
        if self.window == "raw":
            return losses
        if not self.frozen:
            self._running_scales()
        return {k: v * self.scale(method_of[k]) if k in method_of else v for k, v in losses.items()}

    def _running_scales(self):
        """While measuring: each method's scale from the ratios measured so far: the formula that
        freezes it (``window_max_ratio`` 0), or only down to ``window_max_ratio`` times the
        detection loss (never up); a method whose terms measured 0 so far keeps 1."""
        for m in self.method_names:
            mean = getattr(self, f"ratio_sum_{m}") / self._seen
            if self.window_max_ratio > 0:
                scale = (self.window_max_ratio / mean.clamp(min=1e-30)).clamp(max=1.0)
            else:
                scale = self.targets[m] / mean.clamp(min=1e-30)
            self.scale(m).copy_(torch.where(mean > 0, scale, torch.ones_like(mean)))

    def _means(self) -> torch.Tensor:
        """Each method's mean ratio to the detection loss over the steps measured. The sums are
        of ratios averaged over the processes: every process has the same."""
        sums = torch.stack([getattr(self, f"ratio_sum_{m}") for m in self.method_names])
        return sums / max(self._seen, 1)

    def _scales_from_sums(self) -> list:
        """Each method's frozen scale: its target over its mean measured ratio; a ratio of 0 or
        a non-finite one is an error naming the methods."""
        ratios = self._means().tolist()
        bad = [m for m, r in zip(self.method_names, ratios) if not (0 < r < float("inf"))]
        if bad:
            raise FloatingPointError(
                f"automatic balance: the terms of {bad} measured a ratio of 0 or a "
                f"non-finite one to the detection loss over {self._seen} iterations"
            )
        return [self.targets[m] / r for m, r in zip(self.method_names, ratios)]

    def _freeze(self):
        ratios = self._means().tolist()
        for m, scale in zip(self.method_names, self._scales_from_sums()):
            self.scale(m).fill_(scale)
            put_scalar(f"balance/scale/{m}", scale)
        logger.info(
            "Automatic balance after %d iterations (each method at its target times the detection "
            "loss: %s; the measured ratios were %s): %s",
            self.iters,
            ", ".join(f"{m} {t:.3g}" for m, t in self.targets.items()),
            ", ".join(f"{m} {r:.4g}" for m, r in zip(self.method_names, ratios)),
            self.describe(),
        )


class BalanceReport(HookBase):
    """Logs each distillation term's ratio to the detection loss; summary and warnings every
    ``period`` iterations (see the module docstring)."""

    def __init__(
        self, method_names: Sequence[str], period: int = 20, low: float = 0.01, high: float = 10.0
    ):
        self.method_names = list(method_names)
        self.period, self.low, self.high = int(period), float(low), float(high)
        self._window: Dict[str, deque] = defaultdict(lambda: deque(maxlen=max(self.period, 1)))

    def ratios(self, latest: Dict[str, float]) -> Optional[Dict[str, float]]:
        """``{term: term / detection loss}`` from the latest loss values; None without a detection
        loss."""
        detection = detection_terms(latest, self.method_names)
        total = sum(latest[k] for k in detection)
        if not detection or not total > 0:
            return None
        prefixes = tuple(f"loss_{m}_" for m in self.method_names)
        return {k: v / total for k, v in latest.items() if k.startswith(prefixes)}

    def after_step(self):
        if not self.method_names:
            return
        storage = self.trainer.storage
        latest = {k: v for k, (v, it) in storage.latest().items() if it == storage.iter}
        ratios = self.ratios(latest)
        if ratios is None:
            return
        for k, r in ratios.items():
            storage.put_scalar(f"balance/{k}", r, smoothing_hint=False)
            self._window[k].append(r)
        if self.period > 0 and (storage.iter + 1) % self.period == 0:
            self.report(storage.iter)

    def report(self, iteration: int):
        medians = {k: statistics.median(w) for k, w in self._window.items() if w}
        if not medians:
            return
        logger.info(
            "iter %d: distillation terms / detection loss (median of the last %d): %s",
            iteration,
            self.period,
            ", ".join(f"{k} {m:.3g}" for k, m in sorted(medians.items())),
        )
        low = sorted(k for k, m in medians.items() if m < self.low)
        high = sorted(k for k, m in medians.items() if m > self.high)
        if low:
            logger.warning(
                "iter %d: %s stayed under %.3g of the detection loss: they hardly train the "
                "student (raise their weights, or MODEL.DISTILL.BALANCE.AUTO)",
                iteration,
                low,
                self.low,
            )
        if high:
            logger.warning(
                "iter %d: %s stayed over %.3g times the detection loss: they drown the detector's "
                "own losses (lower their weights, or MODEL.DISTILL.BALANCE.AUTO)",
                iteration,
                high,
                self.high,
            )


class RunawayTermError(FloatingPointError):
    """A distillation term ran away (non-finite, or far over the detection loss): nothing was
    updated. A ``FloatingPointError``, as detectron2's own divergence errors."""


class RunawayGuard:
    """Checks one training step's losses before anything is updated (one device sync per step):
    a non-finite loss at any iteration, or in the first ``iters`` iterations a distillation term
    over ``max_ratio`` times the detection loss, raises :class:`RunawayTermError` naming the term,
    its value and ratio, the iteration, and the keys that fix it.

    ``blocks``: each method's name -> its config block (for the keys in the message)."""

    def __init__(self, blocks: Dict[str, str], iters: int = 100, max_ratio: float = 1000.0):
        if not (iters >= 0 and max_ratio > 0):
            raise ValueError(
                f"MODEL.DISTILL.GUARD: ITERS must be >= 0 and MAX_RATIO > 0, got {iters} and "
                f"{max_ratio}"
            )
        self.blocks = dict(blocks)
        self.iters, self.max_ratio = int(iters), float(max_ratio)

    def _fix(self, term: str) -> str:
        method = next((m for m in self.blocks if term.startswith(f"loss_{m}_")), None)
        block = f"MODEL.DISTILL.{self.blocks[method]}" if method else "MODEL.DISTILL"
        return (
            "set MODEL.DISTILL.BALANCE.AUTO True (each method at its BALANCE_FACTOR times "
            f"AUTO_TARGET of the detection loss), or lower the weights of {block}; "
            "SOLVER.GLOBAL_GRAD_CLIP_NORM bounds each step"
        )

    def __call__(self, losses: Dict[str, torch.Tensor], iteration: int) -> None:
        if not self.blocks or not losses:
            return
        names = list(losses)
        values = dict(zip(names, torch.stack([losses[k].detach().float() for k in names]).tolist()))
        detection = sum(values[k] for k in detection_terms(names, list(self.blocks)))
        prefixes = tuple(f"loss_{m}_" for m in self.blocks)
        terms = {k: v for k, v in values.items() if k.startswith(prefixes)}

        def ratio(v):
            return v / detection if detection > 0 else float("inf")

        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            distill_bad = [k for k in bad if k in terms]
            if distill_bad:
                term = distill_bad[0]
                what = f"the distillation term {term} is {values[term]}"
            else:  # a detection loss went first: name the largest distillation term beside it
                term = max(terms, key=lambda k: abs(values[k]), default=None)
                what = f"the detection loss {', '.join(bad)} is non-finite" + (
                    f"; the largest distillation term, {term}, is {values[term]:.4g} "
                    f"({ratio(values[term]):.3g}x the detection loss)"
                    if term
                    else ""
                )
            every = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            raise RunawayTermError(
                f"iteration {iteration}: {what}; nothing was updated (losses: {every}). To fix: "
                + (self._fix(term) if term else "lower SOLVER.BASE_LR")
            )
        if iteration >= self.iters:
            return
        over = {k: ratio(v) for k, v in terms.items() if ratio(v) > self.max_ratio}
        if over:
            term = max(over, key=over.get)
            raise RunawayTermError(
                f"iteration {iteration}: the distillation term {term} is {values[term]:.4g}, "
                f"{over[term]:.3g}x the detection loss ({detection:.4g}), over "
                f"MODEL.DISTILL.GUARD.MAX_RATIO {self.max_ratio:g} in the first GUARD.ITERS "
                f"{self.iters} iterations: it would wreck the student. Nothing was updated. To "
                f"fix: {self._fix(term)}"
            )
