"""The drift suite: quiet on data from the same world, loud on shifted signals, with Data Docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from expectations.drift import check_drift, split_windows
from reranker.synthetic import documents_frame


@pytest.fixture(scope="module")
def halves(synthetic_events):
    ts = pd.to_datetime(synthetic_events["timestamp"], utc=True)
    cut = ts.quantile(0.5)
    return synthetic_events[ts <= cut].reset_index(drop=True), synthetic_events[ts > cut].reset_index(
        drop=True
    )


def test_same_world_does_not_drift(halves, world, tmp_path: Path):
    reference, recent = halves
    report = check_drift(reference, recent, tmp_path / "gx", documents_frame(world))
    assert not report.drifted, report.summary()
    kinds = {c.expectation for c in report.checks}
    assert {"expect_column_kl_divergence_to_be_less_than", "expect_column_values_to_not_be_null",
            "expect_column_mean_to_be_between"} <= kinds  # fmt: skip
    assert {c.column for c in report.checks} >= {"interaction_type", "category", "position", "score", "label"}
    index = Path(report.data_docs).read_text()
    assert "recent events" in index and "__none__" not in index  # the run is named by its windows
    assert (
        "vendor/js/vega.min.js"
        in next(Path(report.data_docs).parent.glob("validations/**/*.html")).read_text()
    )


def test_shifted_signals_drift_and_say_which(halves, world, tmp_path: Path):
    reference, recent = halves
    shifted = recent.copy()
    rng = np.random.default_rng(0)
    shifted["score"] = shifted["score"] + 3.0  # the first stage changed its scale
    shifted.loc[rng.random(len(shifted)) < 0.3, "query"] = None  # queries went missing
    clicks = shifted["interaction_type"] == "click"
    shifted = shifted[~clicks | (rng.random(len(shifted)) < 0.3)]  # far fewer clicks
    report = check_drift(reference, shifted, tmp_path / "gx", documents_frame(world))
    failed = {(c.expectation, c.column) for c in report.failed}
    assert report.drifted
    assert ("expect_column_kl_divergence_to_be_less_than", "score") in failed
    assert ("expect_column_values_to_not_be_null", "query") in failed
    assert ("expect_column_mean_to_be_between", "label") in failed
    assert ("expect_column_kl_divergence_to_be_less_than", "category") not in failed


def test_windows_and_too_little_data(synthetic_events, tmp_path: Path):
    ts = pd.to_datetime(synthetic_events["timestamp"], utc=True)
    lo, hi = ts.min(), ts.quantile(0.5)
    reference, recent = split_windows(synthetic_events, (str(lo), str(hi)), recent_days=3)
    assert pd.to_datetime(recent["timestamp"], utc=True).min() > ts.max() - pd.Timedelta(days=3)
    assert pd.to_datetime(reference["timestamp"], utc=True).max() <= hi
    with pytest.raises(ValueError, match="recent window has 0 events"):
        check_drift(reference, recent.iloc[:0], tmp_path / "gx")
