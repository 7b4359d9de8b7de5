"""The README's path as a user runs it: `reranker quickstart` -> the stage serves MovieLens users (no clicks yet) ->
`reranker flows run retrain` with no arguments succeeds, training on the ratings beside the served lists -> clicks
come back through /interactions -> the next retrain learns from the clicked lists too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, data: Path) -> dict:
    """`reranker ARGS --data-dir DATA --json` as a user runs it; its JSON result (fails the test with its output)."""
    done = subprocess.run([sys.executable, "-m", "reranker.cli", *args, "--data-dir", str(data), "--json"], cwd=ROOT,
                          env={**os.environ, "RERANKER_DATA_DIR": str(data)}, capture_output=True, text=True,
                          timeout=3600)  # fmt: skip
    assert done.returncode == 0, f"reranker {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    out = (
        done.stdout
    )  # the command's JSON is the block that starts with a line "{" (log lines may come before it)
    return json.loads(out if out.startswith("{") else out[out.index("\n{\n") + 1 :])


def _serve(client, users: np.ndarray, docs: np.ndarray, n: int, rng: np.random.Generator) -> list[dict]:
    served = []
    for _ in range(n):
        user = str(rng.choice(users))
        picks = rng.choice(docs, size=20, replace=False)
        body = {"model_id": "reranker", "user_id": user, "top_n": 10,
                "candidates": [{"document_id": str(d), "score": float(20 - i)} for i, d in enumerate(picks)]}  # fmt: skip
        resp = client.post("/rerank", json=body)
        assert resp.status_code == 200, resp.text
        served.append({"user": user, **resp.json()})
    return served


def test_retrain_after_serving_without_then_with_clicks(tmp_path):
    import httpx

    from flows.demo import running_stage, stage_key

    data = tmp_path / "data"
    first = _cli("quickstart", data=data)
    assert first["alias"] == "champion" and first["version"] == "1"
    # a lake over the memory budget: refused with the figure before it is read, the champion left serving
    refused = subprocess.run([sys.executable, "-m", "reranker.cli", "train", "--model-id", "reranker", "--data-dir",
                              str(data)], cwd=ROOT, capture_output=True, text=True, timeout=3600,
                             env={**os.environ, "RERANKER_DATA_DIR": str(data),
                                  "RERANKER_TRAINING_MEMORY_GB": "0.1"})  # fmt: skip
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "Traceback" not in said, said[-4000:]
    assert "events and turning them into lists would need" in said and "over the 0.1 GB budget" in said
    events = pd.read_parquet(data / "raw" / "movielens" / "interactions" / "events.parquet")
    users = events["user_id"].astype(str).unique()
    docs = events["document_id"].astype(str).unique()
    rng = np.random.default_rng(5)
    # budgets no busy machine reaches: what is served must not depend on the machine's speed
    env = {
        "RERANKER_BUDGET_MS": "60000",
        "RERANKER_STORE_TIMEOUT_MS": "60000",
        "RERANKER_ALIAS_POLL_SECONDS": "1",
    }
    with (
        running_stage(data, env) as base,
        httpx.Client(base_url=base, timeout=120, headers=stage_key(data, "e2e")) as client,
    ):
        served = _serve(client, users, docs, 200, rng)
        assert {s["served_by"] for s in served} == {"learned"}

        # served lists and their impressions, no clicks: the retrain trains on the ratings beside them
        without = _cli("flows", "run", "retrain", "--rounds", "40", data=data)["result"]
        assert without["ingested"] and without["ingested"][-1]["added"] >= 200 * 10  # the served impressions
        training = without["training"]
        assert training["data"]["sources"]["logged"] >= 200 and training["data"]["sources"]["ratings"] > 0
        assert training["data"]["positive_lists"].get("logged", 0) == 0
        assert training["data"]["positive_lists"]["ratings"] > 0 and training["version"] == "2"
        assert "lists built per source" in training["report"]

        # the users click the first item of the lists served now: the next retrain learns from those lists
        clicked = _serve(client, users, docs, 200, rng)
        for chunk in range(0, len(clicked), 50):
            batch = [{"event_id": f"click-{s['request_id']}", "request_id": s["request_id"],
                      "interaction_type": "click", "user_id": s["user"],
                      "document_id": s["results"][0]["document_id"], "position": 0,
                      "timestamp": pd.Timestamp.now(tz="UTC").isoformat()}
                     for s in clicked[chunk : chunk + 50]]  # fmt: skip
            resp = client.post("/interactions", json={"events": batch})
            assert resp.status_code == 202 and resp.json()["accepted"] == len(batch), resp.text
    with_clicks = _cli("flows", "run", "retrain", "--rounds", "40", data=data)["result"]["training"]
    assert with_clicks["data"]["positive_lists"]["logged"] >= 190  # the clicked lists are trained on
    assert with_clicks["data"]["sources"]["logged"] >= 400 and with_clicks["version"] == "3"
