"""Promotion gates: what a newly trained model must show before it gets an alias.

Each gate says `pass`, `fail` or `not gated` (a comparison that was not made is said to be so, never a pass). On
logged lists (served lists with clicks), click labels favour whatever ranked the list, so the first-stage and
champion comparisons read the debiased estimate (IPW-DCG, `models.debias`) when the logs carry positions; without
positions they are not gated offline and the canary analysis decides online.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.card import GateStatus, GateVerdict
from models.evaluation import EvaluationReport


@dataclass(frozen=True)
class GatePolicy:
    metric: str = "ndcg@10"
    logged_metric: str = "ipw_dcg@10"  # on logged lists
    min_lists: int = 100
    champion_tolerance: float = 0.0  # the candidate may not be significantly worse than the champion by more
    baselines: tuple[str, ...] = ("first_stage", "rule_based")  # each must be beaten with an interval above 0


def _verdict(report: EvaluationReport, pair: str, metric: str, must: str) -> GateVerdict | None:
    iv = report.differences.get(pair, {}).get(metric)
    if iv is None:
        return None
    ok = iv.low > 0 if must == "beat" else iv.high >= 0
    return GateVerdict(status=GateStatus.passed if ok else GateStatus.failed,
                       detail=f"{metric} difference {iv.mean:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}] "
                              f"{'must be above 0' if must == 'beat' else 'must not lie below 0'}")  # fmt: skip


def check_gates(
    report: EvaluationReport,
    policy: GatePolicy,
    reference: str = "learned",
    has_champion: bool = False,
    logged_lists: bool = False,
) -> dict[str, GateVerdict]:
    gates: dict[str, GateVerdict] = {
        "enough_lists": GateVerdict(
            status=GateStatus.passed if report.n_lists >= policy.min_lists else GateStatus.failed,
            detail=f"{report.n_lists} evaluated lists (need >= {policy.min_lists})"),
    }  # fmt: skip
    debiased = logged_lists and policy.logged_metric in report.metrics.get(reference, {})
    for baseline in policy.baselines:
        pair = f"{reference} - {baseline}"
        if logged_lists and baseline == "first_stage":
            verdict = _verdict(report, pair, policy.logged_metric, "beat") if debiased else None
            gates["beats_first_stage"] = verdict or GateVerdict(
                status=GateStatus.not_gated,
                detail="not compared offline: the first-stage score of logged lists is the logging order, which "
                "click labels favour, and the logs carry no positions to debias them; the canary analysis "
                "decides online")  # fmt: skip
            continue
        metric = policy.logged_metric if debiased else policy.metric
        verdict = _verdict(report, pair, metric, "beat")
        if verdict is not None:
            gates[f"beats_{baseline}"] = verdict
    if has_champion:
        metric = policy.logged_metric if debiased else policy.metric
        verdict = _verdict(report, f"{reference} - champion", metric, "not worse")
        if verdict is not None:
            verdict.detail += f" ({report.champion_lists} lists after the champion's window)"
            gates["not_worse_than_champion"] = verdict
        elif report.champion_logged and not debiased:
            gates["not_worse_than_champion"] = GateVerdict(
                status=GateStatus.not_gated,
                detail=f"not compared offline: the {report.champion_lists} lists after the champion's window were "
                "ranked by the champion (click labels favour it); the canary analysis decides online")  # fmt: skip
        else:
            gates["not_worse_than_champion"] = GateVerdict(
                status=GateStatus.not_gated,
                detail=f"not compared: {report.champion_lists or 0} lists after the champion's training window "
                f"(need >= {policy.min_lists}), or the champion's inputs are no longer supplied; the canary "
                "analysis decides online")  # fmt: skip
    return gates


def failure_reason(gates: dict[str, GateVerdict]) -> str | None:
    failed = [f"{name}: {g.detail}" for name, g in gates.items() if g.status is GateStatus.failed]
    return "; ".join(failed) if failed else None
