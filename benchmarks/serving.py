"""Serving benchmark over HTTP on loopback: POST /rerank with 100 candidates, features from the online store.

Beside it, in the same run and with the same client and body: a no-op @bentoml.api endpoint, a no-op FastAPI route
mounted in a BentoML service (how the stage is mounted), and raw LightGBM prediction of the same 100 rows.
Reports p50/p99 with 1 client and requests/s with 8 concurrent clients, and the ratios to the floor
(no-op p50 + LightGBM p50). Usage: python -m benchmarks.serving [--data-dir DIR]   (provisions with quickstart)
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


def _sequential(url: str, bodies: list[dict[str, Any]], n: int) -> dict[str, float]:
    import httpx

    lat = []
    with httpx.Client(timeout=10) as client:
        for i in range(50):
            client.post(url, json=bodies[i % len(bodies)]).raise_for_status()
        for i in range(n):
            t = time.perf_counter()
            client.post(url, json=bodies[i % len(bodies)]).raise_for_status()
            lat.append(time.perf_counter() - t)
    ms = np.array(lat) * 1000
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.quantile(ms, 0.99))}


def _concurrent(url: str, bodies: list[dict[str, Any]], clients: int, seconds: float) -> dict[str, float]:
    import httpx

    done: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds

    def worker(offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = offset
            while time.monotonic() < stop:
                t = time.perf_counter()
                if client.post(url, json=bodies[i % len(bodies)]).status_code != 200:
                    errors[0] += 1
                done.append(time.perf_counter() - t)
                i += clients

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = np.array(done) * 1000
    return {"rps": len(done) / seconds, "p50_ms": float(np.median(ms)), "p99_ms": float(np.quantile(ms, 0.99)),
            "errors": errors[0]}  # fmt: skip


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
            {
                "model_id": "reranker",
                "user_id": f"ml{rng.integers(1, 944)}",
                "top_n": 10,
                "exploration_rate": 0.1,
                "candidates": [{"document_id": str(d), "score": float(100 - i)} for i, d in enumerate(cands)],
            }
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
        results: dict[str, Any] = {}
        for name, url in targets.items():
            results[name] = {"one_client": _sequential(url, bodies, args.requests),
                             "eight_clients": _concurrent(url, bodies, 8, args.seconds)}  # fmt: skip
        results["lightgbm predict 100 rows"] = {"one_client": _lgbm(data)}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    floor_p50 = (
        results["no-op @bentoml.api"]["one_client"]["p50_ms"]
        + results["lightgbm predict 100 rows"]["one_client"]["p50_ms"]
    )
    floor_p99 = (
        results["no-op @bentoml.api"]["one_client"]["p99_ms"]
        + results["lightgbm predict 100 rows"]["one_client"]["p99_ms"]
    )
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


def _lgbm(data: Path) -> dict[str, float]:
    from models.registry import Registry

    registry = Registry(f"sqlite:///{data / 'mlflow' / 'mlflow.db'}")
    model = registry.load("reranker", "champion")
    X = np.ascontiguousarray(np.random.default_rng(1).random((100, len(model.features))), dtype=np.float32)
    lat = []
    for _ in range(500):
        t = time.perf_counter()
        model.booster.predict(X, num_threads=1)
        lat.append(time.perf_counter() - t)
    ms = np.array(lat[50:]) * 1000
    return {
        "p50_ms": float(np.median(ms)),
        "p99_ms": float(np.quantile(ms, 0.99)),
        "trees": model.booster.num_trees(),
    }


if __name__ == "__main__":
    main()
