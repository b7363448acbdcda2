"""The plots of a survey and of the demo: AP per method (``results.png``), AP against iteration
(``ap_curves.png``) and each method's paired gain over its baseline with its 95 % interval
(``gains.png``)."""

import os
from typing import Dict, List, Optional, Tuple

from .report import mean_std, paired_gains


def plot_results(rows: Dict[str, List[Dict]], curves: Dict[str, List], output: str):
    """A bar plot of each row's AP (mean +- std over seeds) and the AP curve of every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    means = [mean_std([r["AP"] for r in rows[n]]) for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 4))
    ax.bar(names, [m for m, _ in means], yerr=[s for _, s in means], capsize=4, color="#4878a8")
    ax.set_ylabel("COCO AP (val)")
    ax.set_title("AP per method (mean ± std over seeds)")
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    fig.tight_layout()
    fig.savefig(os.path.join(output, "results.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, per_seed in curves.items():
        for k, curve in enumerate(per_seed):
            if curve:
                xs, ys = zip(*curve)
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    label=name if k == 0 else None,
                    color=f"C{list(curves).index(name)}",
                    alpha=0.8,
                )
    ax.set_xlabel("iteration")
    ax.set_ylabel("COCO AP (val)")
    ax.legend(fontsize=8)
    ax.set_title("AP against iteration (one line per seed)")
    fig.tight_layout()
    fig.savefig(os.path.join(output, "ap_curves.png"), dpi=110)
    plt.close(fig)


def gain_panels(baseline_of_method: Dict[str, str]) -> List[Tuple[str, List[str]]]:
    """The panels of ``gains.png``: (baseline, its methods in order) for each baseline, in the
    order of their first method. One panel each, on its own scale: the low-resolution student
    gains ~30 AP by inheriting the teacher, the survey's methods a few, and on one axis the few
    would not be readable."""
    panels: Dict[str, List[str]] = {}
    for method, baseline in baseline_of_method.items():
        panels.setdefault(baseline, []).append(method)
    return list(panels.items())


def plot_gains(
    rows: Dict[str, List[Dict]],
    baseline_of: Dict[str, str],
    output: str,
    goal_gain: Optional[float] = None,
) -> str:
    """``gains.png`` in ``output``: for each method with its baseline in ``rows`` (see
    :func:`~detkd.survey.report.paired_gains`), the mean paired gain in AP with its 95 % interval
    as an error bar (none under two paired seeds), one dot per seed's gain, a line at 0 and one
    at ``goal_gain`` when given; one panel per baseline (:func:`gain_panels`). Returns the file's
    path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = paired_gains(rows, baseline_of)
    panels = gain_panels({name: g.baseline for name, g in gains.items()}) or [("", [])]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(1.2 * len(gains) + 2.5 * len(panels), 4),
        squeeze=False,
        gridspec_kw={"width_ratios": [max(len(names), 1) for _, names in panels]},
    )
    labels = {
        "seed": "one seed's gain",
        "mean": "mean gain, 95 % CI (green: above 0)",
    }
    if goal_gain is not None:
        labels["goal"] = f"goal: +{goal_gain:g} AP"
    drawn = False
    for ax, (baseline, names) in zip(axes[0], panels):
        ax.axhline(0.0, color="0.3", linewidth=1)
        if goal_gain is not None:
            ax.axhline(
                goal_gain, color="C3", linestyle="--", linewidth=0.8, label=labels.pop("goal", None)
            )
        for x, name in enumerate(names):
            g = gains[name]
            if not g.n:
                continue
            drawn = True
            # the seeds' gains, spread a little sideways so equal values stay visible
            offsets = [0.12 * (k - (g.n - 1) / 2) / max(g.n - 1, 1) for k in range(g.n)]
            ax.scatter(
                [x + 0.2 + o for o in offsets],
                [d for _, d in g.gains],
                s=14,
                color="0.45",
                zorder=3,
                label=labels.pop("seed", None),
            )
            ax.errorbar(
                [x],
                [g.gain],
                yerr=[[g.half_width], [g.half_width]] if g.n > 1 else None,
                fmt="o",
                color="C2" if g.above_zero else "C0",
                capsize=5,
                markersize=7,
                zorder=4,
                label=labels.pop("mean", None),
            )
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
        ax.set_xlim(-0.6, max(len(names), 1) - 0.4)
        ax.set_title(f"vs {baseline}" if baseline else "", fontsize=9)
    axes[0][0].set_ylabel("AP gain over the baseline (same seed)")
    fig.suptitle("Paired gain per method: mean, 95 % Student-t interval, seeds", fontsize=10)
    if drawn:
        axes[0][0].legend(fontsize=8, loc="best")
    else:
        axes[0][0].text(
            0.5,
            0.5,
            "no method paired with its baseline",
            ha="center",
            transform=axes[0][0].transAxes,
        )
    fig.tight_layout()
    path = os.path.join(output, "gains.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
