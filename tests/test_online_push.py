"""Posted interactions update the online counts from every worker process of the stage without losing one."""

import multiprocessing
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PUSHES = 25


def _post_clicks(root: str, user: str, worker: int, start: "multiprocessing.synchronize.Barrier") -> None:
    from feature_repo.manifest import FeatureManifest
    from feature_repo.store import open_store
    from reranker.contracts import InteractionEvent
    from reranker.settings import Layout
    from serving.interactions import InteractionSink, LandingZone, PushLock

    layout = Layout(Path(root))
    manifest = FeatureManifest.read(layout.feature_tables)
    sink = InteractionSink(LandingZone(layout.landing), open_store(layout.feast), lambda key: key,
                           PushLock(layout.online_push_lock), lambda: manifest)  # fmt: skip
    start.wait()  # both processes loaded: push at the same time
    for i in range(PUSHES):
        click = InteractionEvent(event_id=f"push-{worker}-{i}", interaction_type="click", user_id=user,
                                 document_id="d1", timestamp="2026-06-01T12:00:00Z")  # fmt: skip
        sink.accept([click])


def test_two_worker_processes_lose_no_online_count(lake):
    from feature_repo.manifest import FeatureManifest
    from feature_repo.store import materialize

    layout, events, store = lake
    materialize(store, layout.feature_tables)
    user = events["user_id"].value_counts().index[-1]

    def count() -> float:
        got = store.get_online_features(features=["user_activity:events"], entity_rows=[{"user_id": user}])
        return float(got.to_dict()["events"][0] or 0.0)

    before = count()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    workers = [ctx.Process(target=_post_clicks, args=(str(layout.root), user, w, start)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=180)
        assert w.exitcode == 0
    assert count() == before + 2 * PUSHES
    recent = store.get_online_features(
        features=["user_history:recent_positives"], entity_rows=[{"user_id": user}]
    )
    assert (
        next(iter(recent.to_dict()["recent_positives"][0]))
        == FeatureManifest.read(layout.feature_tables).doc_index()["d1"]
    )
