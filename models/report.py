"""The evaluation report a person reads in MLflow: one markdown summary per training run (the run's description,
the version's description and `evaluation/summary.md`), and the few named, rounded metrics the run logs.

The summary says what the model was compared with, on which lists, with 95% intervals and the paired differences
the gates read, each gate's verdict in words, the fallback chosen and the inputs that weigh most, named as declared.
"""

from __future__ import annotations

import pandas as pd

from feature_repo.inputs import ModelInput
from models.card import GateStatus, ModelCard
from models.evaluation import EvaluationReport, Interval

SUMMARY_METRICS = ("ndcg@10", "mrr@10", "recall@10", "ipw_dcg@10")
RANKERS = {"learned": "learned (this version)", "first_stage": "first-stage order (the caller's)",
           "rule_based": "rule-based fallback", "champion": "champion"}  # fmt: skip
VERDICT_WORDS = {
    GateStatus.passed: "✅ pass",
    GateStatus.failed: "❌ fail",
    GateStatus.not_gated: "➖ not compared",
}


def metric_key(name: str) -> str:
    """An MLflow metric name for a metric@k (MLflow keys cannot hold '@')."""
    return name.replace("@", "_at_")


def _iv(iv: Interval | None, signed: bool = False) -> str:
    if iv is None or pd.isna(iv.mean):
        return "-"
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"{f.format(iv.mean)} [{f.format(iv.low)}, {f.format(iv.high)}]"


def _when(value: object) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def input_label(spec: ModelInput) -> str:
    """A declared name a person recognises: `metadata.categories#03` -> `metadata.categories = Thriller`."""
    if spec.slot is not None and spec.description:
        return f"{spec.name.split('#')[0]} = {spec.description}"
    return spec.name


def logged_metrics(report: EvaluationReport, gate_metric: str) -> dict[str, float]:
    """The run's metrics: each ranker's headline metrics at 10, and each paired difference of the gates' metric with
    its interval, rounded to 4 places (the per-k detail stays in `evaluation/evaluation.json`)."""
    out: dict[str, float] = {"n_lists": float(report.n_lists)}
    for ranker, ms in report.metrics.items():
        for m in SUMMARY_METRICS:
            if m in ms and not pd.isna(ms[m].mean):
                out[f"{metric_key(m)}.{ranker}"] = round(ms[m].mean, 4)
    for pair, ms in report.differences.items():
        iv = ms.get(gate_metric)
        if iv is None or pd.isna(iv.mean):
            continue
        name = pair.replace(" - ", "_minus_")
        out.update({f"{metric_key(gate_metric)}.{name}": round(iv.mean, 4),
                    f"{metric_key(gate_metric)}.{name}.low": round(iv.low, 4),
                    f"{metric_key(gate_metric)}.{name}.high": round(iv.high, 4)})  # fmt: skip
    return out


def summary_markdown(
    card: ModelCard,
    report: EvaluationReport,
    version: str | None,
    alias: str | None,
    rejected: str | None,
    importance: pd.Series | None = None,
    test_window: tuple[str, str] | None = None,
    top_inputs: int = 10,
) -> str:
    """The report: headline, data, metrics table, paired differences, gates, fallback, top inputs."""
    outcome = (f"**rejected**: {rejected}" if rejected else
               f"alias **{alias}**" if alias else "no alias")  # fmt: skip
    lines = [f"# {card.model_id} v{version or '?'}: {outcome}", ""]
    sources = ", ".join(f"{n:,} {s}" + (f" ({card.positive_lists.get(s, 0):,} with a positive)" if card.positive_lists
                                         else "") for s, n in card.sources.items()) or "-"  # fmt: skip
    lines += [
        f"- **Training data:** {_when(card.data_start)} .. {_when(card.data_end)} · {card.lists:,} lists with a positive ({card.rows:,} rows) · "
        f"lists built per source: {sources}",
        f"- **Feature set:** {card.feature_set} {card.feature_set_version} · {len(card.inputs)} inputs"
        + (f" · families left out by validation: {', '.join(card.dropped_families)}" if card.dropped_families else ""),
        f"- **Evaluated on:** {report.n_lists:,} test lists (rolling origin: each scored by a model trained only on "
        "lists complete before it)" + (f", {_when(test_window[0])} .. {_when(test_window[1])}" if test_window else ""),
        "",
    ]  # fmt: skip
    shown = [m for m in SUMMARY_METRICS if any(m in ms for ms in report.metrics.values())]
    lines += ["## Metrics (mean and 95% interval over users)", "",
              "| ranker | " + " | ".join(m.upper().replace("IPW_DCG", "IPW-DCG") for m in shown) + " |",
              "|---|" + "---|" * len(shown)]  # fmt: skip
    if any("ipw_dcg@10" in ms for ms in report.metrics.values()):
        lines[-2:-2] = ["On logged lists the clicks favour the order that was shown, so NDCG and MRR favour the logging "
                        "ranker; IPW-DCG (clicks reweighted by the estimated examination of their position) does not, "
                        "and is what the gates read.", ""]  # fmt: skip
    for ranker, ms in report.metrics.items():
        label = RANKERS.get(ranker, ranker)
        if ranker == "champion" and report.champion_lists is not None:
            label += f" (on the {report.champion_lists:,} lists after its window)"
        lines.append(f"| {label} | " + " | ".join(_iv(ms.get(m)) for m in shown) + " |")
    lines += ["", "## Paired differences (per list, the same lists; what the gates read)", "",
              "| difference | " + " | ".join(m.upper().replace("IPW_DCG", "IPW-DCG") for m in shown) + " |",
              "|---|" + "---|" * len(shown)]  # fmt: skip
    for pair, ms in report.differences.items():
        lines.append(f"| {pair} | " + " | ".join(_iv(ms.get(m), signed=True) for m in shown) + " |")
    lines += ["", "## Gates", ""]
    for name, gate in card.gates.items():
        lines.append(f"- {VERDICT_WORDS[gate.status]} **{name.replace('_', ' ')}**: {gate.detail}")
    if not card.gates:
        lines.append("- none ran")
    lines += ["", "## Fallback", "", f"`{card.fallback}`: {card.fallback_reason}"]
    if importance is not None and len(importance):
        by_name = {i.name: i for i in card.inputs}
        top = importance.head(top_inputs)
        total = float(importance.sum()) or 1.0
        lines += ["", f"## Inputs that weigh most (share of LightGBM gain, top {len(top)})", "",
                  "| input | family | share |", "|---|---|---|"]  # fmt: skip
        for name, gain in top.items():
            spec = by_name.get(str(name))
            label = input_label(spec) if spec else str(name)
            lines.append(f"| {label} | {spec.family if spec else '-'} | {gain / total:.1%} |")
    lines += ["", "Per-k detail: `evaluation/evaluation.json`; plots: `evaluation/paired_differences.png`, "
              "`evaluation/feature_importance.png`."]  # fmt: skip
    return "\n".join(lines) + "\n"
