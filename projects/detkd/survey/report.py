"""The figures of a survey (and of the demo): one row per run (with its seed), the table (mean +-
std over seeds), each method against its baseline paired by seed (mean gain, its 95 % Student-t
interval, share of the teacher-baseline gap closed) and, where a goal is set, whether it is
met."""

import math
import statistics
from typing import Dict, List, NamedTuple, Optional, Tuple

COLUMNS = [
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "VOC_AP50",
    "train_s",
    "params_M",
    "ms_per_image",
]


def row(run: Dict, seed: Optional[int], test_set: str, voc_set: str = "") -> Dict:
    """The table's figures of one run (its ``seed``: the config's ``SEED``): the AP columns from
    its results on ``test_set`` (its evaluator's ``bbox`` figures), ``VOC_AP50`` from
    ``voc_set``'s (NaN without one)."""
    coco = run["results"].get(test_set, run["results"]).get("bbox", {})
    voc = run["results"].get(voc_set, {}).get("bbox", {})
    nan = float("nan")
    return {
        "seed": seed,
        "AP": coco.get("AP", nan),
        "AP50": coco.get("AP50", nan),
        "AP75": coco.get("AP75", nan),
        "APs": coco.get("APs", nan),
        "APm": coco.get("APm", nan),
        "APl": coco.get("APl", nan),
        "VOC_AP50": voc.get("AP50", nan),
        "train_s": run.get("train_seconds", nan),
        # a diverged run saved no model (its ``params`` is 0): its size is unknown, not zero
        "params_M": nan if run.get("diverged") else run.get("params", nan) / 1e6,
        "ms_per_image": run.get("ms_per_image", nan),
        "diverged": bool(run.get("diverged", False)),
    }


def mean_std(values: List[float]):
    """Mean and standard deviation of the values that are not NaN (0 for one value)."""
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_table(rows: Dict[str, List[Dict]]) -> str:
    head = "| method | seeds | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, runs in rows.items():
        cells = []
        for c in COLUMNS:
            m, s = mean_std([r[c] for r in runs])
            fmt = "{:.2f}" if c not in ("train_s",) else "{:.0f}"
            spread = len(runs) > 1 and c in ("AP", "AP50", "VOC_AP50")
            cells.append(fmt.format(m) + (f" ± {fmt.format(s)}" if spread else ""))
        diverged = sum(r.get("diverged", False) for r in runs)
        label = f"{name} ({diverged} diverged)" if diverged else name
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Per-seed AP: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{r['AP']:.2f}" for r in runs) for name, runs in rows.items()
        )
    )
    return "\n".join(lines)


# two-sided 95 % quantiles of Student's t (its 0.975 quantile) for 1..30 degrees of freedom
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
NORMAL_975 = 1.96


def t_quantile_95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (its 0.975
    quantile, three decimals, from the table; the normal's 1.96 beyond 30)."""
    if df < 1:
        raise ValueError(f"t_quantile_95: df must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else NORMAL_975


def mean_ci95(values: List[float]) -> Tuple[float, float, float]:
    """Mean, standard deviation (n - 1) and half-width of the two-sided 95 % confidence interval
    of the mean, ``t_quantile_95(n - 1) * std / sqrt(n)``; std and half-width are NaN for fewer than
    two values, everything for none."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = statistics.mean(values)
    if n < 2:
        return mean, float("nan"), float("nan")
    std = statistics.stdev(values)
    return mean, std, t_quantile_95(n - 1) * std / math.sqrt(n)


def _finite_by_seed(runs: List[Dict], name: str) -> Dict:
    """seed -> AP of the runs with a seed and a finite AP (a diverged run has none)."""
    by_seed = {}
    for r in runs:
        seed = r.get("seed")
        if seed is None or r["AP"] != r["AP"]:
            continue
        if seed in by_seed:
            raise ValueError(f"paired gains: {name} has two runs of seed {seed}")
        by_seed[seed] = r["AP"]
    return by_seed


class PairedGain(NamedTuple):
    """A method against its baseline, paired by seed."""

    method: str
    baseline: str
    mean: float  # AP of the method's runs with an AP, mean and std (NaN for one run)
    std: float
    baseline_mean: float  # the same of the baseline's runs
    baseline_std: float
    gains: List[Tuple[int, float]]  # (seed, method AP - baseline AP) of each seed both have
    gain: float  # mean paired gain
    gain_std: float
    half_width: float  # of the 95 % interval of the mean gain; NaN under two pairs
    gap_closed: float  # gain / (teacher AP - baseline mean AP); NaN unless that gap is > 0

    @property
    def n(self) -> int:
        return len(self.gains)

    @property
    def interval(self) -> Tuple[float, float]:
        return self.gain - self.half_width, self.gain + self.half_width

    @property
    def above_zero(self) -> Optional[bool]:
        """Whether the whole 95 % interval is above 0 (None: no interval, under two pairs)."""
        return None if self.half_width != self.half_width else self.interval[0] > 0


def paired_gain(
    rows: Dict[str, List[Dict]], method: str, baseline: str, teacher_ap: float = float("nan")
) -> PairedGain:
    """``method``'s runs in ``rows`` against ``baseline``'s, paired by their ``seed``: a seed only
    one of them has, a run without a seed or a diverged run (NaN AP) is in no pair."""
    m, s, _ = mean_ci95([r["AP"] for r in rows[method] if r["AP"] == r["AP"]])
    bm, bs, _ = mean_ci95([r["AP"] for r in rows[baseline] if r["AP"] == r["AP"]])
    ours, theirs = _finite_by_seed(rows[method], method), _finite_by_seed(rows[baseline], baseline)
    gains = [(seed, ours[seed] - theirs[seed]) for seed in sorted(set(ours) & set(theirs))]
    gain, gain_std, half = mean_ci95([g for _, g in gains])
    gap = teacher_ap - bm
    closed = gain / gap if gap > 0 else float("nan")
    return PairedGain(method, baseline, m, s, bm, bs, gains, gain, gain_std, half, closed)


def paired_gains(rows: Dict[str, List[Dict]], baseline_of: Dict[str, str]) -> Dict[str, PairedGain]:
    """Every method of ``rows`` whose baseline (``baseline_of``: method -> baseline) is in
    ``rows``, against it (:func:`paired_gain`; the teacher AP is ``rows["teacher"]``'s)."""
    teacher = rows["teacher"][0]["AP"] if rows.get("teacher") else float("nan")
    return {
        name: paired_gain(rows, name, baseline_of[name], teacher)
        for name in rows
        if baseline_of.get(name) in rows
    }


class Goal(NamedTuple):
    """What a method must reach to meet a goal: its paired gain's 95 % interval above 0, a mean
    paired gain of at least ``gain`` AP (0: no more than the interval), every method at least
    ``every_gap_closed`` of the teacher-baseline gap (0: no share asked) and the methods named in
    ``gap_closed`` at least their share (in place of ``every_gap_closed``). A share asked of a
    method whose gap is unknown (no teacher, or one not above the baseline) is missed."""

    gain: float = 0.0
    gap_closed: Dict[str, float] = {}
    every_gap_closed: float = 0.0

    def gap_goal(self, name: str) -> Optional[float]:
        """The share of the gap ``name`` must close, None where none is asked."""
        return self.gap_closed.get(name, self.every_gap_closed or None)

    def describe(self) -> str:
        """The goal in words, as the tables' notes state it."""
        words = (
            f"a mean gain of at least +{self.gain:g} AP with its interval above 0"
            if self.gain > 0
            else "the interval of the gain above 0"
        )
        if self.every_gap_closed:
            words += (
                f", every method closing at least {100 * self.every_gap_closed:.0f} % of the gap"
            )
        return words + "".join(
            f", and {name} closing at least {100 * share:.0f} % of the gap"
            for name, share in self.gap_closed.items()
        )


def goal_verdict(name: str, g: PairedGain, goal: Goal) -> str:
    """ "met", or "missed: <each unmet part>", or "n/a" under two paired seeds (no interval)."""
    if g.n < 2:
        return "n/a"
    missed = []
    if goal.gain > 0 and not g.gain >= goal.gain:
        missed.append(f"gain < +{goal.gain:g}")
    if not g.above_zero:
        missed.append("CI not above 0")  # across 0, or wholly below it (a loss)
    gap_goal = goal.gap_goal(name)
    if gap_goal is not None and not g.gap_closed >= gap_goal:
        unknown = g.gap_closed != g.gap_closed
        missed.append("gap closed n/a" if unknown else f"gap closed < {100 * gap_goal:.0f} %")
    return "met" if not missed else "missed: " + ", ".join(missed)


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std == std else "")


def summarize(
    rows: Dict[str, List[Dict]], baseline_of: Dict[str, str], goal: Optional[Goal] = None
) -> str:
    """Each method of ``rows`` with a baseline in ``rows`` (``baseline_of``: method -> baseline)
    against it, paired by seed (:func:`paired_gains`): AP of both (mean ± std), the mean paired
    gain with its 95 % interval, whether the interval is above 0, the share of the
    teacher-baseline gap closed, the ``goal``'s verdict when one is given; then each seed's
    gain."""
    gains = paired_gains(rows, baseline_of)
    lines = [
        "| method | vs | seeds paired | AP (mean ± std) | baseline AP (mean ± std) "
        "| gain AP (mean, paired) | 95 % CI of the gain | CI above 0 | gap closed |"
        + (" goal |" if goal else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if goal else ""),
    ]
    for name, g in gains.items():
        if g.n < 2:
            interval = verdict = f"n/a ({'one seed' if g.n else 'no seed'} paired)"
        else:
            low, high = g.interval
            interval = f"[{low:+.2f}, {high:+.2f}] (± {g.half_width:.2f})"
            verdict = "yes" if g.above_zero else "no"
        closed = f"{100 * g.gap_closed:.0f} %" if g.gap_closed == g.gap_closed else "n/a"
        gain = f"{g.gain:+.2f}" if g.n else "n/a"
        lines.append(
            f"| {name} | {g.baseline} | {g.n} | {_pm(g.mean, g.std)} "
            f"| {_pm(g.baseline_mean, g.baseline_std)} | {gain} | {interval} | {verdict} "
            f"| {closed} |" + (f" {goal_verdict(name, g, goal)} |" if goal else "")
        )
    lines += [
        "",
        "Paired gain: the method's AP minus its baseline's AP of the same seed (a seed one of them "
        "lacks, or a diverged run, pairs with nothing); 95 % CI: mean gain ± t(0.975, n - 1) · "
        "std / √n over the n paired seeds (Student t, two-sided), n/a under two seeds; gap "
        "closed: mean gain / (teacher AP - baseline mean AP)"
        + (f"; goal: {goal.describe()}" if goal else "")
        + ".",
        "",
        "Per-seed gain: "
        + "; ".join(
            f"{name}: " + (", ".join(f"s{seed} {d:+.2f}" for seed, d in g.gains) or "none")
            for name, g in gains.items()
        ),
    ]
    return "\n".join(lines)


def gains_json(gains: Dict[str, PairedGain], goal: Optional[Goal] = None) -> Dict[str, Dict]:
    """:func:`paired_gains` as plain data for ``results.json`` / ``survey.json`` (with the
    ``goal``'s verdict when one is given)."""
    return {
        name: {
            **g._asdict(),
            "n": g.n,
            "interval": list(g.interval),
            "above_zero": g.above_zero,
            **({"goal": goal_verdict(name, g, goal)} if goal else {}),
        }
        for name, g in gains.items()
    }


# a schedule has converged when the baseline gains less than this share of its final AP over the
# last quarter of its iterations
FLAT_SHARE = 0.10


def last_quarter_gain(curve: List) -> float:
    """The share of its final AP a run gained over the last quarter of its schedule: (final AP -
    AP at the last evaluation at or before 75 % of the final iteration) / final AP, from its
    curve of (iteration, AP); NaN without such an evaluation or with a final AP <= 0."""
    if not curve:
        return float("nan")
    last_it, final = curve[-1]
    before = [ap for it, ap in curve if it <= 0.75 * (last_it + 1)]
    if not before or not final > 0:
        return float("nan")
    return (final - before[-1]) / final


def convergence(curves: Dict[str, List]) -> str:
    """For each arm (``curves``: name -> its runs' curves) the mean share of its final AP it
    gained over the last quarter of its schedule (:func:`last_quarter_gain`), and whether that is
    under :data:`FLAT_SHARE` (the schedule has converged for it)."""
    lines = ["| method | gain over the last quarter (share of final AP, mean over seeds) | flat |"]
    lines.append("|---|---|---|")
    for name, runs in curves.items():
        shares = [s for s in (last_quarter_gain(c) for c in runs) if s == s]
        if not shares:
            lines.append(f"| {name} | n/a (no evaluation at 75 % of the schedule) | n/a |")
            continue
        mean = statistics.mean(shares)
        flat = "yes" if mean < FLAT_SHARE else "no"
        lines.append(f"| {name} | {100 * mean:.1f} % ({len(shares)} runs) | {flat} |")
    lines.append("")
    lines.append(
        f"Flat: under {100 * FLAT_SHARE:.0f} % of the final AP gained over the last quarter of "
        "the schedule (the run has converged on this schedule)."
    )
    return "\n".join(lines)


def iteration_reaching(curve: List, target: float) -> float:
    """The iteration at which a run's curve of (iteration, AP) first reaches ``target`` AP,
    linearly interpolated between its evaluations, the curve starting at AP 0 at iteration 0 (the
    detection heads start untrained); NaN when it never does."""
    prev_it, prev_ap = 0, 0.0
    for it, ap in curve:
        if ap >= target:
            if ap == prev_ap:
                return float(it)
            return prev_it + (it - prev_it) * (target - prev_ap) / (ap - prev_ap)
        prev_it, prev_ap = it, ap
    return float("nan")


def schedule_share(curves: Dict[str, List], baseline_of: Dict[str, str]) -> str:
    """For each method, paired by seed (``curves``: name -> one curve per seed, index = seed, None
    where the seed has no run), the share of its baseline's schedule the method needs to reach
    that baseline's final AP (:func:`iteration_reaching` / the baseline's last iteration); a
    seed whose method never reaches it counts as "not reached"."""
    lines = [
        "| method | vs | share of the baseline's schedule to reach its final AP (mean) "
        "| per seed |",
        "|---|---|---|---|",
    ]
    for name, base in baseline_of.items():
        if not base or name not in curves or base not in curves:
            continue
        shares = []
        for mine, theirs in zip(curves[name], curves[base]):
            if mine and theirs:
                last_it, final = theirs[-1]
                shares.append(iteration_reaching(mine, final) / last_it)
        if not shares:
            continue
        reached = [s for s in shares if s == s]
        mean = f"{100 * statistics.mean(reached):.0f} %" if len(reached) == len(shares) else ""
        if len(reached) < len(shares):
            mean = f"not reached in {len(shares) - len(reached)} of {len(shares)} seeds"
        per_seed = ", ".join(f"{100 * s:.0f} %" if s == s else "not reached" for s in shares)
        lines.append(f"| {name} | {base} | {mean} | {per_seed} |")
    lines.append("")
    lines.append(
        "Read from the AP curves (evaluations linearly interpolated, AP 0 at iteration 0): under "
        "100 % the distilled student reaches its baseline's final AP on a shorter schedule."
    )
    return "\n".join(lines)


def regime(curves: Dict[str, List], baselines: List[str]) -> str:
    """One line saying whether the schedule has converged for the ``baselines`` (names in
    ``curves``): each one's mean last-quarter gain (:func:`last_quarter_gain`) against
    :data:`FLAT_SHARE`."""
    parts, flat = [], True
    for name in baselines:
        shares = [s for s in (last_quarter_gain(c) for c in curves.get(name, []) if c) if s == s]
        if not shares:
            continue
        mean = statistics.mean(shares)
        flat = flat and mean < FLAT_SHARE
        parts.append(f"{name} gained {100 * mean:.1f} % of its final AP over the last quarter")
    if not parts:
        return "Regime: unknown (no baseline with an evaluation at 75 % of the schedule)."
    verdict = "converged" if flat else "not converged"
    return (
        f"Regime: **{verdict}** ({'; '.join(parts)}; converged: under "
        f"{100 * FLAT_SHARE:.0f} %)."
    )
