"""Quality studies on data shaped like a user's, each against a known answer or a strong baseline, through the
platform's own path (lake -> declared features in Feast -> point-in-time training set -> LambdaRank).

- `shop_study`: a synthetic shop with its own catalog (brand, price, quality, categories, titles), text queries,
  request features and position-biased clicks on logged lists. NDCG@10 on the *true* relevance of every candidate
  of fresh requests for (a) the first-stage order, (b) the fixed feature list of earlier releases, (c) the declared
  features, (d) a plain LightGBM on the raw catalog columns; an ablation of (c) by signal family; on held-out
  logged lists, the naive click metric and the debiased IPW-DCG against the true order; and which inputs the
  explanations name.
- `movielens_study`: MovieLens-100K with a strong first stage (recent popularity + genre match, 100 candidates) at
  a global 0.8 temporal cut: the learned model against that first stage and the rule-based ranker, and an
  ablation.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.inputs import ModelInput
from feature_repo.manifest import FeatureManifest
from feature_repo.text import TextIndex
from models.debias import estimate_propensities, ipw_dcg, logged_keys
from models.evaluation import EvaluationReport, evaluate_scores
from models.lambdarank import LambdaRankRanker, TrainConfig, train_lambdarank
from models.lists import RetrievalProtocol, global_cut, logged_lists, relevant_lists
from models.metrics import per_list
from models.training import LEARNED_PARAMS, TrainPlan, rule_based_for, select_families
from models.training_set import TrainingSet, build_training_set
from reranker.featureset import BUNDLED as FEATURESETS
from reranker.featureset import FeatureSet, load_feature_set

FAMILIES_ABLATED = ("first_stage", "metadata", "engagement", "user", "affinity", "collaborative", "query", "request",
                    "context")  # fmt: skip


@dataclass
class Features:
    """A feature build of one feature set in its own directory, applied to its own Feast repo."""

    fs: FeatureSet
    store: Any
    manifest: FeatureManifest
    text: TextIndex | None

    def training_set(self, lists: pd.DataFrame, inputs: list[ModelInput] | None = None) -> TrainingSet:
        return build_training_set(self.store, lists, self.manifest, self.text, inputs)


def build_features(
    events: pd.DataFrame, catalog: pd.DataFrame, fs: FeatureSet, root: Path, seed: int = 7
) -> Features:
    from feature_repo.store import apply, build_tables

    tables = root / "features"
    build_tables(events, catalog, tables, fs, seed=seed)
    store = apply(root / "feast", tables)
    return Features(fs, store, FeatureManifest.read(tables), TextIndex.load(tables))


def _config(rounds: int, threads: int, seed: int, position_aware: bool = True) -> TrainConfig:
    return TrainConfig(num_boost_round=rounds, threads=threads, seed=seed, position_aware=position_aware,
                       params=dict(LEARNED_PARAMS))  # fmt: skip


def _report_rows(report: EvaluationReport, metric: str) -> dict[str, Any]:
    return {"metrics": {r: ms[metric].to_dict() for r, ms in report.metrics.items() if metric in ms},
            "differences": {p: ms[metric].to_dict() for p, ms in report.differences.items() if metric in ms},
            "lists": report.n_lists}  # fmt: skip


def ablation(train: TrainingSet, test: TrainingSet, config: TrainConfig, n_boot: int, seed: int,
             say: Callable[[str], None] = lambda m: None) -> list[dict[str, Any]]:  # fmt: skip
    """NDCG@10 (test labels) of the model without each family, against the model with all: paired intervals."""
    full, _ = train_lambdarank(train.frame, train.X, train.features, config)
    scores = {"all": full.score_matrix(test.X)}
    for family in sorted({i.family for i in train.inputs}):
        keep = [i for i in train.inputs if i.family != family]
        say(f"ablation: without {family} ({len(train.inputs) - len(keep)} inputs)")
        model, _ = train_lambdarank(train.frame, train.matrix(keep), [i.name for i in keep], config)
        scores[f"without {family}"] = model.score_matrix(test.matrix(keep))
    report = evaluate_scores(test.frame, scores, "all", (10,), n_boot, seed)
    rows = []
    for name, ms in report.metrics.items():
        diff = report.differences.get(f"all - {name}", {}).get("ndcg@10")
        rows.append({"model": name, "ndcg@10": ms["ndcg@10"].to_dict(),
                     "family_pays": None if diff is None else bool(diff.low > 0),
                     "all_minus_this": None if diff is None else diff.to_dict()})  # fmt: skip
    return rows


# ---------------------------------------------------------------- the shop


def _raw_columns(frame: pd.DataFrame, catalog: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """A plain script's inputs: the first-stage score, the catalog's raw columns (categories as codes), the
    candidate's request values and the request's context as they are logged."""
    cat = catalog.assign(document_id=catalog["document_id"].astype(str)).set_index("document_id")
    rows = cat.reindex(frame["document_id"].astype(str))
    created = pd.to_datetime(rows["created_at"], utc=True)
    features = [
        json.loads(v) if isinstance(v, str) else {} for v in frame.get("features_json", [None] * len(frame))
    ]
    context = [
        json.loads(v) if isinstance(v, str) else {} for v in frame.get("context_json", [None] * len(frame))
    ]
    columns = {
        "first_stage_score": frame["first_stage_score"].to_numpy(dtype=float),
        "brand": pd.Categorical(rows["brand"], categories=sorted(cat["brand"].dropna().unique())).codes.astype(float),
        "price": rows["price"].to_numpy(dtype=float),
        "quality": rows["quality"].to_numpy(dtype=float),
        "category": pd.Categorical(rows["categories"], categories=sorted(cat["categories"].dropna().unique())
                                   ).codes.astype(float),
        "created_days": ((created - pd.Timestamp(0, tz="UTC")).dt.total_seconds() / 86400).to_numpy(dtype=float),
        "in_stock": np.array([f.get("in_stock", np.nan) for f in features], dtype=float),
        "mobile": np.array([float(c.get("device") == "mobile") if c else np.nan for c in context]),
    }  # fmt: skip
    return np.column_stack(list(columns.values())), list(columns)


def _top_features(model: LambdaRankRanker, X: np.ndarray, top: int = 3) -> dict[str, int]:
    """How often each input is among a row's `top` |SHAP| contributions."""
    contributions = model.contributions(np.ascontiguousarray(X, dtype=np.float32))[:, :-1]
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :top]
    names = np.array(model.feature_names)
    counts = pd.Series(names[order].ravel()).value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def shop_study(root: Path | None = None, seed: int = 7, n_events: int = 400_000, n_judged: int = 3_000,
               rounds: int = 150, threads: int = 2, n_boot: int = 1000,
               say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:  # fmt: skip
    from expectations.ingest import ingest
    from reranker.lake import read_interactions, upsert_documents
    from reranker.settings import Layout
    from reranker.synthetic import (
        SyntheticWorld,
        WorldConfig,
        documents_frame,
        event_chunks,
        judged_requests,
        true_grades,
    )

    work = Path(tempfile.mkdtemp(prefix="shop-study-")) if root is None else root
    world = SyntheticWorld.create(WorldConfig.shop(seed=seed, n_users=2_000, n_docs=1_000, days=60))
    layout = Layout(work / "lake-data")
    layout.raw.mkdir(parents=True, exist_ok=True)
    pd.concat(list(event_chunks(world, n_events)), ignore_index=True).to_parquet(
        layout.raw / "events.parquet"
    )
    ingest(layout.raw / "events.parquet", layout, salt="study", hash_ids=False)
    catalog = documents_frame(world)
    upsert_documents(layout.documents, catalog)
    events = read_interactions(layout.interactions)
    cut = pd.Timestamp(world.config.start) + timedelta(days=0.8 * world.config.days)
    end = pd.Timestamp(world.config.start) + timedelta(days=world.config.days)
    say(f"{len(events):,} logged events; training lists before {cut.date()}, judged requests after")
    logged = logged_lists(events).assign(source="logged")
    logged["label_until"] = pd.to_datetime(logged["event_timestamp"], utc=True)
    logged_ts = logged["label_until"]
    train_lists = relevant_lists(logged[logged_ts < cut])
    held_out = relevant_lists(logged[logged_ts >= cut])
    judged = judged_requests(
        world, n_judged, cut.to_pydatetime(), end.to_pydatetime(), np.random.default_rng(seed + 50)
    )
    config = _config(rounds, threads, seed)
    results: dict[str, Any] = {"world": {"users": world.config.n_users, "documents": world.config.n_docs,
                                         "events": len(events), "training_lists": int(train_lists["list_id"].nunique()),
                                         "judged_requests": n_judged, "candidates_per_request": world.config.n_candidates}}  # fmt: skip
    scores: dict[str, np.ndarray] = {}
    held_scores: dict[str, np.ndarray] = {}
    models: dict[str, tuple[LambdaRankRanker, TrainingSet]] = {}
    for name, file in (("declared", "synthetic.yaml"), ("fixed", "legacy.yaml")):
        say(f"{name} features ({file}): build, Feast apply, training set")
        features = build_features(events, catalog, load_feature_set(FEATURESETS / file), work / name, seed)
        train = features.training_set(train_lists)
        if (
            name == "declared"
        ):  # as `reranker train` does: families a validation period proves harmful are dropped
            kept, checks = select_families(train, TrainPlan(model_id="study", n_boot=n_boot, seed=seed), say)
            results["families"] = [vars(c) for c in checks]
            train = train.with_inputs(kept)
        model, _ = train_lambdarank(train.frame, train.X, train.features, config)
        test = features.training_set(judged, list(train.inputs))
        scores[name] = model.score_matrix(test.X)
        held = features.training_set(held_out, list(train.inputs))
        held_scores[name] = model.score_matrix(held.X)
        models[name] = (model, test)
        results[f"{name}_inputs"] = len(train.inputs)
        if name == "declared":
            declared_train, declared_test = train, test
            rule, rule_inputs = rule_based_for(features.manifest)
            scores["rule_based"] = rule.score_matrix(test.matrix(rule_inputs))
    say("plain LightGBM on the raw columns")
    raw_train, raw_names = _raw_columns(train_lists, catalog)
    plain, _ = train_lambdarank(
        train_lists, raw_train, raw_names, _config(rounds, threads, seed, position_aware=False)
    )
    scores["plain_lightgbm"] = plain.score_matrix(_raw_columns(judged, catalog)[0])
    held_scores["plain_lightgbm"] = plain.score_matrix(_raw_columns(held_out, catalog)[0])
    scores["first_stage"] = judged["first_stage_score"].to_numpy(dtype=float)
    held_scores["first_stage"] = held_out["first_stage_score"].to_numpy(dtype=float)
    truth = evaluate_scores(models["declared"][1].frame, scores, "declared", (5, 10), n_boot, seed)
    results["true_relevance"] = _report_rows(truth, "ndcg@10")
    # held-out logged lists: the naive click metric, the debiased estimate and the truth, ranker by ranker
    theta = estimate_propensities(train_lists["position"].to_numpy(), train_lists["label"].to_numpy() > 0,
                                  logged_keys(train_lists))  # fmt: skip
    held_frame = held_out.reset_index(drop=True).assign(
        grade=true_grades(world, held_out.reset_index(drop=True))
    )
    offline = {}
    for name, s in held_scores.items():
        offline[name] = {
            "naive_click_ndcg@10": float(per_list(held_frame, s, (10,), "label")["ndcg@10"].mean()),
            "ipw_dcg@10": float(ipw_dcg(held_frame, s, theta, (10,))["ipw_dcg@10"].mean()),
            "true_ndcg@10_of_shown": float(per_list(held_frame, s, (10,), "grade")["ndcg@10"].mean()),
            "true_ndcg@10_judged": truth.metrics[name]["ndcg@10"].mean,
        }
    results["logged_lists"] = {"lists": int(held_frame["list_id"].nunique()), "theta": theta.to_dict(),
                               "rankers": offline}  # fmt: skip

    def order_by(metric: str) -> list[str]:
        return sorted(offline, key=lambda ranker: -offline[ranker][metric])

    results["logged_lists"]["orders"] = {m: order_by(m) for m in next(iter(offline.values()))}
    say("ablation of the declared features by family")
    results["ablation"] = ablation(declared_train, declared_test, config, n_boot, seed, say)
    results["explanations"] = _top_features(
        models["declared"][0], declared_test.X[_top_rows(declared_test.frame, scores["declared"])]
    )
    return results


def _top_rows(frame: pd.DataFrame, scores: np.ndarray, k: int = 10) -> np.ndarray:
    """The rows a ranker returns (its top k of each list)."""
    work = pd.DataFrame({"list_id": frame["list_id"].to_numpy(), "s": scores, "i": np.arange(len(frame))})
    work = work.sort_values(["list_id", "s"], ascending=[True, False], kind="stable")
    return work.groupby("list_id", sort=False).head(k)["i"].to_numpy()


# ---------------------------------------------------------------- MovieLens


def movielens_study(cache: Path, root: Path | None = None, seed: int = 7, quantile: float = 0.8, rounds: int = 150,
                    threads: int = 2, n_boot: int = 1000, say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:  # fmt: skip
    """A global temporal cut with the popularity + genre first stage (100 candidates per eligible user)."""
    from reranker.datasets import movielens

    work = Path(tempfile.mkdtemp(prefix="movielens-study-")) if root is None else root
    events, catalog = movielens(cache)
    protocol = RetrievalProtocol(retriever="popularity_genre", n_candidates=100)
    say("lists: popularity + genre first stage, global cut at the 0.8 quantile of time")
    train_lists, test_lists = global_cut(events, protocol, quantile, catalog)
    train_lists, test_lists = relevant_lists(train_lists), relevant_lists(test_lists)
    features = build_features(events, catalog, load_feature_set(FEATURESETS / "movielens.yaml"), work, seed)
    train = features.training_set(train_lists.assign(source="ratings", label_until=train_lists["event_timestamp"]
                                                     + pd.Timedelta(days=protocol.horizon_days)))  # fmt: skip
    kept, checks = select_families(
        train, TrainPlan(model_id="study", n_boot=n_boot, seed=seed, protocol=protocol), say
    )
    train = train.with_inputs(kept)
    test = features.training_set(test_lists, kept)
    config = _config(rounds, threads, seed)
    say(
        f"training on {train.n_lists:,} lists ({len(train.inputs)} inputs), testing {test.n_lists:,} users at the cut"
    )
    model, _ = train_lambdarank(train.frame, train.X, train.features, config)
    rule, rule_inputs = rule_based_for(features.manifest)
    scores = {"learned": model.score_matrix(test.X), "first_stage": test.frame["first_stage_score"].to_numpy(float),
              "rule_based": rule.score_matrix(test.matrix(rule_inputs))}  # fmt: skip
    report = evaluate_scores(test.frame, scores, "learned", (5, 10, 20), n_boot, seed)
    return {"cut": str(pd.to_datetime(test.frame["event_timestamp"], utc=True).min()), "train_lists": train.n_lists,
            "test_lists": test.n_lists, "inputs": len(train.inputs), "ndcg@10": _report_rows(report, "ndcg@10"),
            "mrr@10": _report_rows(report, "mrr@10"), "recall@10": _report_rows(report, "recall@10"),
            "families": [vars(c) for c in checks], "ablation": ablation(train, test, config, n_boot, seed, say),
            "explanations": _top_features(model, test.X[_top_rows(test.frame, scores["learned"])])}  # fmt: skip
