"""A pipeline definition evaluated offline, before it is turned on: what a filter, a business rule or `mmr` costs in
relevance and buys in diversity.

The lists are the training procedure's test lists (rolling origin: each scored by a model trained only on lists
whose labels were complete before it, on point-in-time features), run through the same stages as POST /pipeline
(`models.pipeline_run`) with those out-of-sample scores for the learned stage. Per definition: NDCG@k of the slate
served (deterministically; a document filtered out counts as not shown), intra-list diversity@k over the diversity
fields, and rule compliance (every shown document passes the filters, every pin at its slot, every cap kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.manifest import split_values
from models.conditions import FieldSource
from models.diversity import attribute_similarity, intra_list_diversity
from models.evaluation import Interval, cluster_bootstrap
from models.metrics import dcg
from models.pipeline_run import Subset, run_stages
from models.pipeline_spec import LearnedRerankParams, Stage
from models.slate import violations


class CatalogFields:
    """A FieldSource over one list's rows: ids, first-stage scores, the catalog's text as content, `metadata.*` from
    the catalog (multi-valued attributes split), `features.*` from the list's own columns."""

    def __init__(self, rows: pd.DataFrame, catalog: pd.DataFrame, texts: Sequence[str],
                 separators: dict[str, str]) -> None:  # fmt: skip
        self.rows = rows
        self.catalog = catalog
        self.texts = list(texts)
        self.separators = separators
        self._ids = rows["document_id"].astype(str).tolist()

    def values(self, field: str) -> list[Any]:
        rows = self.rows
        if field == "document_id":
            return self._ids
        if field == "score":
            return [None if pd.isna(v) else float(v) for v in rows["first_stage_score"]]
        if field == "content":
            if not self.texts:
                return [None] * len(rows)
            joined = self.catalog.reindex(self._ids)[self.texts].fillna("").astype(str).agg(" ".join, axis=1)
            return joined.tolist()
        head, name = field.split(".", 1)
        if head == "features":
            column = f"request.{name}"
            return rows[column].tolist() if column in rows else [None] * len(rows)
        if name not in self.catalog:
            return [None] * len(rows)
        out = self.catalog.reindex(self._ids)[name].tolist()
        sep = self.separators.get(name)
        if sep is not None:
            out = [split_values(x, sep) for x in out]
        return [None if isinstance(v, float) and np.isnan(v) else v for v in out]


@dataclass
class DefinitionResult:
    name: str
    lists: int
    ndcg: Interval
    diversity: float
    compliance: float  # share of lists whose slate keeps every rule and filter
    mean_shown: float
    versus_first: Interval | None = None  # NDCG@k minus the first definition's, paired over the same lists

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lists": self.lists, "ndcg": self.ndcg.to_dict(), "ild": self.diversity,
                "compliance": self.compliance, "mean_shown": self.mean_shown,
                "ndcg_minus_first": self.versus_first.to_dict() if self.versus_first else None}  # fmt: skip


def evaluate_definitions(frame: pd.DataFrame, list_starts: np.ndarray, learned: np.ndarray, catalog: pd.DataFrame,
                         definitions: dict[str, list[Stage]], diversity_fields: Sequence[str],
                         texts: Sequence[str] = (), separators: dict[str, str] | None = None, k: int = 10,
                         n_boot: int = 500, seed: int = 7, progress: bool = False) -> list[DefinitionResult]:  # fmt: skip
    """Each definition over the test lists (`frame` rows, lists contiguous from `list_starts`, with `learned` their
    out-of-sample scores); `catalog` indexed by document id."""
    from tqdm import tqdm

    catalog = catalog.set_index(catalog["document_id"].astype(str)) if "document_id" in catalog else catalog
    out = []
    first: np.ndarray | None = None
    bar = tqdm(total=len(definitions) * (len(list_starts) - 1), desc="pipelines", disable=not progress)
    for name, stages in definitions.items():
        ndcg, ild, ok, shown, users = [], [], [], [], []
        for i in range(len(list_starts) - 1):
            bar.update(1)
            a, b = int(list_starts[i]), int(list_starts[i + 1])
            rows = frame.iloc[a:b]
            labels = rows["label"].to_numpy(dtype=float)
            if not (labels > 0).any():
                continue
            fields = CatalogFields(rows, catalog, texts, separators or {})
            scores = learned[a:b]

            def score(
                params: LearnedRerankParams, idx: np.ndarray, scores: np.ndarray = scores
            ) -> tuple[np.ndarray, str]:
                return scores[idx], "learned"

            run = run_stages(
                stages, fields, rows["first_stage_score"].to_numpy(dtype=float), score, diversity_fields
            )
            slate = run.fill(run.size(k), 0.0, np.random.default_rng(0)).shown
            gains = 2.0**labels - 1  # exponential gain, as models.metrics; not shown: no gain
            ndcg.append(dcg(gains[slate[:k]]) / dcg(np.sort(gains)[::-1][:k]))
            sim = attribute_similarity([Subset(fields, np.arange(len(labels))).values(f) for f in diversity_fields]) \
                if diversity_fields else np.eye(len(labels))  # fmt: skip
            ild.append(intra_list_diversity(sim, slate.tolist()))
            ok.append(_complies(stages, fields, slate, run))
            shown.append(len(slate))
            users.append(rows["user_id"].iloc[0])
        values = pd.DataFrame({"ndcg": ndcg})
        if first is None:
            first = values["ndcg"].to_numpy()
        else:  # the same lists in the same order: paired
            values["difference"] = values["ndcg"].to_numpy() - first
        intervals = cluster_bootstrap(values, np.asarray(users), n_boot, seed) if ndcg else {}
        nan = Interval(np.nan, np.nan, np.nan)
        out.append(DefinitionResult(name, len(ndcg), intervals.get("ndcg", nan),
                                    float(np.nanmean(ild)) if ild else np.nan, float(np.mean(ok)) if ok else np.nan,
                                    float(np.mean(shown)) if shown else 0.0, intervals.get("difference")))  # fmt: skip
    bar.close()
    return out


def _complies(stages: list[Stage], fields: FieldSource, slate: np.ndarray, run: Any) -> bool:
    """Every shown document passes each filter, every pin holds its slot, no cap is exceeded."""
    for stage in stages:
        if (stage.stage_id == "structured_filter" and len(slate)
                and not all(stage.conditions[""].evaluate(Subset(fields, slate)))):  # fmt: skip
            return False
    return not violations(slate.tolist(), run.pins, run.caps)
