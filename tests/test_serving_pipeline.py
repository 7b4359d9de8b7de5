"""The rerank stage's contract, in process, on real Feast (online store) and a real MLflow registry."""

import numpy as np
import pytest

from serving.schemas import Candidate, FeatureContribution, RerankRequest, RerankResponse, ServedBy
from tests.conftest import assert_reads_equal_feasts

pytestmark = pytest.mark.integration


def request(events, user="u1", n=30, stock=None, **kw):
    docs = list(dict.fromkeys(events["document_id"]))[:n]
    cands = [Candidate(document_id=d, content=f"doc {d}", score=float(-i),
                       features={} if stock is None else {"in_stock": stock}) for i, d in enumerate(docs)]  # fmt: skip
    return RerankRequest(model_id=kw.pop("model_id", "serving"), user_id=user, candidates=cands, **kw)


def cache_of(pipeline, registry_fn, **kw):
    from serving.model_cache import ModelCache

    return ModelCache(registry_fn, lambda: pipeline.features.manifest, **kw)


def copy_database(source, target):
    """A consistent copy of a SQLite database (its write-ahead log included), by SQLite's backup API."""
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def known_user(events):
    return events["user_id"].value_counts().index[0]


def test_known_user_is_served_by_the_learned_champion(stage):
    pipeline, _, events, _, outcome = stage
    resp, served = pipeline.rerank(request(events, known_user(events), exploration_rate=0.0, top_n=5))
    event = served.event()
    assert resp.served_by is ServedBy.learned and resp.variant == "champion"
    assert resp.model_version == outcome.version and len(resp.results) == 5
    scores = [r.score for r in resp.results]
    assert scores == sorted(scores, reverse=True)
    first = resp.results[0]
    assert first.content is not None and len(first.learned_rerank.top_features) == 3
    lr = first.learned_rerank
    assert lr.user_segment is not None and lr.user_segment_id is not None
    assert lr.user_segment == pipeline.features.state().manifest.segment_names[lr.user_segment_id]
    # the response round-trips through its schema
    assert RerankResponse.model_validate_json(resp.model_dump_json()) == resp
    assert isinstance(lr.top_feature_contributions[0], FeatureContribution)
    # the seed's "feature:value" strings, each the label and value of the contribution beside it
    assert all(isinstance(t, str) and ":" in t for t in lr.top_features)
    assert [t.split(":", 1)[1] for t in lr.top_features] == [c.value for c in lr.top_feature_contributions]
    assert [i.position for i in event.items] == list(range(5)) and all(i.propensity == 1 for i in event.items)


def test_served_explanations_are_exact_shap_values_that_add_up_to_the_score(stage):
    pipeline = stage[0]
    variant = pipeline.models.choose("serving", None)
    booster = variant.ranker.booster
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, len(variant.ranker.feature_names))) * 5
    X[rng.random(X.shape) < 0.3] = np.nan
    order = rng.permutation(40)[:10]
    got = pipeline._explain(variant, X, order)
    rows = np.ascontiguousarray(X[order], dtype=np.float32)
    want = booster.predict(rows, pred_contrib=True)
    np.testing.assert_allclose(got, want[:, :-1], atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1) + want[:, -1], booster.predict(rows), atol=1e-9)


def test_unknown_user_gets_the_fallback(stage):
    pipeline, _, events, _, _ = stage
    resp, _ = pipeline.rerank(request(events, "never-seen-user"))
    assert resp.served_by is ServedBy.fallback and "cold-start" in resp.reason
    first_stage, _ = pipeline.rerank(
        request(events, "never-seen-user", fallback="first_stage", exploration_rate=0)
    )
    assert [r.document_id for r in first_stage.results] == [
        c.document_id for c in request(events).candidates[:10]
    ]


def test_request_features_and_the_query_change_the_ranking_and_the_explanations_name_the_catalog(stage):
    """What the caller knows at request time reaches the model: a candidate out of stock scores lower, and the
    query enters the text match; the explanations name declared inputs."""
    pipeline, _, events, _, _ = stage
    user = known_user(events)
    in_stock, _ = pipeline.rerank(request(events, user, stock=1.0, exploration_rate=0.0, top_n=30))
    out_of_stock, _ = pipeline.rerank(request(events, user, stock=0.0, exploration_rate=0.0, top_n=30))
    score = {r.document_id: r.score for r in in_stock.results}
    assert np.mean([score[r.document_id] - r.score for r in out_of_stock.results]) > 0
    query = events["query"].dropna().iloc[0]
    with_query, _ = pipeline.rerank(request(events, user, exploration_rate=0.0, top_n=30, query=query))
    without, _ = pipeline.rerank(request(events, user, exploration_rate=0.0, top_n=30))
    assert [r.score for r in with_query.results] != [r.score for r in without.results]
    named = {
        f["name"]
        for r in in_stock.results
        for f in r.learned_rerank.model_dump()["top_feature_contributions"]
    }
    known = {i.name for i in pipeline.models.choose("serving", user).plan.inputs}
    assert named and named <= known


def test_candidate_features_the_feature_set_does_not_declare_are_refused_or_ignored(stage):
    from serving.pipeline import UnknownFeatures

    pipeline, _, events, _, _ = stage
    req = request(events, known_user(events), stock=1.0)
    req.candidates[2].features["colour_code"] = 3.0
    with pytest.raises(UnknownFeatures, match="colour_code") as err:
        pipeline.rerank(req)
    assert err.value.field == "candidates[2].features" and "in_stock" in str(err.value)
    req.unknown_features = "ignore"
    resp, _ = pipeline.rerank(req)
    assert resp.served_by is ServedBy.learned and "unknown_features_ignored" in resp.reason_codes
    override = request(events, known_user(events))
    override.candidates[0].features["price"] = 1e6  # a declared numeric attribute: the request's value wins
    assert pipeline.rerank(override)[0].served_by is ServedBy.learned


def test_cold_start_users_get_the_fallback_the_model_recorded_unless_the_request_names_one(stage):
    pipeline, _, events, _, outcome = stage
    resp, _ = pipeline.rerank(request(events, "never-seen-user", exploration_rate=0.0))
    assert resp.served_by is ServedBy.fallback and outcome.card.fallback in ("first_stage", "rule_based")
    if outcome.card.fallback == "first_stage":
        assert [r.document_id for r in resp.results] == [
            c.document_id for c in request(events).candidates[:10]
        ]
    named, _ = pipeline.rerank(
        request(events, "never-seen-user", exploration_rate=0.0, fallback="rule_based")
    )
    assert named.served_by is ServedBy.fallback


def test_a_model_whose_inputs_the_features_cannot_supply_is_refused_and_the_previous_keeps_serving(stage):
    from dataclasses import replace

    from feature_repo.manifest import FeatureManifest

    pipeline, registry, events, _, outcome = stage
    good = pipeline.features.manifest
    bare = FeatureManifest(feature_set=good.feature_set, encodings=good.encodings, documents=good.documents,
                           views={})  # fmt: skip
    current = {"manifest": good}
    refused = []
    cache = cache_of(pipeline, lambda: registry, on_refusal=lambda model_id, r: refused.append(r))
    cache._manifest = lambda: current["manifest"]
    live = replace(pipeline, models=cache)
    user = known_user(events)
    assert live.rerank(request(events, user))[0].served_by is ServedBy.learned
    current["manifest"] = bare  # a rebuild without the views the model reads
    cache.replan()
    resp, _ = live.rerank(request(events, user))
    assert resp.served_by is ServedBy.fallback and resp.reason_codes[0] == "model_inputs_unavailable"
    assert refused and "not supplied by the current features" in refused[0].reason
    fresh = cache_of(pipeline, lambda: registry)
    fresh._manifest = lambda: bare  # a stage starting on such features never loads the model
    assert (
        replace(pipeline, models=fresh).rerank(request(events, user))[0].reason_codes[0]
        == "model_inputs_unavailable"
    )
    assert outcome.version == refused[0].version


def test_unregistered_model_is_a_clear_error(stage):
    from models.registry import ModelNotFound

    pipeline, _, events, _, _ = stage
    with pytest.raises(ModelNotFound, match="not registered"):
        pipeline.rerank(request(events, model_id="no-such-model"))


def test_missing_features_rank_with_the_ones_available(stage):
    pipeline, _, events, _, _ = stage
    req = request(events, known_user(events), exploration_rate=0.0)
    req.candidates.append(Candidate(document_id="brand-new-doc", score=None))
    resp, _ = pipeline.rerank(req)
    assert resp.served_by is ServedBy.learned and all(np.isfinite(r.score) for r in resp.results)


def test_unknown_feature_names_are_refused(stage):
    from serving.pipeline import UnknownFeatures

    pipeline, _, events, _, _ = stage
    with pytest.raises(UnknownFeatures, match="no_such_feature"):
        pipeline.rerank(request(events, known_user(events), features=["no_such_feature"]))


def test_over_budget_returns_the_candidates_unranked(stage):
    from dataclasses import replace

    pipeline, _, events, _, _ = stage
    slow = replace(pipeline, budget_ms=1e-6)
    req = request(events, known_user(events), top_n=30)
    resp, _ = slow.rerank(req)
    assert resp.served_by is ServedBy.unranked and "budget" in resp.reason
    assert [r.document_id for r in resp.results] == [c.document_id for c in req.candidates]


def test_opted_out_user_gets_a_non_personalized_ranking(stage):
    from dataclasses import replace

    pipeline, _, events, _, _ = stage
    user = known_user(events)
    resp, _ = replace(pipeline, opted_out={user}).rerank(request(events, user, exploration_rate=0.0))
    assert resp.served_by is ServedBy.learned and "opted out" in resp.reason
    assert all(r.learned_rerank.personalization_score == 0 and r.learned_rerank.user_segment is None
               for r in resp.results)  # fmt: skip


def test_unreachable_registry_serves_the_last_loaded_model_else_the_fallback(stage):
    from dataclasses import replace

    pipeline, registry, events, _, _ = stage

    def down():
        raise ConnectionError("registry down")

    cold = replace(pipeline, models=cache_of(pipeline, down))
    resp, _ = cold.rerank(request(events, known_user(events)))
    assert resp.served_by is ServedBy.fallback and "registry unavailable" in resp.reason
    warm_cache = cache_of(pipeline, lambda: registry)
    warm = replace(pipeline, models=warm_cache)
    assert warm.rerank(request(events, known_user(events)))[0].served_by is ServedBy.learned
    warm_cache._registry = None
    warm_cache._registry_factory = down
    warm_cache.refresh()  # fails, keeps what it has
    assert warm.rerank(request(events, known_user(events)))[0].served_by is ServedBy.learned


def test_a_missing_or_emptied_registry_never_replaces_the_loaded_champion(stage, tmp_path):
    import shutil
    from dataclasses import replace

    from models.registry import Registry, RegistryMissing

    pipeline, registry, events, _, _ = stage
    db = tmp_path / "copy" / "mlflow.db"
    db.parent.mkdir()
    copy_database(registry.tracking_uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    cache = cache_of(pipeline, lambda: Registry(uri))
    served = replace(pipeline, models=cache)
    assert served.rerank(request(events, known_user(events)))[0].served_by is ServedBy.learned
    moved = db.with_name("moved.db")
    db.rename(moved)  # the database briefly missing: nothing is created in its place
    with pytest.raises(RegistryMissing, match="no MLflow database"):
        Registry(uri)
    cache._registry = None
    cache.refresh()
    assert (
        not db.exists()
        and served.rerank(request(events, known_user(events)))[0].served_by is ServedBy.learned
    )
    empty = (
        tmp_path / "empty.db"
    )  # a registry answering with the model but no aliases (e.g. a botched promote)
    shutil.copy(moved, empty)
    emptied = Registry(f"sqlite:///{empty}")
    for alias in emptied.aliases("serving"):
        emptied.client.delete_registered_model_alias("serving", alias)
    cache._registry = emptied
    cache.refresh()
    assert served.rerank(request(events, known_user(events)))[0].served_by is ServedBy.learned
    moved.rename(db)  # restored: the next poll reconnects
    cache._registry = None
    cache.refresh()
    assert cache.registry().tracking_uri == uri


def test_unknown_model_ids_are_refused_from_memory_until_the_next_poll(stage):
    from dataclasses import replace

    from models.registry import ModelNotFound

    pipeline, registry, events, _, _ = stage
    calls = []

    def counting():
        calls.append(1)
        return registry

    cache = cache_of(pipeline, counting, poll_seconds=3600)
    served = replace(pipeline, models=cache)
    for _ in range(50):
        with pytest.raises(ModelNotFound):
            served.rerank(request(events, model_id="nope"))
    exists_calls = []
    original = registry.exists
    registry.exists = lambda m: exists_calls.append(m) or original(m)
    try:
        with pytest.raises(ModelNotFound):
            served.rerank(request(events, model_id="nope"))
    finally:
        registry.exists = original
    assert exists_calls == []


def test_exploration_logs_policy_probabilities(stage):
    pipeline, _, events, _, _ = stage
    user = known_user(events)
    base, _ = pipeline.rerank(request(events, user, exploration_rate=0.0))
    again, _ = pipeline.rerank(request(events, user, exploration_rate=0.0))
    assert [r.document_id for r in base.results] == [r.document_id for r in again.results]
    boosts, props = [], []
    for _ in range(40):
        resp, served = pipeline.rerank(request(events, user, exploration_rate=0.5))
        event = served.event()
        boosts += [r.learned_rerank.exploration_boost for r in resp.results]
        props += [i.propensity for i in event.items]
    assert max(boosts) > 0 and min(boosts) == 0
    # slot 0 among 30 candidates: greedy pick 0.5 + 0.5/30, any other pick 0.5/30
    assert set(np.round(props, 6)) >= {round(0.5 + 0.5 / 30, 6), round(0.5 / 30, 6)}
    assert all(0 < p <= 1 for p in props)


def test_canary_share_and_stickiness(stage):
    from serving.model_cache import ModelCache, bucket

    shares = np.array([bucket(f"user-{i}") < 0.2 for i in range(2_000)])
    assert abs(shares.mean() - 0.2) < 0.03
    cache = ModelCache(lambda: None, lambda: None, canary_share=0.2)  # type: ignore[arg-type]
    assert all(bucket("user-7") == bucket("user-7") for _ in range(3)) and cache.canary_share == 0.2


def test_online_reads_equal_feasts(stage):
    """Documents from memory and users read from the SQLite tables directly, and through the online store's
    online_read: each equal to Feast's get_online_features."""
    from serving.online_features import OnlineFeatures

    pipeline, _, events, store, _ = stage
    tables = pipeline.features.tables_dir
    direct, provider = OnlineFeatures(store, tables), OnlineFeatures(store, tables, direct_sqlite=False)
    assert assert_reads_equal_feasts(direct, store, events) >= 20
    assert assert_reads_equal_feasts(provider, store, events) >= 20
    assert type(direct._user_read).__name__ == "SqliteUserRead"
    assert type(provider._user_read).__name__ == "ProviderUserRead"


def test_alias_move_is_followed_within_30s_without_a_failed_request(stage, lake):
    """v1 serves; the champion alias moves to v2 through the MLflow client; the stage switches while called."""
    import threading
    import time
    from dataclasses import replace

    from models.registry import CHAMPION

    pipeline, registry, events, _, outcome = stage
    cache = cache_of(pipeline, lambda: registry, poll_seconds=1.0)
    live = replace(pipeline, models=cache)
    user = known_user(events)
    assert live.rerank(request(events, user))[0].model_version == outcome.version
    cache.start()
    try:
        new = registry.copy_version("serving", outcome.version)
        served, failures, stop = [], [], threading.Event()

        def client():
            while not stop.is_set():
                try:
                    served.append(live.rerank(request(events, user))[0].model_version)
                except Exception as exc:
                    failures.append(exc)

        worker = threading.Thread(target=client)
        worker.start()
        time.sleep(0.5)
        registry.set_alias("serving", CHAMPION, new)
        moved = time.monotonic()
        while time.monotonic() - moved < 30 and (not served or served[-1] != str(new)):
            time.sleep(0.2)
        switch_seconds = time.monotonic() - moved
        stop.set()
        worker.join()
    finally:
        cache.stop()
        registry.set_alias("serving", CHAMPION, outcome.version)
    assert not failures
    assert served[-1] == str(new) and switch_seconds < 30
    assert served[0] == outcome.version


def test_canary_gets_its_share_of_users_and_each_user_keeps_a_variant(stage):
    from dataclasses import replace

    from models.registry import CANARY

    pipeline, registry, events, _, outcome = stage
    registry.set_alias("serving", CANARY, outcome.version)
    try:
        live = replace(pipeline, models=cache_of(pipeline, lambda: registry, canary_share=0.2))
        cache = live.models
        variants = [cache.choose("serving", f"user-{i}").name for i in range(2_000)]
        share = variants.count("canary") / len(variants)
        assert abs(share - 0.2) <= 0.03, share
        assert all(cache.choose("serving", f"user-{i}").name == variants[i] for i in range(200))
        user = known_user(events)
        served = {live.rerank(request(events, user))[0].variant for _ in range(5)}
        assert len(served) == 1
    finally:
        registry.delete_alias("serving", CANARY)


def test_unreachable_online_store_serves_the_fallback_on_the_request_alone(stage):
    from dataclasses import replace

    pipeline, _, events, _, _ = stage

    class DownStore:
        def state(self):
            raise ConnectionError("online store down")

        def user(self, key):
            raise ConnectionError("online store down")

    resp, _ = replace(pipeline, features=DownStore()).rerank(request(events, known_user(events), fallback="first_stage",
                                                                     exploration_rate=0.0))  # fmt: skip
    assert resp.served_by is ServedBy.fallback and resp.reason_codes == ["online_store_unavailable"]
    assert [r.document_id for r in resp.results] == [c.document_id for c in request(events).candidates[:10]]


def test_anonymous_request_gets_the_non_personalized_learned_ranking(stage):
    pipeline, _, events, _, _ = stage
    resp, served = pipeline.rerank(request(events, user=None, exploration_rate=0.0))
    event = served.event()
    assert resp.served_by is ServedBy.learned and event.user_id == "anonymous"
    assert all(r.learned_rerank.personalization_score == 0 for r in resp.results)


def test_promote_and_rollback_move_the_aliases_serving_follows(stage):
    from models.registry import CANARY, CHAMPION, PREVIOUS_CHAMPION, AliasError, promote, rollback

    pipeline, registry, _, _, outcome = stage
    v1 = outcome.version
    v2 = registry.copy_version("serving", v1)
    registry.set_alias("serving", CANARY, v2)
    try:
        assert promote(registry, "serving", v2) == {CHAMPION: v2, PREVIOUS_CHAMPION: v1}
        cache = cache_of(pipeline, lambda: registry)
        assert cache.choose("serving", "someone").model.version == v2
        with pytest.raises(AliasError, match="already the champion"):
            promote(registry, "serving", v2)
        with pytest.raises(AliasError, match="no version"):
            promote(registry, "serving", "999")
        assert rollback(registry, "serving", "worse click rate") == {CHAMPION: v1}
        assert (
            registry.client.get_model_version("serving", v2).tags["rolled_back_reason"] == "worse click rate"
        )
        cache.refresh()
        assert cache.choose("serving", "someone").model.version == v1
        with pytest.raises(AliasError, match="no previous_champion"):
            rollback(registry, "serving", "again")
    finally:
        registry.set_alias("serving", CHAMPION, v1)


def test_user_feature_cache_is_bounded(stage):
    from serving.online_features import OnlineFeatures

    pipeline, _, events, store, _ = stage
    features = OnlineFeatures(store, pipeline.features.tables_dir, max_cached_users=2)
    users = list(events["user_id"].unique()[:3])
    for user in users:
        assert features.user(user) is not None
    assert list(features._users) == users[1:]  # the oldest entry was evicted


def test_a_missing_sqlite_online_database_is_an_unreachable_store_not_cold_users(stage, tmp_path):
    """The direct SQLite user read opens Feast's database read-only: when the file is gone it fails (and the request
    is served by the fallback as `online_store_unavailable`) instead of creating an empty database that would make
    every user look cold-start."""
    import sqlite3
    from dataclasses import replace

    from serving.online_features import OnlineFeatures, SqliteUserRead

    pipeline, _, events, store, _ = stage
    features = OnlineFeatures(store, pipeline.features.tables_dir, user_ttl_seconds=0)
    features.state()
    assert features.user(known_user(events)) is not None
    reader = features._user_read
    assert isinstance(reader, SqliteUserRead)
    reader.path = str(tmp_path / "online.db")  # the folder exists, the database does not
    reader._local = type(reader._local)()  # no connection opened yet on this path
    with pytest.raises(sqlite3.OperationalError):
        reader(known_user(events))
    assert not (tmp_path / "online.db").exists()
    resp, _ = replace(pipeline, features=features).rerank(
        request(events, known_user(events), exploration_rate=0.0)
    )
    assert resp.served_by is ServedBy.fallback and resp.reason_codes == ["online_store_unavailable"]


def test_a_locked_or_replaced_online_database_answers_in_budget_and_recovers(stage, tmp_path):
    """A locked SQLite online store fails the read within the read timeout (not SQLite's 5 s), the circuit then
    answers the fallback without touching the store, and a database file replaced in place is reopened."""
    import shutil
    import sqlite3
    from dataclasses import replace

    from serving.online_features import OnlineFeatures, StoreUnavailable

    pipeline, _, events, store, _ = stage
    user = known_user(events)
    features = OnlineFeatures(store, pipeline.features.tables_dir, user_ttl_seconds=0, read_timeout=0.001,
                              breaker_seconds=3600)  # fmt: skip
    served = replace(pipeline, features=features)
    assert features.user(user) is not None
    path = features._user_read.path
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # a writer holding the database
    try:
        features._user_read._local.checked = 0.0
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            features.user(user)
        with pytest.raises(StoreUnavailable):  # the circuit is open: no read at all
            features.user(user)
        resp, _ = served.rerank(request(events, user, exploration_rate=0.0))
        assert resp.served_by is ServedBy.fallback and resp.reason_codes == ["online_store_unavailable"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    features._down_until = 0.0  # the probe after the pause (the test holds the clock still)
    copy = tmp_path / "online.db"
    shutil.copy(path, copy)
    before = features.user(user).values.copy()
    copy.replace(path)  # re-materialized into a new file, swapped in
    features._user_read._local.checked = 0.0  # the once-a-second check is due
    conn_before = features._user_read._local.conn
    assert np.array_equal(features.user(user).values, before, equal_nan=True)
    assert features._user_read._local.conn is not conn_before  # reopened on the new file


def test_a_champion_moved_in_the_mlflow_ui_is_recorded_like_a_promote(stage, tmp_path):
    """The UI moves an alias with MLflow's REST API (POST /api/2.0/mlflow/registered-models/alias): the stage follows
    it and records it as `reranker models promote` would (previous_champion kept, a canary on the new champion
    cleared, the version tagged), so `reranker models rollback` works after a UI promote."""
    import socket
    import subprocess
    import sys
    import time
    from dataclasses import replace

    import httpx

    from models.registry import CANARY, CHAMPION, PREVIOUS_CHAMPION, Registry, rollback

    pipeline, registry, events, _, _ = stage
    db = tmp_path / "mlflow.db"
    copy_database(registry.tracking_uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    copy = Registry(uri)
    first = copy.aliases("serving")[CHAMPION]
    mv = copy.client.get_model_version("serving", first)
    with copy.active():  # MLflow resolves a `models:/` source through its process-wide URIs
        second = str(copy.client.create_model_version("serving", mv.source, run_id=mv.run_id).version)
    copy.set_alias("serving", CANARY, second)
    cache = cache_of(pipeline, lambda: Registry(uri), poll_seconds=3600)
    served = replace(pipeline, models=cache)
    assert served.rerank(request(events, known_user(events)))[0].served_by is ServedBy.learned

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:  # readiness, not speed: wait as long as a busy machine needs
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
            time.sleep(1)
        moved = httpx.post(f"{base}/api/2.0/mlflow/registered-models/alias",
                           json={"name": "serving", "alias": CHAMPION, "version": second})  # fmt: skip
        assert moved.status_code == 200, moved.text
    finally:
        server.terminate()
        server.wait(timeout=60)
    cache.refresh()  # the stage's alias poll
    aliases = copy.aliases("serving")
    assert (
        aliases.get(CHAMPION) == second and aliases.get(PREVIOUS_CHAMPION) == first and CANARY not in aliases
    )
    assert copy.client.get_model_version("serving", second).tags["promoted_from"] == first
    assert served.rerank(request(events, known_user(events)))[0].model_version == second
    assert rollback(copy, "serving", "tried in the UI")[CHAMPION] == first
    cache.refresh()  # a rollback is not recorded as a promote: the version it left is not made previous_champion
    assert PREVIOUS_CHAMPION not in copy.aliases("serving")
    assert served.rerank(request(events, known_user(events)))[0].model_version == first
