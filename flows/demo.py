"""`reranker demo`: the loop closed on the embedded default, through the real HTTP stage.

1. A synthetic world (users with known tastes, position-biased clicks) and a short bootstrap log of its first-stage
   ranking with exploration -> the retrain flow -> v1 (champion).
2. The stage (`bentoml serve`) serves v1; simulated users call POST /rerank and post their clicks to
   /interactions.
3. The retrain flow lands what the stage logged (served lists with propensities, clicks), rebuilds the features and
   trains v2; it passes its gates and becomes the canary.
4. Canary traffic: a share of users gets v2 (sticky by hashed user id), the rest v1, at the same time.
5. After each round of canary traffic the canary-analysis flow compares them (online click rate with user-resampled
   intervals, off-policy estimates of each ranking without exploration) and promotes v2, rolls it back, or waits for
   the next round - as the hourly deployment does in production. With at most K rounds each analysis reads a
   1 - 0.05 / K interval, so repeated looks do not inflate the chance of a false decision beyond 5%.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.lifecycle import canary_analysis_flow, retrain_flow
from models.canary import click_rate
from reranker.featureset import BUNDLED, install_feature_set
from reranker.lake import atomic_write_parquet
from reranker.launch import stage_command, stage_env, wait_ready
from reranker.settings import Settings
from reranker.synthetic import SyntheticWorld, WorldConfig, simulate_traffic, write_dataset

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DemoPlan:
    model_id: str = "reranker"
    seed: int = 7
    n_users: int = 500
    n_docs: int = 600
    bootstrap_days: int = 14
    bootstrap_events: int = 40_000  # a young platform: v1 learns from a first log of ≈ 3,600 lists
    # the first log predates the caller sending each candidate's stock (request features): v1 cannot learn it, the
    # stage logs it with every impression, so v2 can
    bootstrap_request_features: bool = False
    # a quarter of the candidates out of stock (a sale week): what v2 learns from the logged stock is worth ≈ +15%
    # clicks, wide enough for the canary analysis to see in a round (at the world's 10% it was ≈ +7%, and a run of
    # three rounds of 6,000 requests could end inconclusive)
    in_stock_rate: float = 0.75
    traffic_requests: int = 10_000  # served by v1 alone, then logged for v2's training
    canary_requests: int = 10_000  # per canary round: served by v1 and v2 at once, then analysed
    canary_rounds: int = 3  # analyses at most; each reads a 1 - 0.05 / canary_rounds interval (Bonferroni)
    canary_share: float = 0.5
    clients: int = 4
    workers: int = 2  # stage worker processes (~90 requests/s here, against ~55 with one)
    rounds: int = 150
    # the stage's budgets (tests raise them: a busy machine must not change what is served)
    budget_ms: float = 50.0
    store_timeout_ms: float = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stage_key(data_dir: Path, name: str = "demo") -> dict[str, str]:
    """A new admin API key in `data_dir`'s key file, as the headers a client sends."""
    from reranker.access import KeyStore, Scope
    from reranker.settings import Layout

    _, token = KeyStore(Layout(data_dir.resolve()).keys).create(name, [Scope.admin])
    return {"authorization": f"Bearer {token}"}


def prefect_ui(prefect_home: Path, api_url: str | None) -> str:
    """Where the flow runs can be watched: the server behind PREFECT_API_URL (its UI is the same address without
    `/api`), else how to start one over this data dir's Prefect database."""
    if api_url:
        return api_url.rstrip("/").removesuffix("/api")
    return f"PREFECT_HOME={prefect_home} uv run prefect server start  (then http://127.0.0.1:4200)"


@contextmanager
def running_stage(data_dir: Path, settings_env: dict[str, str], ready_seconds: float = 600) -> Iterator[str]:
    """`bentoml serve` of the stage over `data_dir` on a free loopback port, with these extra environment variables
    (RERANKER_* settings, MLFLOW_TRACKING_URI); yields its base URL, stops it on exit. Its log: <data_dir>/stage.log."""
    port = _free_port()
    data_dir = data_dir.resolve()
    env = {**os.environ, "RERANKER_DATA_DIR": str(data_dir), "BENTOML_HOME": str(data_dir / "bentoml"),
           **settings_env}  # fmt: skip
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "stage.log"
    log_file = log_path.open("a")
    proc = subprocess.Popen(stage_command("127.0.0.1", port), cwd=ROOT, env=stage_env(env), stdout=log_file,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, ready_seconds, log_path.read_text)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


def drive_traffic(base: str, headers: dict[str, str], world: SyntheticWorld, n: int, plan: DemoPlan, seed: int,
                  progress: bool) -> pd.DataFrame:  # fmt: skip
    """`n` simulated requests through HTTP from `plan.clients` concurrent clients."""
    import httpx
    from tqdm import tqdm

    bar = tqdm(total=n, unit="req", desc="simulated traffic", disable=not progress)

    def worker(part: int, count: int) -> pd.DataFrame:
        with httpx.Client(base_url=base, timeout=120, headers=headers) as client:

            def rerank(body: dict[str, Any]) -> dict[str, Any]:
                resp = client.post("/rerank", json=body)
                resp.raise_for_status()
                bar.update(1)
                return dict(resp.json())

            def interact(events: list[dict[str, Any]]) -> None:
                client.post("/interactions", json={"events": events}).raise_for_status()

            return simulate_traffic(world, count, rerank, interact, plan.model_id,
                                    np.random.default_rng([seed, part]))  # fmt: skip

    counts = [len(c) for c in np.array_split(np.arange(n), plan.clients)]
    with ThreadPoolExecutor(plan.clients) as pool:
        frames = list(pool.map(worker, range(plan.clients), counts))
    bar.close()
    return pd.concat(frames, ignore_index=True)


def _rate(frame: pd.DataFrame) -> dict[str, float]:
    """Clicks per shown item with a 95% interval resampling users (the canary analysis' estimator)."""
    per_user = frame.groupby("user").agg(clicks=("clicks", "sum"), impressions=("shown", "sum"))
    rate, _ = click_rate(per_user, 1000, np.random.default_rng(0))
    return {**rate.to_dict(), "requests": len(frame)}


def run_demo(settings: Settings, plan: DemoPlan, progress: bool = True, say: Any = print) -> dict[str, Any]:
    layout = settings.layout
    data_dir = str(settings.data_dir.resolve())
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)
        say(f"[{time.perf_counter() - started:6.1f}s] {name}")

    # from midnight UTC: the log's times of day (the synthetic feature set's `hour` input) are the same whenever the
    # demo runs, and with them the first model; from the moment it ran they differed, and so did v1's gate margin
    start = (datetime.now(UTC) - timedelta(days=plan.bootstrap_days)).replace(hour=0, minute=0, second=0,
                                                                               microsecond=0)  # fmt: skip
    world = SyntheticWorld.create(WorldConfig.shop(seed=plan.seed, n_users=plan.n_users, n_docs=plan.n_docs,
                                                   days=plan.bootstrap_days - 1, start=start, n_candidates=30,
                                                   in_stock_rate=plan.in_stock_rate))  # fmt: skip
    raw = layout.raw / "demo"
    write_dataset(world, plan.bootstrap_events, raw, progress=progress)
    if not plan.bootstrap_request_features:
        for part in sorted((raw / "interactions").glob("part-*.parquet")):
            atomic_write_parquet(pd.read_parquet(part).drop(columns=["features"], errors="ignore"), part)
    say(install_feature_set(BUNDLED / "synthetic.yaml", settings.feature_set_path, raw / "featureset.yaml"))
    lap("bootstrap log written")
    state = retrain_flow(model_id=plan.model_id, path=str(raw / "interactions"), documents=str(raw / "documents.parquet"),
                         rounds=plan.rounds, data_dir=data_dir, return_state=True)  # fmt: skip
    if not state.is_completed():
        raise RuntimeError(f"training v1 failed: {state.message}")
    v1 = state.result()["training"]
    if v1["alias"] != "champion":
        raise RuntimeError(f"v1 did not become champion: {v1['gates']}")
    lap(f"v1 trained and registered (champion v{v1['version']})")

    stage_env = {"RERANKER_CANARY_SHARE": str(plan.canary_share), "RERANKER_ALIAS_POLL_SECONDS": "2",
                 "RERANKER_BUDGET_MS": str(plan.budget_ms), "RERANKER_STORE_TIMEOUT_MS": str(plan.store_timeout_ms),
                 "RERANKER_WORKERS": str(plan.workers),
                 "RERANKER_PRELOAD_MODELS": f'["{plan.model_id}"]', "MLFLOW_TRACKING_URI": settings.tracking_uri()}  # fmt: skip
    headers = stage_key(settings.data_dir)
    with running_stage(settings.data_dir, stage_env) as base:
        lap("stage serving v1")
        before = drive_traffic(base, headers, world, plan.traffic_requests, plan, seed=1, progress=progress)
        lap(f"{len(before)} requests served by v1")
        time.sleep(2)  # the stage flushes served lists every second
        state = retrain_flow(model_id=plan.model_id, rounds=plan.rounds, data_dir=data_dir, return_state=True)
        if not state.is_completed():
            raise RuntimeError(f"training v2 failed: {state.message}")
        v2 = state.result()["training"]
        lap(f"v2 trained on logged traffic (alias {v2['alias'] or 'none'})")
        if v2["alias"] != "canary":
            failed = {k: g["detail"] for k, g in v2["gates"].items() if not g["passed"]}
            raise RuntimeError(f"v2 did not pass its gates: {failed}")
        time.sleep(4)  # the stage re-reads aliases every 2 s here
        confidence = 1 - 0.05 / plan.canary_rounds
        rounds: list[pd.DataFrame] = []
        looks: list[dict[str, Any]] = []
        for look in range(1, plan.canary_rounds + 1):
            rounds.append(
                drive_traffic(
                    base, headers, world, plan.canary_requests, plan, seed=1 + look, progress=progress
                )
            )
            lap(f"{sum(len(r) for r in rounds)} requests while v2 was canary")
            time.sleep(2)  # the stage flushes served lists every second
            state = canary_analysis_flow(model_id=plan.model_id, data_dir=data_dir, confidence=confidence,
                                         return_state=True)  # fmt: skip
            if not state.is_completed():
                raise RuntimeError(f"canary analysis failed: {state.message}")
            analysis = state.result()
            looks.append({"requests": sum(len(r) for r in rounds), "decision": analysis["decision"],
                          "difference": analysis["difference"]})  # fmt: skip
            lap(f"canary analysis {look}/{plan.canary_rounds}: {analysis['decision']}")
            say(f"          {analysis['reason']}")
            if analysis["decision"] != "wait":
                break
        during = pd.concat(rounds, ignore_index=True)

    learned = during[during["served_by"] == "learned"]
    result = {
        "v1": v1["version"],
        "v2": v2["version"],
        "decision": analysis["decision"],
        "reason": analysis["reason"],
        "aliases": analysis.get("aliases_after"),
        "click_rate": {
            "v1 alone (before)": _rate(before[before["served_by"] == "learned"]),
            "v1 during canary": _rate(learned[learned["variant"] == "champion"]),
            "v2 during canary": _rate(learned[learned["variant"] == "canary"]),
        },
        "difference": analysis["difference"],
        "confidence": confidence,
        "looks": looks,
        "greedy_policy_ips": {v: analysis[v]["greedy_snips"] for v in ("champion", "canary")},
        "true_gain_per_list": {
            v: float(learned[learned["variant"] == v]["true_gain"].mean()) for v in ("champion", "canary")
        },
        "seconds": timings,
        "mlflow_ui": f"uv run mlflow ui --backend-store-uri {settings.tracking_uri()}",
        "prefect_ui": prefect_ui(layout.prefect, os.environ.get("PREFECT_API_URL")),
    }
    return result
