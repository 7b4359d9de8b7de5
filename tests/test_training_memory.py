"""Training's memory: the estimates against the measured peaks, and the refusals before the work."""

import pytest

from models.training_set import (
    MEASURED_1M,
    MEASURED_10M,
    TrainingSetTooLarge,
    check_listing_memory,
    check_memory,
    estimated_peak_bytes,
)

SHOP = {"doc_width": 61, "extra_width": 9, "user_width": 79, "n_inputs": 64}  # the synthetic shop's layouts


@pytest.mark.parametrize(("rows", "lists", "measured_gb"), [MEASURED_1M, MEASURED_10M])
def test_the_estimate_matches_the_measured_peaks(rows, lists, measured_gb):
    """`reranker train` at 1M and 10M synthetic events (local engine), its process's peak RSS."""
    assert estimated_peak_bytes(rows, lists, **SHOP) / 1e9 == pytest.approx(measured_gb, rel=0.1)


@pytest.fixture
def shop_layouts(monkeypatch):
    import models.training_set as ts

    monkeypatch.setattr("feature_repo.inputs.doc_layout", lambda m: [0] * SHOP["doc_width"])
    monkeypatch.setattr("feature_repo.inputs.extra_layout", lambda m: [0] * SHOP["extra_width"])
    monkeypatch.setattr("feature_repo.inputs.user_layout", lambda m: [0] * SHOP["user_width"])
    monkeypatch.setattr(ts, "default_inputs", lambda m: [0] * SHOP["n_inputs"])


def test_training_over_the_budget_is_refused_before_the_build(shop_layouts):
    assert check_memory(566_050, 56_605, None, 8.0) < 8.0
    assert check_memory(5_658_340, 565_834, None, 8.0) < 8.0  # 10M events: measured 7.81 and 7.86 GB
    with pytest.raises(
        TrainingSetTooLarge,
        match=r"11,316,680 rows .* ≈ 1[0-9]\.\d GB .* over the 8 GB budget \(RERANKER_TRAINING",
    ):
        check_memory(11_316_680, 1_131_668, None, 8.0)  # twice that
    assert check_memory(11_316_680, 1_131_668, None, 0) > 8.0  # no budget: no refusal


def test_a_set_wider_in_inputs_than_in_values_is_estimated_by_its_fold_copies():
    """Inputs derived from few values (X and a fold's copy of it outweigh the block): the estimate grows with them."""
    narrow = estimated_peak_bytes(1_000_000, 100_000, doc_width=10, extra_width=0, user_width=10, n_inputs=20)
    wide = estimated_peak_bytes(1_000_000, 100_000, doc_width=10, extra_width=0, user_width=10, n_inputs=200)
    assert wide - narrow > 1_000_000 * 4 * 180 * 2 * 0.8


def test_a_lake_too_large_to_list_is_refused_before_it_is_read():
    assert 1.0 < check_listing_memory(1_000_000, 8.0) < 1.5  # measured 1.26 GB
    assert 6.5 < check_listing_memory(10_000_000, 8.0) < 7.8  # measured 7.32 GB
    with pytest.raises(TrainingSetTooLarge, match=r"lake's 20,000,000 events .* over the 8 GB budget"):
        check_listing_memory(20_000_000, 8.0)
    assert check_listing_memory(20_000_000, None) > 8.0


def test_training_refuses_a_lake_over_the_budget_without_reading_it(tmp_path, monkeypatch):
    import pandas as pd

    from models.training import TrainPlan, training_set_for
    from reranker.lake import LakeEvents, atomic_write_parquet, to_lake_table

    events = pd.DataFrame({"event_id": ["a", "b"], "interaction_type": ["click", "impression"],
                           "user_id": ["u", "u"], "document_id": ["d", "e"],
                           "timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)})  # fmt: skip
    atomic_write_parquet(to_lake_table(events), tmp_path / "date=2026-01-01" / "part.parquet")
    lake = LakeEvents(tmp_path)
    assert lake.count() == 2 and len(lake.read()) == 2

    def never(self):
        raise AssertionError("the lake was read")

    monkeypatch.setattr(LakeEvents, "read", never)
    plan = TrainPlan.create("m", 7, 10, 1, memory_gb=0.1)  # under the listing's fixed base
    with pytest.raises(TrainingSetTooLarge, match=r"lake's 2 events .* over the 0.1 GB budget"):
        training_set_for(lake, None, plan, tmp_path / "no-features")


def test_a_local_ray_cluster_counts_its_fits_beside_the_build(shop_layouts):
    """`reranker train` on the Ray engine measured 3.67 GB at 1M events and 7.41 GB at 10M (PSS over driver, Ray's
    processes and workers): the fits' estimate covers both; at 10M the build's is the higher and both are within
    the 8 GB budget. A budget they exceed is refused saying what to do; a joined cluster's workers are not this
    machine's."""
    from models.training_set import ray_fit_bytes
    from reranker.engine import RayCluster

    local_cluster, joined = RayCluster(object_store_mb=1024), RayCluster(address="ray://head:10001")
    for (rows, _, _), measured in ((MEASURED_1M, 3.67), (MEASURED_10M, 7.41)):
        assert measured * 0.9 <= ray_fit_bytes(rows, SHOP["n_inputs"], local_cluster) / 1e9 <= measured * 1.1
        assert ray_fit_bytes(rows, SHOP["n_inputs"], joined) == 0
    rows, lists = 5_626_040, 562_604
    local = check_memory(rows, lists, None, 0)
    assert check_memory(rows, lists, None, 8.0, local_cluster) == local < 8.0
    assert check_memory(rows, lists, None, 0, joined) == local
    one_million = MEASURED_1M[:2]  # rows, lists at 1M events: the fits' peak is the higher there
    assert check_memory(*one_million, None, 0, local_cluster) > check_memory(*one_million, None, 0)
    with pytest.raises(TrainingSetTooLarge, match=r"with its local Ray cluster .*\(RERANKER_RAY_ADDRESS\)"):
        check_memory(*one_million, None, 3.0, local_cluster)
    with pytest.raises(TrainingSetTooLarge, match=r"≈ 7\.9 GB") as refused:
        check_memory(rows, lists, None, 7.0, local_cluster)
    assert "local Ray cluster" not in str(refused.value)  # the build's peak, not the cluster's, is over
