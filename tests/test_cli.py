import json
import subprocess
import sys

from typer.testing import CliRunner

from reranker.cli import app
from tests.conftest import first_json

runner = CliRunner()


def test_cli_start_up_imports_no_heavy_library():
    code = ("import sys, reranker.cli; heavy = [m for m in ('feast', 'mlflow', 'great_expectations', 'lightgbm', "
            "'pandas', 'prefect', 'bentoml', 'pydantic_settings') if m in sys.modules]; print(heavy)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("ingest", "train", "evaluate", "quickstart", "data", "features", "experiment", "models"):
        assert command in result.output


def test_ingest_of_a_missing_file_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "absent.jsonl"), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no such file" in result.output


def test_ingest_with_bad_rows_exits_1_and_reports_them(tmp_path):
    good = {"event_id": "a", "interaction_type": "click", "user_id": "u", "document_id": "d",
            "timestamp": "2026-01-01T00:00:00Z"}  # fmt: skip
    bad = {**good, "event_id": "b", "position": -3}
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = runner.invoke(app, ["ingest", str(path), "--data-dir", str(tmp_path / "d"), "--json"])
    assert result.exit_code == 1
    report = first_json(result.output)
    assert report["added"] == 1 and report["quarantined"] == 1
    assert any("position" in reason for reason in report["reasons"])


def test_empty_file_exits_non_zero(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    result = runner.invoke(app, ["ingest", str(tmp_path / "empty.csv"), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1 and "empty input" in result.output


def test_train_on_an_empty_lake_says_so(tmp_path):
    result = runner.invoke(app, ["train", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "lake is empty" in result.output


def test_synthetic_load_rejects_sizes_out_of_range(tmp_path):
    result = runner.invoke(app, ["data", "load", "synthetic", "--size", "10", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2


def test_synthetic_load_writes_exactly_the_requested_events(tmp_path):
    import pandas as pd

    result = runner.invoke(
        app, ["data", "load", "synthetic", "--size", "5000", "--data-dir", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = first_json(result.output)
    assert len(pd.read_parquet(out["interactions"])) == 5000


def test_schema_command_writes_both_contracts(tmp_path):
    target = tmp_path / "events.json"
    assert runner.invoke(app, ["schema", "--out", str(target)]).exit_code == 0
    schemas = json.loads(target.read_text())
    assert set(schemas) == {"InteractionEvent", "ServedListEvent"}
    assert "propensity" in schemas["InteractionEvent"]["properties"]


def test_serve_without_features_says_what_to_run_first(tmp_path):
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "reranker quickstart" in result.output


def test_users_delete_on_an_empty_data_dir_removes_nothing(tmp_path):
    result = runner.invoke(app, ["users", "delete", "someone", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0
    assert set(first_json(result.output)["removed"].values()) == {0}


def test_promote_and_rollback_of_an_unknown_model_are_clear_errors(tmp_path):
    for args in (["models", "promote", "nope", "1"], ["models", "rollback", "nope"], ["promote", "nope", "1"],
                 ["rollback", "nope"]):  # fmt: skip
        result = runner.invoke(app, [*args, "--data-dir", str(tmp_path)])
        assert result.exit_code == 2 and "no MLflow database" in result.output  # never created in its place
        assert not (tmp_path / "mlflow" / "mlflow.db").exists()


def test_flows_run_ingest_without_a_path_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["flows", "run", "ingest", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "ingest needs --path" in result.output


def test_prefect_home_is_created_under_a_data_dir_that_does_not_exist_yet(tmp_path, monkeypatch):
    """The temporary local API starts before anything else writes to the data dir; Prefect creates only the last
    level of its home, so the entry point makes the whole path."""
    from reranker.settings import Settings, apply_prefect_env

    for key in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH", "PREFECT_RESULTS_PERSIST_BY_DEFAULT"):
        monkeypatch.setenv(key, "recorded")  # so that the teardown restores what was there before
        monkeypatch.delenv(key)
    layout = Settings(data_dir=tmp_path / "new" / "site").layout
    apply_prefect_env(layout)
    assert layout.prefect.is_dir()


def test_features_build_without_a_declaration_infers_one_from_the_lake_and_says_so(tmp_path, world):
    import pandas as pd

    from reranker.synthetic import documents_frame, event_chunks

    events = pd.concat(list(event_chunks(world, 4_000, chunk_requests=200)))
    events.to_parquet(tmp_path / "events.parquet")
    documents_frame(world).to_csv(tmp_path / "catalog.csv", index=False)
    data = tmp_path / "data"
    ingested = runner.invoke(app, ["ingest", str(tmp_path / "events.parquet"), "--documents",
                                   str(tmp_path / "catalog.csv"), "--data-dir", str(data)])  # fmt: skip
    assert ingested.exit_code == 0 and "features init" in ingested.output  # no declaration yet: says how
    built = runner.invoke(app, ["features", "build", "--data-dir", str(data), "--json"])
    assert built.exit_code == 0, built.output
    assert "inferred one from the lake" in built.output
    from reranker.featureset import load_feature_set

    fs = load_feature_set(data / "featureset.yaml")
    assert {"brand", "price", "quality", "title"} <= set(fs.documents) and fs.documents[
        "title"
    ].kind.value == "text"
    assert set(fs.request) == {"in_stock"} and set(fs.context) == {"device"}
    assert first_json(built.output)["feature_set"] == "inferred"


def test_a_trained_model_that_passes_no_gate_exits_3_with_what_to_do(tmp_path, monkeypatch):
    from models.card import GateStatus, GateVerdict
    from reranker.cli import training

    class Outcome:
        version, alias, passed = "4", None, False

        def __init__(self):
            self.gates = {
                "beats_first_stage": GateVerdict(status=GateStatus.failed, detail="ndcg@10 difference -0.01")
            }

        def summary(self):
            return {
                "n_lists": 200,
                "metrics": {},
                "differences": {},
                "gates": {
                    k: {"passed": False, "status": "fail", "detail": g.detail} for k, g in self.gates.items()
                },
            }

    monkeypatch.setattr(training, "train_and_register", lambda *a, **k: Outcome())
    result = runner.invoke(app, ["train", "--model-id", "shop", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "shop v4 was registered without an alias" in result.output and "What to do" in result.output


def test_flow_paths_are_checked_before_any_work(tmp_path):
    result = runner.invoke(app, ["flows", "run", "retrain", "--path", str(tmp_path / "nope"), "--data-dir",
                                 str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "no such interaction file or folder" in result.output


def test_keys_are_created_listed_and_revoked_and_bad_scopes_refused(tmp_path):
    created = runner.invoke(app, ["keys", "create", "--name", "shop", "--scope", "rerank", "--model", "m1",
                                  "--data-dir", str(tmp_path), "--json"])  # fmt: skip
    assert created.exit_code == 0, created.output
    key = first_json(created.output)
    assert key["token"].startswith("rrk_") and key["scopes"] == "rerank" and key["models"] == "m1"
    listed = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path), "--json"])
    assert key["token"] not in listed.output and first_json(listed.output)["key_id"] == key["key_id"]
    revoked = runner.invoke(app, ["keys", "revoke", key["key_id"], "--data-dir", str(tmp_path), "--json"])
    assert revoked.exit_code == 0 and first_json(revoked.output)["revoked_at"] != "-"
    bad = runner.invoke(
        app, ["keys", "create", "--name", "x", "--scope", "everything", "--data-dir", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "unknown scope" in bad.output
    unknown = runner.invoke(app, ["keys", "revoke", "nope", "--data-dir", str(tmp_path)])
    assert unknown.exit_code == 2 and "no key" in unknown.output


def test_the_prefect_ui_address_follows_the_api_url(tmp_path):
    from flows.demo import prefect_ui

    assert prefect_ui(tmp_path, "http://10.0.0.5:4300/api/") == "http://10.0.0.5:4300"
    assert prefect_ui(tmp_path, None).startswith(f"PREFECT_HOME={tmp_path} uv run prefect server start")


def test_pipeline_evaluate_refuses_a_bad_definition_before_any_work(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"stages": [{"stage_type": "sort", "stage_id": "mmr", "parameters": {"lambda": 3}}]}')
    result = runner.invoke(app, ["pipeline", "evaluate", str(bad), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2 and "stages[0].parameters.lambda" in result.output
    result = runner.invoke(
        app, ["pipeline", "evaluate", str(tmp_path / "absent.json"), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "no such pipeline definition" in result.output
    assert not (tmp_path / "d").exists()
