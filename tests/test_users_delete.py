"""`reranker users delete`: a user's events and features are gone everywhere; other users are untouched."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from reranker.cli import app
from tests.conftest import build_features, first_json

pytestmark = pytest.mark.integration


def test_delete_removes_the_user_everywhere(tmp_path, world, synthetic_events, monkeypatch):
    from expectations.ingest import ingest
    from feature_repo import store as fs
    from reranker.lake import read_interactions, upsert_documents, user_key
    from reranker.settings import Layout
    from reranker.synthetic import documents_frame

    monkeypatch.setenv("RERANKER_USER_ID_SALT", "salt-1")
    layout = Layout(tmp_path / "data")
    layout.raw.mkdir(parents=True)
    events = synthetic_events.head(5_000).copy()
    events.to_parquet(layout.raw / "e.parquet")
    bad = layout.raw / "bad.jsonl"
    bad.write_text(json.dumps({"event_id": "x", "interaction_type": "click", "user_id": "u1", "document_id": "d1",
                               "timestamp": "2026-01-01T00:00:00Z", "position": -1}) + "\n")  # fmt: skip
    ingest(layout.raw / "e.parquet", layout, salt="salt-1")
    ingest(bad, layout, salt="salt-1")
    upsert_documents(layout.documents, documents_frame(world))
    lake = read_interactions(layout.interactions)
    store = build_features(layout, lake)
    fs.materialize(store, layout.feature_tables)
    victim = "u1" if (events["user_id"] == "u1").any() else events["user_id"].iloc[0]
    key = user_key(victim, "salt-1")
    other = user_key(events.loc[events["user_id"] != victim, "user_id"].iloc[0], "salt-1")

    result = CliRunner().invoke(app, ["users", "delete", victim, "--data-dir", str(layout.root), "--json"])
    assert result.exit_code == 0, result.output
    removed = first_json(result.output)["removed"]
    assert removed["lake_events"] == (lake["user_id"] == key).sum() > 0 and removed["online_rows"] > 0

    after = read_interactions(layout.interactions)
    assert not (after["user_id"] == key).any() and (after["user_id"] == other).any()
    for view in ("user_activity", "user_affinity", "user_history", "user_factors", "user_segment"):
        users_table = pd.read_parquet(layout.feature_tables / f"{view}.parquet")
        assert not (users_table["user_id"] == key).any() and (users_table["user_id"] == other).any(), view
    online = store.get_online_features(features=["user_activity:events", "user_history:recent_positives",
                                                 "user_factors:factors"],
                                       entity_rows=[{"user_id": key}, {"user_id": other}]).to_dict()  # fmt: skip
    assert online["events"][0] is None and online["events"][1] is not None
    assert online["recent_positives"][0] is None and online["factors"][0] is None
    quarantine = "".join(p.read_text() for p in layout.quarantine.rglob("*.jsonl"))
    assert key not in quarantine

    # an online store that user deletion does not cover: refused with a clear message before anything is deleted
    import yaml

    config_file = layout.feast / "feature_store.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["online_store"] = {"type": "remote", "path": "http://127.0.0.1:1"}
    config_file.write_text(yaml.safe_dump(config))
    other_id = events.loc[events["user_id"] != victim, "user_id"].iloc[0]
    refused = CliRunner().invoke(app, ["users", "delete", other_id, "--data-dir", str(layout.root)])
    assert refused.exit_code == 2 and "not remote" in refused.output
    assert (read_interactions(layout.interactions)["user_id"] == other).sum() == (
        after["user_id"] == other
    ).sum()
