"""The training-set build's memory: the estimate against the measured peaks, and the refusal before any work."""

import pytest

from models.training_set import TrainingSetTooLarge, check_memory, estimated_peak_bytes

SHOP = {"doc_width": 61, "extra_width": 9, "user_width": 79, "n_inputs": 64}  # the synthetic shop's layouts


@pytest.mark.parametrize(
    ("rows", "lists", "measured_gb"), [(566_050, 56_605, 1.80), (5_658_340, 565_834, 11.48)]
)
def test_the_estimate_matches_the_measured_peaks(rows, lists, measured_gb):
    """`benchmarks/offline.py` at 1M and 10M synthetic events (local engine, 100,000-row chunks)."""
    assert estimated_peak_bytes(rows, lists, **SHOP) / 1e9 == pytest.approx(measured_gb, rel=0.15)


def test_a_set_over_the_budget_is_refused_up_front(monkeypatch):
    import models.training_set as ts

    monkeypatch.setattr("feature_repo.inputs.doc_layout", lambda m: [0] * SHOP["doc_width"])
    monkeypatch.setattr("feature_repo.inputs.extra_layout", lambda m: [0] * SHOP["extra_width"])
    monkeypatch.setattr("feature_repo.inputs.user_layout", lambda m: [0] * SHOP["user_width"])
    monkeypatch.setattr(ts, "default_inputs", lambda m: [0] * SHOP["n_inputs"])
    assert check_memory(566_050, 56_605, None, 8.0) < 8.0
    with pytest.raises(
        TrainingSetTooLarge, match=r"5,658,340 rows .* over the 8 GB budget \(RERANKER_TRAINING_MEMORY"
    ):
        check_memory(5_658_340, 565_834, None, 8.0)
    assert check_memory(5_658_340, 565_834, None, 0) > 8.0  # no budget: no refusal
