"""Two builds of the stage side by side: this tree and a git revision, called alternately by one client.

This machine's timings drift between runs by more than most single changes are worth; alternating the two stages
request by request puts both under the same conditions. Both serve the benchmark's data (see benchmarks.serving),
each user's features read from the online store on every request. Prints a table, writes
benchmarks/results/serving-ab.json. Usage: python -m benchmarks.ab_serving --base REV [--requests N] [--users N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving import RESULTS, ROOT, _port, _start, provision


def _bodies(data: Path, users: int) -> list[bytes]:
    import pandas as pd

    rng = np.random.default_rng(0)
    docs = pd.read_parquet(data / "lake" / "documents.parquet")["document_id"].to_numpy()
    return [
        json.dumps({"model_id": "reranker", "user_id": f"ml{u + 1}", "top_n": 10, "exploration_rate": 0.1,
                    "candidates": [{"document_id": str(d), "score": float(100 - i)}
                                   for i, d in enumerate(rng.choice(docs, 100, replace=False))]}).encode()
        for u in range(users)
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="The git revision to compare this tree with.")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/reranker-bench/serve"))
    parser.add_argument("--requests", type=int, default=3000, help="Per stage.")
    parser.add_argument("--users", type=int, default=943, help="Distinct users, called in turn.")
    args = parser.parse_args()
    import httpx

    data = provision(args.data_dir, "movielens")
    env = {**os.environ, "RERANKER_DATA_DIR": str(data), "BENTOML_HOME": str(data / "bentoml"),
           "OMP_WAIT_POLICY": "PASSIVE", "RERANKER_USER_CACHE_SECONDS": "0", "BENTOML_DO_NOT_TRACK": "true"}  # fmt: skip
    bodies = _bodies(data, args.users)
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        trees = {f"base ({args.base})": base_tree, "this tree": ROOT}
        procs, urls = [], {}
        try:
            for name, tree in trees.items():
                port = _port()
                procs.append(_start("serving.service:Reranker", port, env, cwd=tree))
                urls[name] = f"http://127.0.0.1:{port}/rerank"
            latency: dict[str, list[float]] = {name: [] for name in urls}
            from flows.demo import stage_key

            headers = {"content-type": "application/json", **stage_key(data, "ab-benchmark")}
            with httpx.Client() as client:
                for i in range(300 + args.requests):
                    for name, url in urls.items():
                        started = time.perf_counter()
                        client.post(url, content=bodies[i % len(bodies)], headers=headers).raise_for_status()
                        if i >= 300:  # after a warm-up
                            latency[name].append((time.perf_counter() - started) * 1000)
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    results: dict[str, Any] = {
        name: {f"p{q}_ms": float(np.quantile(ms, q / 100)) for q in (50, 90, 99)}
        for name, ms in latency.items()
    }
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"/rerank, two stages called alternately ({args.requests} requests each, 1 client)")
    for col in ("stage", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}")
    Console(width=120).print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving-ab.json").write_text(json.dumps({"base": args.base, "results": results}, indent=2))


if __name__ == "__main__":
    main()
