"""Train -> evaluate -> gate -> register: the offline half of the loop, as plain functions.

Lists come from every source the lake holds (`build_lists`): logged lists (served lists with their impressions and
clicks) and retrieval lists (ratings, by the rolling-origin protocol), side by side. Their features come from the
declared feature set, point in time (`models.training_set`).

Evaluation is rolling-origin: the test period (lists at or after a time quantile) is cut into folds by time; each
fold is scored by a model trained only on lists whose labels were complete before the fold starts (a fixed number
of boosting rounds: early stopping on the few lists of a validation period proved erratic). The registered model is
then fitted on every complete list with the same settings, so metrics and gates describe the procedure that
produced it. On logged lists the comparison also reads the debiased IPW-DCG (`models.debias`), which the click
labels' favour for the logging order does not reach. The better fallback on the same lists (first-stage order
unless the rule-based ranker is proven better) is recorded on the model card.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

from feature_repo.inputs import InputsUnavailable, ModelInput, available_inputs, used_encodings
from feature_repo.manifest import FeatureManifest
from feature_repo.text import TextIndex
from models.card import GateStatus, GateVerdict, ModelCard
from models.debias import Propensities, estimate_propensities, logged_keys
from models.evaluation import EvaluationReport, evaluate_scores
from models.gates import GatePolicy, check_gates, failure_reason
from models.lambdarank import LambdaRankRanker, TrainConfig, train_lambdarank, train_lambdarank_subsets
from models.lists import RetrievalProtocol, logged_lists, relevant_lists, retrieval_lists
from models.ranker import FirstStageRanker
from models.registry import CANARY, CHAMPION, PIP_REQUIREMENTS, LoadedModel, Registry
from models.rule_based import RuleBasedRanker
from models.training_set import TrainingSet, build_training_set, check_listing_memory, check_memory
from reranker.engine import RayCluster
from reranker.lake import LakeEvents

# max_depth 5: TreeSHAP explanations cost O(trees x leaves x depth^2); on MovieLens depth 5 kept NDCG@10 within
# 0.004 of unlimited depth (0.294 vs 0.297) at about half the explanation time of serving.
LEARNED_PARAMS = {"learning_rate": 0.03, "num_leaves": 15, "max_depth": 5, "min_data_in_leaf": 100,
                  "feature_fraction": 0.8, "lambda_l2": 5.0}  # fmt: skip
KEY_METRICS = ("ndcg@10", "mrr@10", "recall@10", "ipw_dcg@10")
# The lake's events, or the lake to read them from: read after a check of the listing's memory against the plan's
# budget, and dropped once the lists are built (at 10M events the listing peaks at ≈ 7 GB).
Events: TypeAlias = pd.DataFrame | LakeEvents


class TrainingError(ValueError):
    """Training cannot start or finish on this data; the message says what is missing and what to do."""


@dataclass
class TrainPlan:
    model_id: str
    ks: tuple[int, ...] = (5, 10, 20)
    folds: int = 3
    n_boot: int = 1000
    seed: int = 7
    protocol: RetrievalProtocol = field(default_factory=RetrievalProtocol)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(num_boost_round=150, params=dict(LEARNED_PARAMS))
    )
    gates: GatePolicy = field(default_factory=GatePolicy)
    feature_service: str = "reranker_features"
    drop_families: tuple[str, ...] = ()  # ablations: model inputs of these families left out
    select_families: bool = True  # drop a family a validation period proves harmful (see `select_families`)
    validation_from_quantile: float = 0.4  # validation lists: from here to the test period
    # the family selection's models train on at most this many lists, the most recent before the validation period
    # (at 10M events its ten fits over all ≈ 226k of them took 557 s, over 100k 197 s; the verdict reads the
    # validation period, which is kept whole)
    selection_max_lists: int = 100_000
    memory_gb: float | None = (
        None  # refuse up front a training set whose build would need more (None: no budget)
    )

    @classmethod
    def create(cls, model_id: str, seed: int, rounds: int, threads: int, gates: GatePolicy | None = None,
               ray: RayCluster | None = None, memory_gb: float | None = None) -> TrainPlan:  # fmt: skip
        """The plan the entry points (CLI, flows) run: default evaluation, these boosting rounds and threads, on the
        local engine or Ray Train on `ray`, within `memory_gb` (the listing's and training's estimated peaks)."""
        plan = cls(model_id=model_id, seed=seed, gates=gates or GatePolicy(), memory_gb=memory_gb)
        plan.train.num_boost_round, plan.train.threads, plan.train.ray = rounds, threads, ray
        return plan


@dataclass
class TrainOutcome:
    model_id: str
    version: str | None
    alias: str | None
    gates: dict[str, GateVerdict]
    report: EvaluationReport
    champion_version: str | None
    run_id: str | None
    card: ModelCard
    data: dict[str, Any]
    seconds: dict[str, float]
    report_text: str = ""  # the evaluation summary (markdown), as MLflow shows it

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates.values())

    def summary(self, metrics: tuple[str, ...] = KEY_METRICS) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "version": self.version,
            "alias": self.alias,
            "passed_gates": self.passed,
            "gates": {
                k: {"passed": g.passed, "status": g.status.value, "detail": g.detail}
                for k, g in self.gates.items()
            },
            "n_lists": self.report.n_lists,
            "metrics": {
                r: {m: ms[m].to_dict() for m in metrics if m in ms} for r, ms in self.report.metrics.items()
            },
            "differences": {
                p: {m: d[m].to_dict() for m in metrics if m in d} for p, d in self.report.differences.items()
            },
            "fallback": {"name": self.card.fallback, "reason": self.card.fallback_reason},
            "feature_set": {
                "name": self.card.feature_set,
                "version": self.card.feature_set_version,
                "inputs": len(self.card.inputs),
            },
            "data": self.data,
            "seconds": self.seconds,
            "run_id": self.run_id,
            "report": self.report_text,
        }


def build_lists(events: pd.DataFrame, protocol: RetrievalProtocol, catalog: pd.DataFrame | None = None,
                progress: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:  # fmt: skip
    """Every source of ranking lists the lake holds, combined: logged lists (impressions of served lists, with their
    clicks and purchases) and retrieval lists (ratings); each row carries `label_until`, when its label was
    complete (a logged list's at once, a retrieval list's after the horizon). Lists without a positive are kept
    here (the caller drops them for training). Also: lists per source."""
    parts: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    imp = events["interaction_type"] == "impression"
    if (imp & events["request_id"].notna()).any():
        logged = logged_lists(events).assign(source="logged")
        logged["label_until"] = pd.to_datetime(logged["event_timestamp"], utc=True)
        parts.append(logged)
        counts["logged"] = int(logged["list_id"].nunique())
    ratings = events[(events["interaction_type"] == "rating") & events["value"].notna()]
    if len(ratings):
        retrieved = retrieval_lists(ratings, protocol, progress=progress, catalog=catalog).assign(
            source="ratings"
        )
        retrieved["label_until"] = pd.to_datetime(retrieved["event_timestamp"], utc=True) + pd.Timedelta(
            days=protocol.horizon_days)  # fmt: skip
        parts.append(retrieved)
        counts["ratings"] = int(retrieved["list_id"].nunique())
    if not parts:
        raise TrainingError("the lake holds neither logged lists (impressions with a request_id) nor ratings: "
                            "ingest served lists with their clicks, or ratings, then train again")  # fmt: skip
    lists = pd.concat(parts, ignore_index=True, sort=False)
    return lists, counts


def _list_index(data: TrainingSet) -> pd.DataFrame:
    starts = data.block.list_starts[:-1]
    frame = data.frame.iloc[starts]
    return pd.DataFrame({"list_id": frame["list_id"].to_numpy(), "user_id": frame["user_id"].to_numpy(),
                         "event_timestamp": pd.to_datetime(frame["event_timestamp"], utc=True).to_numpy(),
                         "label_until": pd.to_datetime(frame["label_until"], utc=True).to_numpy()})  # fmt: skip


@dataclass(frozen=True)
class Folds:
    """Rolling-origin folds: each fold's start, the lists (positions in the set) complete before it that its model
    trains on, and the lists it scores."""

    starts: list[pd.Timestamp]
    past: list[np.ndarray]
    test: list[np.ndarray]

    @property
    def tested(self) -> np.ndarray:
        """Every fold's test lists, in fold order (the order of the out-of-sample scores)."""
        return np.concatenate(self.test)


def plan_folds(data: TrainingSet, plan: TrainPlan) -> Folds:
    """The test period (lists from the protocol's `test_from_quantile` of time) cut into `plan.folds` folds; each
    fold's model sees only lists whose labels were complete before the fold starts."""
    lists = _list_index(data)
    ts = pd.to_datetime(lists["event_timestamp"], utc=True)
    until = pd.to_datetime(lists["label_until"], utc=True)
    test_from = ts.quantile(plan.protocol.test_from_quantile)
    test_times = np.sort(ts[ts >= test_from].unique())
    if len(test_times) == 0:
        raise TrainingError(
            "no lists in the test period: the lake's lists all share one time; log more traffic"
        )
    folds = Folds([], [], [])
    for fold in (f for f in np.array_split(test_times, min(plan.folds, len(test_times))) if len(f)):
        start = pd.Timestamp(fold[0])
        past = np.flatnonzero((until <= start).to_numpy() & (ts < start).to_numpy())
        if len(past) < 10:
            raise TrainingError(f"fold from {start}: only {len(past)} lists with complete labels before it (need 10): "
                                "the lake covers too short a time; log more traffic or lower the test share")  # fmt: skip
        folds.starts.append(start)
        folds.past.append(past)
        folds.test.append(np.flatnonzero(ts.isin(pd.DatetimeIndex(fold)).to_numpy()))
    return folds


def rolling_origin(data: TrainingSet, folds: Folds, plan: TrainPlan, say: Callable[[str], None] = lambda m: None
                   ) -> tuple[np.ndarray, list[dict[str, Any]]]:  # fmt: skip
    """The learned scores of `folds.tested`, fold by fold, each from a model trained on its `past` lists."""
    scores, info = [], []
    for number, (start, past, test_pos) in enumerate(
        zip(folds.starts, folds.past, folds.test, strict=True), 1
    ):
        say(f"fold {number}/{len(folds.starts)}: training on {len(past)} lists, scoring {len(test_pos)}")
        keys, rows = data.fit_rows(past)
        model, fit = train_lambdarank(keys, data.X, data.features, plan.train, rows=rows)
        scores.append(model.score_matrix(data.X[data.rows(test_pos)]))
        info.append({"fold_start": str(start), "train_lists": len(past),
                     "test_lists": len(test_pos), "trees": fit["num_trees"]})  # fmt: skip
    return np.concatenate(scores), info


@dataclass
class FamilyCheck:
    family: str
    inputs: int
    metric: str
    without_minus_with: dict[str, float]
    dropped: bool


def select_families(data: TrainingSet, plan: TrainPlan, say: Callable[[str], None] = lambda m: None
                    ) -> tuple[list[ModelInput], list[FamilyCheck]]:  # fmt: skip
    """Which input families to keep: each family is left out in turn on a validation period before the test period
    (lists between the `validation_from_quantile` and `test_from_quantile` of time, the model trained on lists
    complete before it - at most `selection_max_lists`, the newest - at half the rounds), and dropped only when the
    model is better without it with a paired interval above zero - e.g. first-stage inputs that on logged lists
    mostly echo the logged position. On logged lists the comparison reads the debiased IPW-DCG@10, else NDCG@10.
    Nothing is dropped without enough lists."""
    lists = _list_index(data)
    ts = pd.to_datetime(lists["event_timestamp"], utc=True)
    until = pd.to_datetime(lists["label_until"], utc=True)
    start, end = ts.quantile(plan.validation_from_quantile), ts.quantile(plan.protocol.test_from_quantile)
    train_pos = np.flatnonzero(((until <= start) & (ts < start)).to_numpy())
    if len(train_pos) > plan.selection_max_lists:
        newest = np.argsort(ts.to_numpy()[train_pos], kind="stable")[-plan.selection_max_lists :]
        train_pos = np.sort(train_pos[newest])
    valid_pos = np.flatnonzero(((ts >= start) & (ts < end)).to_numpy())
    families = sorted({i.family for i in data.inputs})
    if len(train_pos) < plan.gates.min_lists or len(valid_pos) < plan.gates.min_lists or len(families) < 2:
        return list(data.inputs), []
    (train, train_X), (valid, valid_X) = data.fit_part(train_pos), data.fit_part(valid_pos)
    logged = bool(valid["source"].eq("logged").all()) if "source" in valid else False
    propensities = propensities_of(train) if logged else None
    config = TrainConfig(**{**vars(plan.train), "num_boost_round": max(20, plan.train.num_boost_round // 2)})
    metric = "ipw_dcg@10" if propensities is not None else "ndcg@10"

    # every family left out in turn, fitted together (on Ray: one run of the workers); each a subset of X's columns
    say(f"input families: validating without each of {', '.join(families)}")
    subsets: list[np.ndarray | None] = [None]
    for family in families:
        at = data.columns([i for i in data.inputs if i.family != family])
        assert at is not None  # a subset of data's inputs
        subsets.append(at)
    fitted = train_lambdarank_subsets(train, train_X, data.features, subsets, config)
    scores = {name: model.score_matrix(valid_X if at is None else valid_X[:, at])
              for name, at, (model, _) in zip(["all", *families], subsets, fitted, strict=True)}  # fmt: skip
    report = evaluate_scores(valid, scores, "all", (10,), plan.n_boot, plan.seed, propensities=propensities)
    checks, drop = [], set()
    for family in families:
        iv = report.differences[f"all - {family}"][metric]
        better_without = (
            iv.high < 0
        )  # (all - without) below zero: (without - all) has its interval above zero
        checks.append(FamilyCheck(family, sum(i.family == family for i in data.inputs), metric,
                                  {"mean": -iv.mean, "low": -iv.high, "high": -iv.low}, better_without))  # fmt: skip
        if better_without:
            drop.add(family)
    if len(drop) == len(families):
        drop = set()
    return [i for i in data.inputs if i.family not in drop], checks


def inputs_by_name(manifest: FeatureManifest, names: list[str]) -> list[ModelInput]:
    have = {i.name: i for i in available_inputs(manifest)}
    return [have[n] for n in names]


def rule_based_for(manifest: FeatureManifest) -> tuple[RuleBasedRanker, list[ModelInput]]:
    """The rule-based ranker over what this build supplies, and its inputs."""
    ranker = RuleBasedRanker.for_inputs([i.name for i in available_inputs(manifest)])
    return ranker, inputs_by_name(manifest, ranker.feature_names)


def propensities_of(frame: pd.DataFrame) -> Propensities | None:
    """Examination propensities from the logged lists' positions and clicks (None without logged positions)."""
    if "position" not in frame or "source" not in frame:
        return None
    logged = frame[(frame["source"] == "logged") & frame["position"].notna()]
    if logged.empty or logged["position"].nunique() < 2:
        return None
    return estimate_propensities(
        logged["position"].to_numpy(), logged["label"].to_numpy() > 0, logged_keys(logged)
    )


@dataclass
class Baselines:
    """What the evaluation needs from the test lists' feature values, computed before they are dropped: the
    rule-based ranker's scores of every test row, and the champion's of the lists after its training window."""

    rule_based: np.ndarray
    fresh: np.ndarray | None = None  # test rows after the champion's window (None: no champion)
    # the champion's scores of those rows (None: no champion, or the features no longer supply its inputs)
    champion: np.ndarray | None = None


def baseline_scores(data: TrainingSet, positions: np.ndarray, champion: LoadedModel | None) -> Baselines:
    """The baselines' scores of the lists at `positions` (the test lists, in that order), read from `data` before
    its block's values are dropped; only the champion's fresh lists are ever recomputed from those values."""
    rule, rule_inputs = rule_based_for(data.manifest)
    out = Baselines(rule.score_matrix(data.matrix_of(positions, rule_inputs)))
    if champion is not None:
        # Only lists after the champion's training window are fair to it and to the candidate alike.
        starts, ends = data.block.list_starts[positions], data.block.list_starts[positions + 1]
        times = pd.to_datetime(data.frame["event_timestamp"].to_numpy()[data.rows(positions)], utc=True)
        offsets = np.r_[0, np.cumsum(ends - starts)[:-1]].astype(np.int64)
        after = np.maximum.reduceat(np.asarray(times > pd.Timestamp(champion.card.data_end)), offsets) \
            if len(times) else np.zeros(0, bool)  # fmt: skip
        out.fresh = np.repeat(after, ends - starts)
        try:
            champion_X = data.matrix_of(positions[after], champion.card.inputs, champion.card.encodings)
        except InputsUnavailable:
            return out  # the current features no longer supply the champion: not comparable offline
        out.champion = LambdaRankRanker(champion.booster).score_matrix(champion_X)
    return out


def evaluate_against_baselines(test: pd.DataFrame, learned: np.ndarray, baselines: Baselines, plan: TrainPlan,
                               champion: LoadedModel | None, propensities: Propensities | None
                               ) -> EvaluationReport:  # fmt: skip
    scores = {
        "learned": learned,
        "first_stage": FirstStageRanker().score_matrix(
            test["first_stage_score"].to_numpy(dtype=float)[:, None]
        ),
        "rule_based": baselines.rule_based,
    }
    logged = test["source"].eq("logged").all() if "source" in test else False
    report = evaluate_scores(test, scores, "learned", plan.ks, plan.n_boot, plan.seed,
                             propensities=propensities if logged else None)  # fmt: skip
    fallbacks = evaluate_scores(test, {"rule_based": scores["rule_based"], "first_stage": scores["first_stage"]},
                                "rule_based", plan.ks, plan.n_boot, plan.seed,
                                propensities=propensities if logged else None)  # fmt: skip
    report.differences["rule_based - first_stage"] = fallbacks.differences["rule_based - first_stage"]
    if champion is not None and baselines.fresh is not None:
        fresh = test[baselines.fresh].reset_index(drop=True)
        report.champion_lists = int(fresh["list_id"].nunique())
        if "served_by_version" in fresh and len(fresh):
            # Clicks on lists the champion ranked favour the champion's order: naive labels cannot compare them.
            report.champion_logged = bool((fresh["served_by_version"] == champion.version).mean() >= 0.5)
        debiased = propensities is not None and logged
        if report.champion_lists >= plan.gates.min_lists and (debiased or not report.champion_logged):
            if baselines.champion is None:
                return report
            versus = evaluate_scores(fresh, {"learned": learned[baselines.fresh], "champion": baselines.champion},
                                     "learned", plan.ks, plan.n_boot, plan.seed,
                                     propensities=propensities if debiased else None)  # fmt: skip
            report.metrics["champion"] = versus.metrics["champion"]
            report.differences["learned - champion"] = versus.differences["learned - champion"]
    return report


def choose_fallback(
    report: EvaluationReport, logged: bool
) -> tuple[Literal["first_stage", "rule_based"], str]:
    """The fallback to serve when the model cannot: the first-stage order (the caller's own), unless the rule-based
    ranker beat it on these lists with a paired interval above zero."""
    diff = report.differences["rule_based - first_stage"]
    metric = "ipw_dcg@10" if logged and "ipw_dcg@10" in diff else "ndcg@10"
    iv = diff[metric]
    said = f"{metric} rule-based - first-stage order {iv.mean:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}] on the test lists"
    if iv.low > 0:
        return "rule_based", said
    return "first_stage", said + " (the caller's order unless the rule is proven better)"


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def register(
    registry: Registry,
    plan: TrainPlan,
    model: LambdaRankRanker,
    report: EvaluationReport,
    card: ModelCard,
    serving_files: dict[str, Path],
    artifact_root: Path | None,
    lists: pd.DataFrame | None = None,
    test_window: tuple[str, str] | None = None,
) -> tuple[str, str | None, str, str]:
    """Log the run and the model, register a version, tag it and give it an alias if it passed the gates; also the
    evaluation summary (`models.report`) as the run's and the version's description. Returns the version, its alias,
    the run id and the summary."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from models.report import input_label, logged_metrics, summary_markdown

    experiment_id = registry.experiment(plan.model_id, artifact_root)
    importance = model.importance()
    champion_before = registry.aliases(plan.model_id).get(CHAMPION)
    reason = failure_reason(card.gates)
    with (
        registry.active(),
        mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{plan.model_id}") as run,
    ):
        mlflow.log_params({"folds": plan.folds, "num_boost_round": plan.train.num_boost_round,
                           "position_aware": card.position_aware, "feature_set": card.feature_set,
                           "feature_set_version": card.feature_set_version, "inputs": len(card.inputs),
                           "fallback": card.fallback, **{f"lgb_{k}": v for k, v in plan.train.params.items()},
                           **{f"protocol_{k}": v for k, v in vars(plan.protocol).items()}})  # fmt: skip
        gate_metric = plan.gates.logged_metric if card.metrics.get(f"learned.{plan.gates.logged_metric}") is not None \
            else plan.gates.metric  # fmt: skip
        mlflow.log_metrics(logged_metrics(report, gate_metric))
        if lists is not None:  # lineage: the training lists (keys and labels) as the run's input dataset
            keys = lists[["list_id", "user_id", "document_id", "event_timestamp", "label"]]
            mlflow.log_input(from_pandas(keys, name="training_lists", targets="label"), context="training")
        mlflow.set_tags({"data_window": card.window, "dataset_digest": card.dataset_digest, "code_version": card.code_version,
                         "feature_set": f"{card.feature_set} {card.feature_set_version}",
                         "gates_passed": str(reason is None)})  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            from models.plots import feature_importance, paired_differences

            plots = Path(tmp)
            paired_differences(report, plots / "paired_differences.png")
            feature_importance(importance, plots / "feature_importance.png",
                               {i.name: input_label(i) for i in card.inputs})  # fmt: skip
            (plots / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2))
            mlflow.log_artifacts(str(plots), artifact_path="evaluation")
            serving = Path(tmp) / "serving"
            serving.mkdir()
            from models.card import CARD_FILE

            (serving / CARD_FILE).write_text(card.model_dump_json(indent=2))
            for name, src in serving_files.items():
                if src.exists():
                    (serving / name).write_bytes(src.read_bytes())
            mlflow.log_artifacts(str(serving), artifact_path="serving")
        info = mlflow.lightgbm.log_model(model.booster, name="model", pip_requirements=PIP_REQUIREMENTS,
                                         registered_model_name=plan.model_id)  # fmt: skip
        version = str(info.registered_model_version)
        run_id = run.info.run_id
        alias = None if reason is not None else CHAMPION if champion_before is None else CANARY
        summary = summary_markdown(card, report, version, alias, reason, importance, test_window)
        mlflow.log_text(summary, "evaluation/summary.md")
        mlflow.set_tag("mlflow.note.content", summary)  # the run's description in the UI
    tags = {
        **{
            "metric." + k.replace("@", "_at_").replace(" - ", "_minus_"): f"{v:.4f}"
            for k, v in card.metrics.items()
        },
        "ndcg_at_10": f"{card.metrics.get('learned.ndcg@10', float('nan')):.4f}",
        "data_window": card.window,
        "dataset_digest": card.dataset_digest,
        "feature_set": f"{card.feature_set} {card.feature_set_version}",
        "fallback": card.fallback,
        "code_version": card.code_version,
        "n_lists": report.n_lists,
        **{f"gate.{k}": g.tag() for k, g in card.gates.items()},
    }
    if alias is not None:
        registry.set_alias(plan.model_id, alias, version)
    else:
        tags["rejected_reason"] = reason
    registry.tag_version(plan.model_id, version, tags)
    registry.describe_version(plan.model_id, version, summary)
    return version, alias, run_id, summary


@dataclass
class ProcedureEvaluation:
    """The rolling-origin evaluation of the training procedure on the lake, with its gates."""

    data: TrainingSet
    report: EvaluationReport
    gates: dict[str, GateVerdict]
    champion: LoadedModel | None
    folds: list[dict[str, Any]]
    sources: dict[str, int]
    positive_lists: dict[str, int]
    propensities: Propensities | None
    fallback: tuple[Literal["first_stage", "rule_based"], str]
    families: list[FamilyCheck]
    seconds: dict[str, float]


def load_features(tables_dir: Path) -> tuple[FeatureManifest, TextIndex | None]:
    try:
        manifest = FeatureManifest.read(tables_dir)
    except FileNotFoundError as exc:
        raise TrainingError(f"{exc}") from None
    return manifest, TextIndex.load(tables_dir)


def training_set_for(events: Events, store: Any, plan: TrainPlan, tables_dir: Path,
                     catalog: pd.DataFrame | None = None, progress: bool = False,
                     say: Callable[[str], None] = lambda m: None
                     ) -> tuple[TrainingSet, dict[str, int], dict[str, int]]:  # fmt: skip
    """The lake's lists with a positive -> the point-in-time training set (the plan's dropped families left out);
    also the lists per source, and those with a positive."""
    budget = f" (budget {plan.memory_gb:g} GB)" if plan.memory_gb else ""
    if isinstance(events, LakeEvents):
        need = check_listing_memory(events.count(), plan.memory_gb)
        say(f"listing the lake: ≈ {need:.1f} GB at its peak{budget}")
    manifest, text = load_features(tables_dir)
    # not bound to a name here: the frame is freed as soon as the lists are built
    lists, sources = build_lists(events.read() if isinstance(events, LakeEvents) else events, plan.protocol,
                                 catalog, progress=progress)  # fmt: skip
    all_lists = lists["list_id"].nunique()
    lists = relevant_lists(lists)  # before the join: the others would be dropped after it
    if lists.empty:
        raise TrainingError(f"none of the {all_lists} lists built from the lake ({sources}) has a positive "
                            "(a click, purchase or rating >= 4): post the users' interactions to /interactions "
                            "(or ingest them), then train again")  # fmt: skip
    positives = {str(k): int(v) for k, v in lists.groupby("source")["list_id"].nunique().items()}
    say(
        "lists: "
        + ", ".join(f"{positives.get(s, 0):,} of {n:,} {s} lists have a positive" for s, n in sources.items())
    )
    need = check_memory(len(lists), int(lists["list_id"].nunique()), manifest, plan.memory_gb, plan.train.ray)
    say(f"training: ≈ {need:.1f} GB at its peak{budget}")
    data = build_training_set(store, lists, manifest, text)
    if plan.drop_families:
        data = data.with_inputs([i for i in data.inputs if i.family not in plan.drop_families])
    say(f"training set: {data.n_lists:,} lists, {len(data.frame):,} rows, {len(data.inputs)} inputs "
        f"(feature set {manifest.feature_set.name} {manifest.version})")  # fmt: skip
    return data, sources, positives


def evaluate_procedure(events: Events, store: Any, registry: Registry, plan: TrainPlan, tables_dir: Path,
                       catalog: pd.DataFrame | None = None, progress: bool = False,
                       say: Callable[[str], None] = lambda m: None) -> ProcedureEvaluation:  # fmt: skip
    """Lists -> point-in-time training set -> rolling-origin scores -> metrics against the baselines and the
    champion -> gates. Registers nothing."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    data, sources, positives = training_set_for(events, store, plan, tables_dir, catalog, progress, say)
    champion = registry.load(plan.model_id, CHAMPION) if CHAMPION in registry.aliases(plan.model_id) else None
    folds = plan_folds(data, plan)
    baselines = baseline_scores(data, folds.tested, champion)
    data = data.without_values()  # from here on what is read is X: the block's values (GBs at 10M events) go
    test = data.frame_of(folds.tested)
    checks: list[FamilyCheck] = []
    if plan.select_families:
        kept, checks = select_families(data, plan, say)
        dropped = [c.family for c in checks if c.dropped]
        if dropped:
            say(f"input families dropped (the validation period ranks better without them): {dropped}")
            data = data.with_inputs(kept)
    seconds["training_set"] = time.perf_counter() - t
    t = time.perf_counter()
    learned, fold_info = rolling_origin(data, folds, plan, say)
    propensities = propensities_of(data.frame[~data.frame["list_id"].isin(test["list_id"].unique())])
    report = evaluate_against_baselines(test, learned, baselines, plan, champion, propensities)
    logged = bool(test["source"].eq("logged").all()) if "source" in test else False
    gates = check_gates(report, plan.gates, has_champion=champion is not None, logged_lists=logged)
    fallback = choose_fallback(report, logged)
    seconds["evaluate"] = time.perf_counter() - t
    return ProcedureEvaluation(
        data, report, gates, champion, fold_info, sources, positives, propensities, fallback, checks, seconds
    )


def make_card(plan: TrainPlan, ev: ProcedureEvaluation, position_aware: bool) -> ModelCard:
    data, report = ev.data, ev.report
    start, end = data.window()
    metrics = {
        f"{r}.{m}": iv.mean for r, ms in report.metrics.items() for m, iv in ms.items() if m in KEY_METRICS
    }
    metrics.update({f"{p}.{m}": iv.mean for p, ms in report.differences.items() for m, iv in ms.items()
                    if m in KEY_METRICS})  # fmt: skip
    return ModelCard(model_id=plan.model_id, feature_set=data.manifest.feature_set.name,
                     feature_set_version=data.manifest.version, inputs=list(data.inputs),
                     encodings=used_encodings(list(data.inputs), data.manifest), data_start=start.to_pydatetime(),
                     data_end=end.to_pydatetime(), lists=data.n_lists, rows=len(data.frame),
                     dataset_digest=data.digest(), sources=ev.sources, positive_lists=ev.positive_lists, position_aware=position_aware,
                     fallback=ev.fallback[0], fallback_reason=ev.fallback[1], gates=ev.gates, metrics=metrics,
                     dropped_families=[c.family for c in ev.families if c.dropped],
                     code_version=code_version(), trained_at=datetime.now(UTC))  # fmt: skip


def train_and_register(
    events: Events,
    store: Any,
    registry: Registry,
    plan: TrainPlan,
    tables_dir: Path,
    serving_files: dict[str, Path],
    artifact_root: Path | None = None,
    catalog: pd.DataFrame | None = None,
    progress: bool = False,
    say: Callable[[str], None] = lambda m: None,
) -> TrainOutcome:
    ev = evaluate_procedure(events, store, registry, plan, tables_dir, catalog, progress, say)
    data, seconds = ev.data, ev.seconds
    t = time.perf_counter()
    say(f"final model: training on all {data.n_lists:,} lists")
    final, fit = train_lambdarank(data.frame, data.X, data.features, plan.train)
    seconds["train_final"] = time.perf_counter() - t
    card = make_card(plan, ev, fit["position_aware"])
    info = {"window": card.window, "digest": card.dataset_digest, "lists": data.n_lists, "rows": len(data.frame),
            "folds": ev.folds, "position_aware": fit["position_aware"], "sources": ev.sources,
            "positive_lists": ev.positive_lists,
            "propensities": ev.propensities.to_dict() if ev.propensities else None,
            "families": [vars(c) for c in ev.families]}  # fmt: skip
    t = time.perf_counter()
    say("registering in MLflow")
    test_window = (ev.folds[0]["fold_start"], str(card.data_end)) if ev.folds else None
    version, alias, run_id, report_text = register(registry, plan, final, ev.report, card, serving_files,
                                                   artifact_root, lists=data.frame, test_window=test_window)  # fmt: skip
    seconds["register"] = time.perf_counter() - t
    return TrainOutcome(plan.model_id, version, alias, ev.gates, ev.report,
                        ev.champion.version if ev.champion else None, run_id, card, info,
                        {k: round(v, 2) for k, v in seconds.items()}, report_text)  # fmt: skip


def gate_summary(gates: dict[str, GateVerdict]) -> str:
    return "  ".join(f"{k} {'✓' if g.status is GateStatus.passed else '✗' if not g.passed else '–'}"
                     for k, g in gates.items())  # fmt: skip
