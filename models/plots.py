"""Plots a person would rather look at than read, sized for MLflow's artifact viewer (about 900 px wide): the paired
differences the gates read, per k, with their intervals; the inputs that weigh most, under their declared names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.evaluation import EvaluationReport


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def paired_differences(report: EvaluationReport, path: Path) -> Path:
    """One panel per metric (NDCG, and IPW-DCG on logged lists): each paired difference learned - other at each k,
    a point with its 95% interval; above the zero line the learned model ranks better."""
    plt = _pyplot()
    metrics = [
        m
        for m in ("ndcg", "ipw_dcg")
        if any(k.startswith(m + "@") for d in report.differences.values() for k in d)
    ]
    pairs = list(report.differences)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 3.2 * len(metrics) + 0.8), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        ks = sorted(
            {
                int(k.split("@")[1])
                for d in report.differences.values()
                for k in d
                if k.startswith(metric + "@")
            }
        )
        x = np.arange(len(ks))
        width = 0.8 / max(len(pairs), 1)
        for i, pair in enumerate(pairs):
            ivs = [report.differences[pair].get(f"{metric}@{k}") for k in ks]
            have = [j for j, iv in enumerate(ivs) if iv is not None and not np.isnan(iv.mean)]
            if not have:
                continue
            mean = np.array([ivs[j].mean for j in have])  # type: ignore[union-attr]
            low = np.array([ivs[j].low for j in have])  # type: ignore[union-attr]
            high = np.array([ivs[j].high for j in have])  # type: ignore[union-attr]
            ax.errorbar(x[have] - 0.4 + width * (i + 0.5), mean, yerr=[mean - low, high - mean], fmt="o", capsize=4, color=f"C{i}",
                        label=pair)  # fmt: skip
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [f"@{k}" for k in ks])
        ax.set_xlabel("cut-off k")
        ax.set_ylabel(f"{metric.upper().replace('_', '-')} difference")
        ax.set_title(
            f"{metric.upper().replace('_', '-')}: paired differences, 95% intervals ({report.n_lists:,} lists)"
        )
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 2), frameon=False)
    fig.tight_layout(rect=(0, 0.1 if len(labels) > 2 else 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def feature_importance(
    importance: pd.Series, path: Path, labels: dict[str, str] | None = None, top: int = 20
) -> Path:
    """The `top` inputs by share of LightGBM gain, labelled by `labels` (input name -> declared label)."""
    plt = _pyplot()
    total = float(importance.sum()) or 1.0
    top_imp = (importance.head(top) / total)[::-1]
    names = [(labels or {}).get(str(n), str(n)) for n in top_imp.index]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(top_imp) + 1.2))
    ax.barh(names, top_imp.to_numpy() * 100)
    ax.set_xlabel("share of gain (%)")
    ax.set_title(f"Inputs that weigh most (top {len(top_imp)} of {len(importance)})")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def diversity_tradeoff(points: list[dict[str, float]], path: Path, k: int = 10, title: str = "") -> Path:
    """NDCG@k against intra-list diversity@k, one point per MMR lambda (labelled), with NDCG's 95% interval: how
    much relevance each step of diversity costs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    xs = [p["ild"] for p in points]
    ys = [p["ndcg"] for p in points]
    err = [[p["ndcg"] - p["low"] for p in points], [p["high"] - p["ndcg"] for p in points]]
    ax.errorbar(xs, ys, yerr=err, fmt="o-", color="#1f77b4", ecolor="#9ecae1", capsize=3)
    for p in points:
        ax.annotate(f"λ={p['lambda']:g}", (p["ild"], p["ndcg"]), textcoords="offset points", xytext=(6, 6),
                    fontsize=9)  # fmt: skip
    ax.set_xlabel(f"intra-list diversity@{k} (mean pairwise dissimilarity)")
    ax.set_ylabel(f"NDCG@{k}")
    ax.set_title(title or f"MMR after the learned stage: relevance against diversity (top {k})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
