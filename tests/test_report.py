"""The evaluation report: gates in words, intervals, declared input names, few rounded metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from feature_repo.inputs import ModelInput
from feature_repo.manifest import Encodings
from models.card import GateStatus, GateVerdict, ModelCard
from models.evaluation import EvaluationReport, Interval
from models.report import input_label, logged_metrics, summary_markdown


def _card(gates: dict[str, GateVerdict]) -> ModelCard:
    inputs = [ModelInput(name="metadata.genres#03", family="metadata", op="slot", attribute="genres", slot=3,
                         description="Thriller"),
              ModelInput(name="affinity.genres", family="affinity", op="affinity", attribute="genres")]  # fmt: skip
    return ModelCard(model_id="m", feature_set="fs", feature_set_version="v1", inputs=inputs, encodings=Encodings(),
                     data_start=datetime(2026, 1, 1, tzinfo=UTC), data_end=datetime(2026, 2, 1, tzinfo=UTC), lists=500,
                     rows=5000, dataset_digest="d", sources={"ratings": 700}, fallback="rule_based",
                     fallback_reason="ndcg@10 rule-based - first-stage order +0.05 [+0.01, +0.09]", gates=gates,
                     trained_at=datetime(2026, 2, 1, tzinfo=UTC))  # fmt: skip


def _report() -> EvaluationReport:
    iv = Interval(0.31234567, 0.28, 0.35)
    return EvaluationReport(
        n_lists=240, n_lists_without_relevant=0,
        metrics={"learned": {"ndcg@10": iv, "ndcg@5": iv}, "first_stage": {"ndcg@10": Interval(0.2, 0.18, 0.22)},
                 "champion": {"ndcg@10": Interval(0.3, 0.27, 0.33)}},
        differences={"learned - first_stage": {"ndcg@10": Interval(0.11234567, 0.09, 0.13)},
                     "learned - champion": {"ndcg@10": Interval(0.012, -0.004, 0.03)}},
        champion_lists=120)  # fmt: skip


def test_the_summary_says_each_gate_in_words_and_a_comparison_not_made_is_not_a_pass():
    gates = {"beats_first_stage": GateVerdict(status=GateStatus.passed, detail="ndcg@10 difference +0.1123"),
             "beats_rule_based": GateVerdict(status=GateStatus.failed, detail="ndcg@10 difference -0.0100"),
             "not_worse_than_champion": GateVerdict(status=GateStatus.not_gated,
                                                    detail="not compared: 0 lists after the champion's window")}  # fmt: skip
    importance = pd.Series({"metadata.genres#03": 30.0, "affinity.genres": 10.0})
    text = summary_markdown(_card(gates), _report(), "4", None, "beats_rule_based: worse", importance)
    assert text.startswith("# m v4: **rejected**: beats_rule_based: worse")
    assert "✅ pass **beats first stage**" in text and "❌ fail **beats rule based**" in text
    assert "➖ not compared **not worse than champion**: not compared: 0 lists" in text
    assert "| learned (this version) | 0.3123 [0.2800, 0.3500] |" in text
    assert "| champion (on the 120 lists after its window) | 0.3000 [0.2700, 0.3300] |" in text
    assert "| learned - first_stage | +0.1123 [+0.0900, +0.1300] |" in text
    assert "2026-01-01 00:00 .. 2026-02-01 00:00" in text and "700 ratings" in text
    assert "| metadata.genres = Thriller | metadata | 75.0% |" in text  # declared names, share of gain
    assert "`rule_based`: ndcg@10 rule-based" in text


def test_the_run_logs_few_named_rounded_metrics():
    metrics = logged_metrics(_report(), "ndcg@10")
    assert metrics == {"n_lists": 240.0, "ndcg_at_10.learned": 0.3123, "ndcg_at_10.first_stage": 0.2,
                       "ndcg_at_10.champion": 0.3, "ndcg_at_10.learned_minus_first_stage": 0.1123,
                       "ndcg_at_10.learned_minus_first_stage.low": 0.09,
                       "ndcg_at_10.learned_minus_first_stage.high": 0.13,
                       "ndcg_at_10.learned_minus_champion": 0.012, "ndcg_at_10.learned_minus_champion.low": -0.004,
                       "ndcg_at_10.learned_minus_champion.high": 0.03}  # fmt: skip


def test_input_labels_name_the_declared_value():
    card = _card({})
    assert [input_label(i) for i in card.inputs] == ["metadata.genres = Thriller", "affinity.genres"]


def test_plots_are_drawn_at_a_readable_size(tmp_path: Path):
    from PIL import Image

    from models.plots import feature_importance, paired_differences

    paired_differences(_report(), tmp_path / "d.png")
    feature_importance(pd.Series({"metadata.genres#03": 3.0, "affinity.genres": 1.0}), tmp_path / "f.png",
                       {"metadata.genres#03": "metadata.genres = Thriller"})  # fmt: skip
    for name in ("d.png", "f.png"):
        width, height = Image.open(tmp_path / name).size
        assert 700 <= width <= 1000 and height >= 150, (name, width, height)
