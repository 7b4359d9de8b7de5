"""Plots a person would rather look at than read: metric vs k against baselines, feature importance."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.evaluation import EvaluationReport


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metrics_vs_k(report: EvaluationReport, path: Path) -> Path:
    plt = _pyplot()
    names = sorted({m.split("@")[0] for ms in report.metrics.values() for m in ms})
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4))
    for ax, metric in zip(axes, names, strict=True):
        for ranker, ms in report.metrics.items():
            ks = sorted(int(m.split("@")[1]) for m in ms if m.startswith(metric + "@"))
            ivs = [ms[f"{metric}@{k}"] for k in ks]
            ax.plot(ks, [iv.mean for iv in ivs], marker="o", label=ranker)
            ax.fill_between(ks, [iv.low for iv in ivs], [iv.high for iv in ivs], alpha=0.15)
        ax.set_title(f"{metric.upper()}@k ({report.n_lists} lists)")
        ax.set_xlabel("k")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def feature_importance(importance: pd.Series, path: Path, top: int = 25) -> Path:
    plt = _pyplot()
    top_imp = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(top_imp) + 1))
    ax.barh(top_imp.index, top_imp.to_numpy())
    ax.set_title("LightGBM gain importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
