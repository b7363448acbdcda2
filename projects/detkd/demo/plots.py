"""The demo's plots: AP per method (``results.png``) and AP against iteration
(``ap_curves.png``)."""

import os
from typing import Dict, List

from .report import mean_std


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
    ax.set_title("detkd demo: AP per method (mean ± std over seeds)")
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
