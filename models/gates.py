"""Promotion gates: what a newly trained model must show before it gets an alias."""

from __future__ import annotations

from dataclasses import dataclass

from models.evaluation import EvaluationReport


@dataclass(frozen=True)
class GatePolicy:
    metric: str = "ndcg@10"
    min_lists: int = 100
    champion_tolerance: float = 0.0  # the candidate may not be significantly worse than the champion by more
    baselines: tuple[str, ...] = ("first_stage", "rule_based")  # each must be beaten with an interval above 0


@dataclass
class GateResult:
    passed: bool
    detail: str


def check_gates(
    report: EvaluationReport,
    policy: GatePolicy,
    reference: str = "learned",
    has_champion: bool = False,
    logged_lists: bool = False,
) -> dict[str, GateResult]:
    """On logged lists (served lists with clicks), click labels favour whatever ranked the list: the first-stage
    score there is the logging order, and lists the champion served favour the champion. Those comparisons are not
    gated offline; the canary analysis decides them online."""
    gates: dict[str, GateResult] = {
        "enough_lists": GateResult(report.n_lists >= policy.min_lists,
                                   f"{report.n_lists} evaluated lists (need >= {policy.min_lists})"),
    }  # fmt: skip
    for baseline in policy.baselines:
        if logged_lists and baseline == "first_stage":
            gates["beats_first_stage"] = GateResult(
                True, "not gated on logged lists: the first-stage score there is the logging order, which click "
                "labels favour (the canary analysis decides online)")  # fmt: skip
            continue
        iv = report.differences[f"{reference} - {baseline}"][policy.metric]
        gates[f"beats_{baseline}"] = GateResult(
            iv.low > 0, f"{policy.metric} diff {iv.mean:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}] must be > 0"
        )
    champ = report.differences.get(f"{reference} - champion")
    if champ is not None:
        iv = champ[policy.metric]
        gates["not_worse_than_champion"] = GateResult(
            iv.high >= -policy.champion_tolerance,
            f"{policy.metric} diff {iv.mean:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}] must not lie below "
            f"{-policy.champion_tolerance:+.4f} ({report.champion_lists} lists after the champion's window)",
        )
    elif has_champion and report.champion_logged:
        gates["not_worse_than_champion"] = GateResult(
            True,
            f"not comparable offline: the {report.champion_lists} lists after the champion's window were ranked by "
            "the champion (click labels favour it); the canary analysis decides online",
        )
    elif has_champion:
        gates["not_worse_than_champion"] = GateResult(
            True,
            f"not comparable: {report.champion_lists} lists after the champion's training window "
            f"(need >= {policy.min_lists}); decided by the baseline gates",
        )
    return gates


def failure_reason(gates: dict[str, GateResult]) -> str | None:
    failed = [f"{name}: {g.detail}" for name, g in gates.items() if not g.passed]
    return "; ".join(failed) if failed else None
