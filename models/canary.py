"""Canary analysis: the canary against the champion on the traffic both served at the same time.

Inputs are the served-list log (one record per response: request, hashed user, model version, variant, per item its
position and the probability the exploration policy gave it there, the exploration rate and the number of
candidates) and the positive interactions of the lake that reference those requests.

- **Online click rate** of each variant: positive interactions per shown item, with percentile intervals from a
  bootstrap that resamples users (a user's requests are correlated), and the canary - champion difference with
  each group's users resampled independently, at the policy's confidence (each analysis of one canary is a look
  at the same experiment: with at most K looks, 1 - 0.05 / K bounds the chance of any false decision by 5%).
- **Off-policy estimates** from the exploration logs: each variant's greedy policy (its ranking with exploration
  off) by list-level IPS and SNIPS. A logged list is what the greedy policy would have shown when every slot took
  the best remaining candidate; its logging probability is the product of the slot propensities.
- **Decision:** `rollback` when the canary's click rate is significantly lower (the difference's upper bound is
  below zero) or when `max_lists` were reached without proof of a gain; `promote` when the lower bound clears
  `-max_loss`; otherwise `wait` (too little traffic) and nothing changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.evaluation import Interval
from models.ope import estimate
from models.registry import CANARY, CHAMPION, AliasError, Registry, promote, reject_canary
from reranker.contracts import POSITIVE_TYPES

PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"


@dataclass(frozen=True)
class CanaryPolicy:
    min_lists: int = 500  # per variant, before any decision
    max_lists: int = 50_000  # per variant: no proven gain by then -> rollback
    max_loss: float = 0.0  # promote when canary - champion click rate has its lower bound above -max_loss
    # level of the canary - champion interval the decision reads; each analysis of the same canary is another look,
    # so for at most K looks 1 - 0.05 / K keeps the chance of any false decision under 5% (Bonferroni)
    confidence: float = 0.95
    n_boot: int = 1000
    seed: int = 7

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.min_lists < 1 or self.max_lists < self.min_lists:
            raise ValueError(f"need 1 <= min_lists <= max_lists, got {self.min_lists} and {self.max_lists}")
        if self.max_loss < 0 or self.n_boot < 100:
            raise ValueError(f"need max_loss >= 0 and n_boot >= 100, got {self.max_loss} and {self.n_boot}")


@dataclass
class VariantStats:
    version: str
    lists: int
    users: int
    impressions: int
    clicks: int
    click_rate: Interval
    greedy_ips: Interval | None = None
    greedy_snips: Interval | None = None


@dataclass
class CanaryReport:
    model_id: str
    champion: VariantStats
    canary: VariantStats
    difference: Interval  # canary - champion, online click rate
    decision: str
    reason: str
    window: tuple[str, str]
    policy: CanaryPolicy = field(default_factory=CanaryPolicy)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["policy"] = asdict(self.policy)
        return out

    def tags(self) -> dict[str, str]:
        """What the canary version is tagged with in the registry."""
        c, h, d = self.champion, self.canary, self.difference
        return {
            "canary.decision": self.decision,
            "canary.reason": self.reason,
            "canary.click_rate": f"{h.click_rate.mean:.4f} [{h.click_rate.low:.4f}, {h.click_rate.high:.4f}]",
            "canary.champion_click_rate": f"v{c.version} {c.click_rate.mean:.4f} "
            f"[{c.click_rate.low:.4f}, {c.click_rate.high:.4f}]",
            "canary.difference": f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]",
            "canary.lists": f"canary {h.lists}, champion {c.lists}",
            "canary.window": f"{self.window[0]} .. {self.window[1]}",
        }


def read_served_lists(root: Path) -> pd.DataFrame:
    """One row per served item from the served-list log (JSON lines under `root/date=…/`)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(root.glob("date=*/*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            ev = json.loads(line)
            base = {k: ev.get(k) for k in ("request_id", "user_id", "model_id", "model_version", "variant",
                                           "served_by", "timestamp", "exploration_rate", "n_candidates")}  # fmt: skip
            rows.extend({**base, **item} for item in ev["items"])
    columns = ["request_id", "user_id", "model_id", "model_version", "variant", "served_by", "timestamp",
               "exploration_rate", "n_candidates", "document_id", "position", "score", "propensity"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame.drop_duplicates(["request_id", "position"])


def attach_clicks(served: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """`clicked` per served item: a positive interaction on that document of that request."""
    positives = events[events["interaction_type"].isin({t.value for t in POSITIVE_TYPES})]
    keys = set(zip(positives["request_id"], positives["document_id"], strict=True))
    out = served.copy()
    out["clicked"] = [(r, d) in keys for r, d in zip(out["request_id"], out["document_id"], strict=True)]
    return out


def click_rate(per_user: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> tuple[Interval, np.ndarray]:
    """sum(clicks) / sum(impressions) over per-user counts, with its 95% interval and the bootstrap replicates
    (users resampled)."""
    if per_user.empty:
        return Interval(np.nan, np.nan, np.nan), np.full(n_boot, np.nan)
    clicks = per_user["clicks"].to_numpy(float)
    shown = per_user["impressions"].to_numpy(float)
    idx = rng.integers(0, len(per_user), size=(n_boot, len(per_user)))
    boots = clicks[idx].sum(axis=1) / np.maximum(shown[idx].sum(axis=1), 1.0)
    return _interval(float(clicks.sum() / max(shown.sum(), 1.0)), boots), boots


def _interval(point: float, boots: np.ndarray, confidence: float = 0.95) -> Interval:
    tail = (1 - confidence) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    return Interval(float(point), float(low), float(high))


def greedy_policy_value(items: pd.DataFrame, n_boot: int, seed: int) -> tuple[Interval, Interval] | None:
    """List-level IPS / SNIPS of the variant's ranking without exploration, from its exploration logs."""
    frame = items.dropna(subset=["exploration_rate", "n_candidates"])
    frame = frame[frame["exploration_rate"] < 1]
    if frame.empty:
        return None
    eps = frame["exploration_rate"].to_numpy(float)
    left = frame["n_candidates"].to_numpy(float) - frame["position"].to_numpy(float)
    greedy = frame["propensity"].to_numpy(float) > eps / np.maximum(left, 1.0) + 1e-9
    greedy |= eps == 0
    per_list = (
        frame.assign(greedy=greedy, log_p=np.log(frame["propensity"].to_numpy(float)))
        .groupby("request_id", sort=False)
        .agg(all_greedy=("greedy", "all"), log_p=("log_p", "sum"), rate=("clicked", "mean"))
    )
    result = estimate(per_list["rate"].to_numpy(float), per_list["all_greedy"].to_numpy(float),
                      np.exp(per_list["log_p"].to_numpy(float)), n_boot=n_boot, seed=seed)  # fmt: skip
    return result.ips, result.snips


def variant_stats(
    items: pd.DataFrame, version: str, n_boot: int, seed: int
) -> tuple[VariantStats, np.ndarray]:
    """The variant's figures, and the bootstrap replicates of its click rate (for the difference)."""
    per_user = items.groupby("user_id").agg(clicks=("clicked", "sum"), impressions=("clicked", "size"))
    rate, boots = click_rate(per_user, n_boot, np.random.default_rng(seed))
    stats = VariantStats(version, int(items["request_id"].nunique()), len(per_user),
                         int(per_user["impressions"].sum()), int(per_user["clicks"].sum()), rate)  # fmt: skip
    greedy = greedy_policy_value(items, min(n_boot, 500), seed) if len(items) else None
    if greedy is not None:
        stats.greedy_ips, stats.greedy_snips = greedy
    return stats, boots


def analyze(
    served: pd.DataFrame,
    events: pd.DataFrame,
    model_id: str,
    champion_version: str,
    canary_version: str,
    policy: CanaryPolicy | None = None,
) -> CanaryReport:
    """Compare the two versions on the lists they served while both were live (from the canary's first list)."""
    policy = policy or CanaryPolicy()
    mine = served[(served["model_id"] == model_id) & (served["served_by"] == "learned")]
    canary_items = mine[(mine["variant"] == "canary") & (mine["model_version"] == canary_version)]
    start = canary_items["timestamp"].min() if len(canary_items) else pd.Timestamp.max.tz_localize("UTC")
    champion_items = mine[(mine["variant"] == "champion") & (mine["model_version"] == champion_version)
                          & (mine["timestamp"] >= start)]  # fmt: skip
    both = attach_clicks(pd.concat([champion_items, canary_items]), events)
    champ_part = both[both["variant"] == "champion"]
    canary_part = both[both["variant"] == "canary"]
    champ, champ_boots = variant_stats(champ_part, champion_version, policy.n_boot, policy.seed)
    canary, canary_boots = variant_stats(canary_part, canary_version, policy.n_boot, policy.seed + 1)
    if min(champ.lists, canary.lists) == 0:
        diff = Interval(np.nan, np.nan, np.nan)
    else:  # the two groups' users were resampled independently (different generators)
        diff = _interval(canary.click_rate.mean - champ.click_rate.mean, canary_boots - champ_boots,
                         policy.confidence)  # fmt: skip
    decision, reason = decide(champ, canary, diff, policy)
    window = (str(both["timestamp"].min()), str(both["timestamp"].max())) if len(both) else ("-", "-")
    return CanaryReport(model_id, champ, canary, diff, decision, reason, window, policy)


def decide(
    champ: VariantStats, canary: VariantStats, diff: Interval, policy: CanaryPolicy
) -> tuple[str, str]:
    fewest = min(champ.lists, canary.lists)
    shown = (f"click rate canary - champion {diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]"
             f" ({policy.confidence * 100:.4g}% interval)")  # fmt: skip
    if fewest < policy.min_lists:
        return WAIT, f"{fewest} lists for the smaller variant (need >= {policy.min_lists} per variant)"
    if diff.high < 0:
        return ROLLBACK, f"canary significantly worse: {shown}"
    if diff.low > -policy.max_loss:
        return PROMOTE, f"canary not worse by more than {policy.max_loss:.4f}: {shown}"
    if fewest >= policy.max_lists:
        return ROLLBACK, f"no gain shown after {fewest} lists per variant: {shown}"
    return WAIT, f"inconclusive so far: {shown}"


def apply_decision(registry: Registry, report: CanaryReport) -> dict[str, str]:
    """Tag the canary version with the analysis; promote it or take its alias away. The aliases must still point at
    the analysed versions (a person may have moved them in the UI meanwhile): otherwise nothing changes."""
    name, aliases = report.model_id, registry.aliases(report.model_id)
    if aliases.get(CHAMPION) != report.champion.version or aliases.get(CANARY) != report.canary.version:
        raise AliasError(f"aliases moved during the analysis (now {aliases}); nothing changed")
    registry.tag_version(name, report.canary.version, report.tags())
    if report.decision == PROMOTE:
        return promote(registry, name, report.canary.version)
    if report.decision == ROLLBACK:
        return reject_canary(registry, name, f"canary analysis: {report.reason}")
    return aliases
