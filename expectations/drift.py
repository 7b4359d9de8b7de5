"""Drift of recent interactions against the champion's training reference, as a Great Expectations suite.

The suite is built from the reference window (the champion's training data window, read from its registry
metadata) and run on the recent window:
- KL divergence (`ExpectColumnKLDivergenceToBeLessThan`) of the key signals: interaction type, the category of the
  document, position and score (numeric: bins at the reference's deciles, a small tail holdout);
- null rates (`ExpectColumnValuesToNotBeNull` with `mostly` = the reference's non-null share minus a tolerance) of
  query, position, propensity and score;
- the label rate (share of positive interactions, `ExpectColumnMeanToBeBetween`) within a relative tolerance.
Any failed expectation means drift. The results land in Data Docs beside the ingestion reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations.interactions import data_docs, dataframe_checkpoint, file_context
from reranker.contracts import POSITIVE_RATING, POSITIVE_TYPES, InteractionType

SUITE = "drift"
CATEGORICAL = ("interaction_type", "category")
NUMERIC = ("position", "score")
NULLABLE = ("query", "position", "propensity", "score")
SMOOTHING = 1e-3  # weight of a category the reference never saw (KL stays finite but large)


@dataclass(frozen=True)
class DriftPolicy:
    max_kl: float = 0.2
    null_tolerance: float = 0.05  # absolute, on the non-null share
    label_tolerance: float = 0.25  # relative, on the label rate
    min_coverage: float = 0.5  # a column is checked when at least this share of the reference has it
    min_rows: int = 200


@dataclass
class DriftCheck:
    expectation: str
    column: str
    success: bool
    observed: Any
    expected: str


@dataclass
class DriftReport:
    drifted: bool
    reference: dict[str, Any]
    recent: dict[str, Any]
    checks: list[DriftCheck] = field(default_factory=list)
    data_docs: str | None = None

    @property
    def failed(self) -> list[DriftCheck]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        if not self.drifted:
            return f"no drift ({len(self.checks)} checks passed)"
        return "drift: " + "; ".join(
            f"{c.expectation}({c.column}) observed {c.observed}" for c in self.failed
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def signals(events: pd.DataFrame, catalog: pd.DataFrame | None = None) -> pd.DataFrame:
    """The per-event columns the drift suite looks at."""

    def column(name: str) -> pd.Series:
        return events[name] if name in events else pd.Series(np.nan, index=events.index, dtype=object)

    kind = events["interaction_type"].astype(str)
    value = pd.to_numeric(column("value"), errors="coerce")
    positive = kind.isin({t.value for t in POSITIVE_TYPES}) | (
        (kind == InteractionType.rating.value) & (value >= POSITIVE_RATING)
    )
    frame = pd.DataFrame({
        "interaction_type": kind.to_numpy(),
        "position": pd.to_numeric(column("position"), errors="coerce").to_numpy(float),
        "score": pd.to_numeric(column("score"), errors="coerce").to_numpy(float),
        "propensity": pd.to_numeric(column("propensity"), errors="coerce").to_numpy(float),
        "query": column("query").to_numpy(object),
        "label": positive.astype(float).to_numpy(),
    })  # fmt: skip
    if catalog is not None and not catalog.empty:
        first = catalog.set_index("document_id")["categories"].fillna("").str.split("|").str[0]
        frame["category"] = events["document_id"].map(first).fillna("unknown").to_numpy(object)
    return frame


def _categorical_partition(ref: pd.Series, recent: pd.Series) -> dict[str, Any]:
    shares = ref.astype(str).value_counts(normalize=True)
    values = sorted(set(shares.index) | set(recent.astype(str).unique()))
    weights = np.array([shares.get(v, 0.0) + SMOOTHING for v in values])
    return {"values": values, "weights": (weights / weights.sum()).tolist()}


def _numeric_partition(ref: pd.Series) -> dict[str, Any] | None:
    values = ref.dropna().to_numpy(float)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
    if len(edges) < 2:
        return None
    counts, _ = np.histogram(values, bins=edges)
    weights = (counts + SMOOTHING * len(values)) / (counts.sum() + SMOOTHING * len(values) * len(counts))
    return {"bins": edges.tolist(), "weights": weights.tolist()}


def build_suite(reference: pd.DataFrame, recent: pd.DataFrame, policy: DriftPolicy) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=SUITE)
    covered = [c for c in reference.columns if reference[c].notna().mean() >= policy.min_coverage]
    for col in CATEGORICAL:
        if col in covered and col in recent:
            suite.add_expectation(gxe.ExpectColumnKLDivergenceToBeLessThan(
                column=col, partition_object=_categorical_partition(reference[col], recent[col]),
                threshold=policy.max_kl))  # fmt: skip
    for col in NUMERIC:
        partition = _numeric_partition(reference[col]) if col in covered else None
        if partition is not None:
            suite.add_expectation(gxe.ExpectColumnKLDivergenceToBeLessThan(
                column=col, partition_object=partition, threshold=policy.max_kl, tail_weight_holdout=0.01))  # fmt: skip
    for col in NULLABLE:
        if col in covered:
            share = float(reference[col].notna().mean())
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(
                column=col, mostly=max(round(share - policy.null_tolerance, 4), 0.0)))  # fmt: skip
    rate = float(reference["label"].mean())
    suite.add_expectation(gxe.ExpectColumnMeanToBeBetween(
        column="label", min_value=rate * (1 - policy.label_tolerance), max_value=rate * (1 + policy.label_tolerance)))  # fmt: skip
    return suite


def _expected(config: Any) -> str:
    kw = config.kwargs
    if "threshold" in kw:
        return f"KL < {kw['threshold']}"
    if "mostly" in kw:
        return f"non-null share >= {kw['mostly']}"
    return f"mean in [{kw.get('min_value'):.4f}, {kw.get('max_value'):.4f}]"


def _window(frame: pd.DataFrame) -> dict[str, Any]:
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    return {"rows": len(frame), "from": str(ts.min()), "to": str(ts.max())}


def check_drift(
    reference_events: pd.DataFrame,
    recent_events: pd.DataFrame,
    gx_dir: Path,
    catalog: pd.DataFrame | None = None,
    policy: DriftPolicy | None = None,
) -> DriftReport:
    """Run the drift suite built from the reference on the recent events; build Data Docs."""
    policy = policy or DriftPolicy()
    for name, frame in (("reference", reference_events), ("recent", recent_events)):
        if len(frame) < policy.min_rows:
            raise ValueError(f"the {name} window has {len(frame)} events (need >= {policy.min_rows})")
    reference, recent = signals(reference_events, catalog), signals(recent_events, catalog)
    context = file_context(gx_dir)
    checkpoint = dataframe_checkpoint(
        context, build_suite(reference, recent, policy), f"{SUITE}_check", "SUMMARY"
    )
    from great_expectations.core.run_identifier import RunIdentifier

    ref_w, recent_w = _window(reference_events), _window(recent_events)
    run_name = (f"{recent_w['rows']} recent events {recent_w['from'][:10]}..{recent_w['to'][:10]}"
                f" vs reference {ref_w['from'][:10]}..{ref_w['to'][:10]}")  # fmt: skip
    result = checkpoint.run(batch_parameters={"dataframe": recent}, run_id=RunIdentifier(run_name=run_name))
    checks = []
    for run in result.run_results.values():
        for res in run.results:
            cfg = res.expectation_config
            observed = (res.result or {}).get("observed_value")
            if observed is None and "unexpected_percent" in (res.result or {}):
                observed = f"{100 - res.result['unexpected_percent']:.1f}% non-null"
            if isinstance(observed, float):
                observed = round(observed, 4)
            checks.append(DriftCheck(cfg.type, cfg.kwargs.get("column", ""), bool(res.success), observed,
                                     _expected(cfg)))  # fmt: skip
    return DriftReport(any(not c.success for c in checks), ref_w, recent_w, checks, str(data_docs(context)))


def split_windows(
    events: pd.DataFrame, reference_window: tuple[str, str], recent_days: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference: events inside the champion's training window; recent: the last `recent_days` of the lake."""
    ts = pd.to_datetime(events["timestamp"], utc=True)
    lo, hi = (pd.Timestamp(t) for t in reference_window)
    lo = lo.tz_localize("UTC") if lo.tzinfo is None else lo
    hi = hi.tz_localize("UTC") if hi.tzinfo is None else hi
    recent_from = ts.max() - pd.Timedelta(days=recent_days)
    return events[(ts >= lo) & (ts <= hi)], events[ts > max(recent_from, hi)]
