"""Point-in-time correctness of the offline feature tables generated from the feature set (pure pandas, no Feast):
every snapshot at time t counts only events strictly before t."""

import numpy as np
import pandas as pd
import pytest

from feature_repo.collaborative import epoch_tables, epoch_times
from feature_repo.manifest import Encodings
from feature_repo.transforms import (
    document_engagement,
    label_events,
    normalize_query,
    query_documents,
    user_activity,
    user_affinities,
    user_history,
)
from reranker.synthetic import documents_frame
from tests.conftest import shop_feature_set


@pytest.fixture(scope="module")
def tables(world, synthetic_events):
    fs = shop_feature_set()
    catalog = documents_frame(world)
    labelled = label_events(synthetic_events, fs.engagement.kinds)
    encodings = Encodings.build(fs, catalog, None, None)
    return fs, catalog, labelled, encodings


def test_user_snapshot_counts_only_events_strictly_before_it(tables):
    fs, _, labelled, _ = tables
    users = user_activity(labelled, fs.user)
    for _, snap in users.sample(300, random_state=0).iterrows():
        mine = labelled[labelled["user_id"] == snap["user_id"]]
        t = snap["event_timestamp"]
        assert snap["events"] == (mine["timestamp"] < t).sum()
        recent = (mine["timestamp"] < t) & (mine["timestamp"] >= t - pd.Timedelta(days=30))
        assert snap["events_30d"] == recent.sum()
        assert snap["positives"] == (mine["positive"] & (mine["timestamp"] < t)).sum()


def test_document_snapshot_counts_only_events_strictly_before_it(tables):
    fs, _, labelled, _ = tables
    docs = document_engagement(labelled, fs.engagement)
    for _, snap in docs.sample(300, random_state=1).iterrows():
        mine = labelled[labelled["document_id"] == snap["document_id"]]
        before = mine["timestamp"] < snap["event_timestamp"]
        week = before & (mine["timestamp"] >= snap["event_timestamp"] - pd.Timedelta(days=7))
        assert snap["exposures"] == (mine["exposure"] & before).sum()
        assert snap["positives"] == (mine["positive"] & before).sum()
        assert snap["purchases_7d"] == (mine["k_purchase"] & week).sum()
        assert 0 < snap["positive_rate"] < 1 and 0 <= snap["positives_7d_share"] <= 1000
        everyone = labelled["positive"] & (labelled["timestamp"] < snap["event_timestamp"]) & (
            labelled["timestamp"] >= snap["event_timestamp"] - pd.Timedelta(days=7))  # fmt: skip
        assert snap["positives_7d_share"] == pytest.approx(
            1000 * snap["positives_7d"] / max(everyone.sum(), 1)
        )


def test_snapshots_exist_at_window_expiry(tables):
    """A document with no recent events must show zero recent counts, not its last busy day's."""
    fs, _, labelled, _ = tables
    docs = document_engagement(labelled, fs.engagement)
    last = docs.sort_values("event_timestamp").groupby("document_id").tail(1)
    assert (last[["positives_1d", "positives_7d", "positives_30d"]] == 0).all().all()


def test_affinity_is_the_users_smoothed_share_of_positives_per_value_before_the_snapshot(tables):
    fs, catalog, labelled, encodings = tables
    profiles = user_affinities(labelled, catalog, fs, encodings)
    brand = catalog.set_index("document_id")["brand"]
    slots = encodings.attributes["brand"].slots
    for _, snap in profiles.sample(100, random_state=2).iterrows():
        mine = labelled[(labelled["user_id"] == snap["user_id"]) & labelled["positive"]
                        & (labelled["timestamp"] < snap["event_timestamp"])]  # fmt: skip
        codes = encodings.attributes["brand"].codes(mine["document_id"].map(brand))
        counts = np.bincount(codes.astype(int), minlength=slots)
        np.testing.assert_allclose(snap["brand"], (counts + 1 / slots) / (len(mine) + 1))
        assert snap["positives"] == len(mine)


def test_recent_positives_are_the_latest_before_the_snapshot_newest_first(tables):
    _, _, labelled, _ = tables
    index = {d: i for i, d in enumerate(sorted(labelled["document_id"].unique()))}
    history = user_history(labelled, index, 5)
    for _, snap in history.sample(100, random_state=3).iterrows():
        mine = labelled[(labelled["user_id"] == snap["user_id"]) & labelled["positive"]
                        & (labelled["timestamp"] < snap["event_timestamp"])].sort_values("timestamp", kind="stable")  # fmt: skip
        want = [index[d] for d in mine["document_id"]][-5:][::-1]
        assert list(snap["recent_positives"]) == want


def test_query_statistics_count_the_document_under_the_same_query_before_the_snapshot(tables):
    _, _, labelled, _ = tables
    stats = query_documents(labelled)
    assert len(stats) and stats["query"].map(normalize_query).eq(stats["query"]).all()
    for _, snap in stats.sample(100, random_state=4).iterrows():
        mine = labelled[(labelled["document_id"] == snap["document_id"])
                        & (labelled["query"].map(normalize_query) == snap["query"])
                        & (labelled["timestamp"] < snap["event_timestamp"])]  # fmt: skip
        assert snap["impressions"] == mine["exposure"].sum() and snap["clicks"] == mine["positive"].sum()


def test_collaborative_models_of_an_epoch_see_only_positives_before_it(tables):
    fs, _, labelled, _ = tables
    documents = sorted(labelled["document_id"].unique())
    positives = labelled.loc[labelled["positive"], ["user_id", "document_id", "timestamp"]]
    epochs = epoch_times(labelled["timestamp"], fs.collaborative)
    assert epochs[-1] > labelled["timestamp"].max() and len(epochs) >= 3
    out = epoch_tables(positives, documents, fs.collaborative, epochs)
    first = epochs[0]
    seen_before = set(positives.loc[positives["timestamp"] < first, "document_id"])
    users_before = set(positives.loc[positives["timestamp"] < first, "user_id"])
    at_first = out["document_neighbors"][out["document_neighbors"]["event_timestamp"] == first]
    assert (
        set(at_first["document_id"]) <= seen_before
    )  # a neighbour list needs a co-occurrence before the epoch
    index = {d: i for i, d in enumerate(documents)}
    for cell in at_first["neighbors"]:
        assert {documents[i] for i in cell} <= seen_before
    factors = out["user_factors"][out["user_factors"]["event_timestamp"] == first]
    assert set(factors["user_id"]) == users_before
    docs_f = out["document_factors"][out["document_factors"]["event_timestamp"] == first].set_index(
        "document_id"
    )
    unseen = [d for d in documents if d not in seen_before]
    assert all(np.allclose(docs_f.loc[d, "factors"], 0.0) for d in unseen[:20])
    assert len(index) == len(documents)


def test_times_move_back_to_the_newest_snapshot_at_or_before_them():
    from feature_repo.store import as_of_snapshots

    def utc(*values):
        return pd.to_datetime(list(values), utc=True, format="ISO8601")

    grid = utc("2026-01-02", "2026-01-03", "2026-01-05").tz_convert(None).as_unit("us").to_numpy()
    times = pd.Series(utc("2026-01-01T12:00", "2026-01-02", "2026-01-02T23:59:59", "2026-01-04T08:00", "2026-01-09",
                          None), index=[5, 4, 3, 2, 1, 0])  # fmt: skip
    got = as_of_snapshots(times, grid)
    want = utc("2026-01-01T23:59:59", "2026-01-02", "2026-01-02", "2026-01-03", "2026-01-05")
    assert list(got.iloc[:5]) == list(want) and pd.isna(got.iloc[5])
    assert str(got.dtype) == "datetime64[us, UTC]" and list(got.index) == list(times.index)
    assert as_of_snapshots(times, grid[:0]) is times
