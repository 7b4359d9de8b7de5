"""Serving benchmark over HTTP on loopback: POST /rerank with 100 candidates, features from the online store.

Beside it, in the same run and with the same client and body: a no-op @bentoml.api endpoint, a no-op FastAPI route
mounted in a BentoML service (how the stage is mounted), and raw LightGBM prediction of the same 100 rows.
Reports p50/p99 with 1 client and requests/s with 8 concurrent clients, and the ratios to the floor
(no-op p50 + LightGBM p50). The endpoints are measured in turn (in blocks of 100 requests with one client, in
3-second windows with eight), not one after another: this machine's speed drifts by tens of percent over minutes,
and measured in turn the drift falls on the stage and its floor alike.
Usage: python -m benchmarks.serving [--data-dir DIR]   (provisions with quickstart)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
LGBM = "lightgbm predict 100 rows"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provision(data_dir: Path) -> Path:
    """The benchmark's data: `reranker quickstart` into `data_dir` unless a model is already registered there."""
    data = data_dir.resolve()
    if not (data / "mlflow" / "mlflow.db").exists():
        subprocess.run([sys.executable, "-m", "reranker.cli", "quickstart", "--data-dir", str(data), "--json"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return data


def _start(target: str, port: int, env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen[str]:
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", target, "--port", str(port), "--host",
                             "127.0.0.1"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit(f"{target} died: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    raise SystemExit(f"{target} not ready in 240 s")


HEADERS = {"content-type": "application/json"}


def _one_client(urls: dict[str, str], bodies: list[bytes], n: int, score: Any, block: int = 100
                ) -> dict[str, dict[str, float]]:  # fmt: skip
    """p50 and p99 of each endpoint with one client, the endpoints (and LightGBM's prediction) taken in turn in
    blocks of `block` requests: the machine's drift falls on all of them alike, and within a block each runs as it
    would alone (interleaved request by request, every call would pay for the others' cache traffic)."""
    import httpx

    lat: dict[str, list[float]] = {name: [] for name in [*urls, LGBM]}
    with httpx.Client(timeout=10) as client:
        for url in urls.values():  # warm-up
            for i in range(50):
                client.post(url, content=bodies[i % len(bodies)], headers=HEADERS).raise_for_status()
        for start in range(0, n, block):
            for name, url in urls.items():
                for i in range(start, min(start + block, n)):
                    t = time.perf_counter()
                    client.post(url, content=bodies[i % len(bodies)], headers=HEADERS).raise_for_status()
                    lat[name].append(time.perf_counter() - t)
            for _ in range(start, min(start + block, n)):
                t = time.perf_counter()
                score()
                lat[LGBM].append(time.perf_counter() - t)
    out = {}
    for name, seconds in lat.items():
        ms = np.array(seconds) * 1000
        out[name] = {"p50_ms": float(np.median(ms)), "p99_ms": float(np.quantile(ms, 0.99))}
    return out


def _eight_clients(urls: dict[str, str], bodies: list[bytes], clients: int, seconds: float, rounds: int = 5
                   ) -> dict[str, dict[str, float]]:  # fmt: skip
    """Requests/s of each endpoint under `clients` concurrent clients: `seconds` per endpoint, in `rounds` windows
    taken in turn (endpoint by endpoint), for the same reason."""
    done: dict[str, list[float]] = {name: [] for name in urls}
    errors = dict.fromkeys(urls, 0)
    for _ in range(rounds):
        for name, url in urls.items():
            latencies, failed = _window(url, bodies, clients, seconds / rounds)
            done[name] += latencies
            errors[name] += failed
    out = {}
    for name, latencies in done.items():
        ms = np.array(latencies) * 1000
        out[name] = {"rps": len(ms) / seconds, "p50_ms": float(np.median(ms)), "p99_ms": float(np.quantile(ms, 0.99)),
                     "errors": errors[name]}  # fmt: skip
    return out


def _window(url: str, bodies: list[bytes], clients: int, seconds: float) -> tuple[list[float], int]:
    """`clients` threads posting for `seconds`: each request's latency, and how many were not answered 200."""
    import httpx

    stop = time.monotonic() + seconds
    done: list[tuple[float, bool]] = []  # appends are atomic: the threads share it

    def worker(offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = offset
            while time.monotonic() < stop:
                t = time.perf_counter()
                ok = client.post(url, content=bodies[i % len(bodies)], headers=HEADERS).status_code == 200
                done.append((time.perf_counter() - t, ok))
                i += clients

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [seconds for seconds, _ in done], sum(not ok for _, ok in done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/reranker-bench/serve"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=1, help="Worker processes of the stage.")
    args = parser.parse_args()
    data = provision(args.data_dir)
    import pandas as pd

    rng = np.random.default_rng(0)
    docs = pd.read_parquet(data / "lake" / "documents.parquet")["document_id"].to_numpy()
    bodies = []
    for _ in range(200):
        cands = rng.choice(docs, 100, replace=False)
        bodies.append(
            json.dumps(
                {
                    "model_id": "reranker",
                    "user_id": f"ml{rng.integers(1, 944)}",
                    "top_n": 10,
                    "exploration_rate": 0.1,
                    "candidates": [
                        {"document_id": str(d), "score": float(100 - i)} for i, d in enumerate(cands)
                    ],
                }
            ).encode()
        )
    # user features are read from the online store on every request (no reuse across requests), as for traffic
    # where a user rarely returns within the cache's 5 s
    env = {**os.environ, "RERANKER_DATA_DIR": str(data), "BENTOML_HOME": str(data / "bentoml"),
           "OMP_WAIT_POLICY": "PASSIVE", "RERANKER_USER_CACHE_SECONDS": "0", "BENTOML_DO_NOT_TRACK": "true",
           "RERANKER_WORKERS": str(args.workers)}  # fmt: skip
    stage_port, noop_port = _port(), _port()
    procs = [
        _start("serving.service:Reranker", stage_port, env),
        _start("benchmarks.noop_service:Noop", noop_port, env),
    ]
    try:
        targets = {
            "rerank (stage)": f"http://127.0.0.1:{stage_port}/rerank",
            "no-op @bentoml.api": f"http://127.0.0.1:{noop_port}/rerank",
            "no-op mounted FastAPI": f"http://127.0.0.1:{noop_port}/mounted/rerank",
            "contract parse + canned response": f"http://127.0.0.1:{noop_port}/mounted/contract",
        }
        predict, trees = _lgbm(data)
        one = _one_client(targets, bodies, args.requests, predict)
        eight = _eight_clients(targets, bodies, 8, args.seconds)
        results: dict[str, Any] = {
            name: {"one_client": one[name], "eight_clients": eight[name]} for name in targets
        }
        results[LGBM] = {"one_client": {**one[LGBM], "trees": trees}}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    floor_p50 = results["no-op @bentoml.api"]["one_client"]["p50_ms"] + results[LGBM]["one_client"]["p50_ms"]
    floor_p99 = results["no-op @bentoml.api"]["one_client"]["p99_ms"] + results[LGBM]["one_client"]["p99_ms"]
    stage = results["rerank (stage)"]
    summary = {
        "p50_vs_floor": stage["one_client"]["p50_ms"] / floor_p50,
        "p99_vs_floor": stage["one_client"]["p99_ms"] / floor_p99,
        "rps_vs_noop_8_clients": stage["eight_clients"]["rps"]
        / results["no-op @bentoml.api"]["eight_clients"]["rps"],
        "targets": {"p50_vs_floor": "<= 1.5", "p99_vs_floor": "<= 2.0", "rps_vs_noop_8_clients": ">= 0.5"},
    }
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"serving over HTTP, 100 candidates, stage with {args.workers} worker(s) (same client, same run)"
    )
    for col in [
        "endpoint",
        "p50 ms (1 client)",
        "p99 ms (1 client)",
        "req/s (8 clients)",
        "p99 ms (8 clients)",
        "errors",
    ]:
        table.add_column(col)
    for name, r in results.items():
        one, eight = r["one_client"], r.get("eight_clients", {})
        table.add_row(name, f"{one['p50_ms']:.2f}", f"{one['p99_ms']:.2f}", f"{eight.get('rps', 0):.0f}" if eight else "-",
                      f"{eight['p99_ms']:.1f}" if eight else "-", str(eight.get("errors", "-")))  # fmt: skip
    Console(width=140).print(table)
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serving-{args.workers}w.json"
    out.write_text(json.dumps({"workers": args.workers, "results": results, "summary": summary}, indent=2))


def _lgbm(data: Path) -> tuple[Any, int]:
    """LightGBM's own prediction of 100 rows with one thread, on the champion: a call to time, and the trees."""
    from models.registry import Registry

    registry = Registry(f"sqlite:///{data / 'mlflow' / 'mlflow.db'}")
    booster = registry.load("reranker", "champion").booster
    X = np.ascontiguousarray(np.random.default_rng(1).random((100, booster.num_feature())), dtype=np.float32)
    return (lambda: booster.predict(X, num_threads=1)), booster.num_trees()


if __name__ == "__main__":
    main()
