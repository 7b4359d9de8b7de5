"""Serving benchmark over HTTP on loopback: POST /rerank with 100 candidates, features from the online store.

Traffic is shaped like production: every request's body is built when it is sent, for a user drawn from the whole
user base and 100 documents drawn from the whole catalog (no body, user or candidate set is reused, so no cache of
the stage's is warmed by repetition); on the shop (`--dataset shop`) each also carries a text query, each
candidate's `in_stock` and the request's device.
Beside it, in the same run and with the same client and bodies: a no-op @bentoml.api endpoint, a no-op FastAPI route
mounted in a BentoML service (how the stage is mounted), and raw LightGBM prediction of 100 rows.
Reports p50/p99 with 1 client and requests/s with 8 concurrent clients, and the ratios to the floor
(no-op p50 + LightGBM p50). The endpoints are measured in turn (in blocks of 100 requests with one client, in
3-second windows with eight), not one after another: this machine's speed drifts by tens of percent over minutes,
and measured in turn the drift falls on the stage and its floor alike.
Usage: python -m benchmarks.serving [--dataset movielens|shop] [--data-dir DIR]   (provisions the data itself)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from reranker.launch import stage_command, stage_env, wait_ready

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
LGBM = "lightgbm predict 100 rows"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provision(data_dir: Path, dataset: str) -> Path:
    """The benchmark's data, unless a model is already registered there: `reranker quickstart` (MovieLens), or the
    synthetic shop loaded, ingested, featured and trained."""
    data = data_dir.resolve()
    if (data / "mlflow" / "mlflow.db").exists() and (data / "secrets" / "user_id_salt").exists():
        return data
    if data.exists():  # from a release before the data dir kept its own salt: its user keys would not match
        shutil.rmtree(data)
    cli = [sys.executable, "-m", "reranker.cli"]
    where = ["--data-dir", str(data)]
    if dataset == "movielens":
        subprocess.run([*cli, "quickstart", *where, "--json"], check=True, stdout=subprocess.DEVNULL)
        return data
    subprocess.run([*cli, "data", "load", "synthetic", "--size", "300000", "--shift-to-now", *where, "--json"],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    raw = data / "raw" / "synthetic-300000-s7"
    subprocess.run([*cli, "ingest", str(raw / "interactions"), "--documents", str(raw / "documents.parquet"), *where,
                    "--json"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    for step in (["features", "apply"], ["features", "materialize"], ["train"]):
        subprocess.run([*cli, *step, *where, "--json"], check=True, stdout=subprocess.DEVNULL)
    return data


def traffic(data: Path, dataset: str, content: bool = False) -> Any:
    """A function of a generator that builds one request body: a user from the whole user base, 100 documents
    from the whole catalog (and, on the shop, a query, each candidate's stock and the device; with `content`, each
    candidate's title)."""
    import pandas as pd

    catalog = pd.read_parquet(data / "lake" / "documents.parquet")
    docs = catalog["document_id"].to_numpy()
    titles = dict(zip(catalog["document_id"].astype(str), catalog["title"].astype(str), strict=True)) if (
        "title" in catalog) else {}  # fmt: skip
    if dataset == "movielens":
        users = [f"ml{i}" for i in range(1, 944)]
        queries: list[str] = []
    else:
        world = json.loads(next((data / "raw").glob("synthetic-*/world.json")).read_text())["config"]
        users = [f"u{i}" for i in range(world["n_users"])]
        from reranker.synthetic import SyntheticWorld, WorldConfig

        shop = SyntheticWorld.create(WorldConfig.shop(seed=world["seed"]))
        queries = [str(q) for q in shop.query_text(np.arange(shop.n_queries))]

    def body(rng: np.random.Generator) -> Any:  # bytes, or the request itself (`content`)
        cands = rng.choice(docs, 100, replace=False)
        request: dict[str, Any] = {"model_id": "reranker", "user_id": users[int(rng.integers(len(users)))],
                                   "top_n": 10, "exploration_rate": 0.1,
                                   "candidates": [{"document_id": str(d), "score": float(100 - i)}
                                                  for i, d in enumerate(cands)]}  # fmt: skip
        if content:
            for candidate in request["candidates"]:
                candidate["content"] = titles.get(candidate["document_id"])
        if queries:
            request["query"] = queries[int(rng.integers(len(queries)))]
            request["context"] = {"device": "mobile" if rng.random() < 0.6 else "desktop"}
            for candidate in request["candidates"]:
                candidate["features"] = {"in_stock": float(rng.random() < 0.9)}
        return json.dumps(request).encode() if not content else request

    return body


def pipeline_traffic(data: Path, dataset: str) -> dict[str, Any]:
    """Body builders of POST /pipeline at 100 candidates: each stage alone, and the seed's three pipelines."""
    from serving.api_docs import pipeline_examples

    rerank = traffic(data, dataset, content=True)
    category = "metadata.categories"
    genres = ["Drama", "Comedy", "Action", "Thriller", "Romance"] if dataset == "movielens" else [
        f"cat{i:02d}" for i in range(0, 16, 2)]  # fmt: skip
    learned = {
        "stage_type": "sort",
        "stage_id": "learned_rerank",
        "parameters": {"model_id": "reranker", "user_id": "{{INPUT.user_id}}", "top_n": 10},
    }
    alone = {
        "structured_filter": [{"stage_type": "filter", "stage_id": "structured_filter", "parameters": {"conditions": {
            "OR": [{"field": category, "operator": "in", "value": genres}, {"field": "score", "operator": "gte",
                                                                             "value": 50}]}}}],
        "rerank (BM25)": [{"stage_type": "sort", "stage_id": "rerank", "parameters": {"top_k": 10}}],
        "learned_rerank": [learned],
        "mmr": [{"stage_type": "sort", "stage_id": "mmr", "parameters": {"lambda": 0.7, "top_k": 10}}],
        "business_rules": [{"stage_type": "sort", "stage_id": "business_rules", "parameters": {
            "pin": [{"document_id": "{{INPUT.promoted}}", "position": 0}],
            "cap": [{"field": category, "max": 2, "within_top": 10}]}}],
    }  # fmt: skip
    seed = {f"seed: {name}": example["stages"] for name, example in pipeline_examples().items()}

    def maker(stages: list[dict[str, Any]]) -> Any:
        def body(rng: np.random.Generator) -> bytes:
            one = rerank(rng)
            cands = one["candidates"]
            inputs = {"user_id": one["user_id"], "model_id": "reranker", "categories": genres,
                      "query": one.get("query") or str(rng.choice(["star", "love", "night", "war", "man"])),
                      "promoted": cands[int(rng.integers(len(cands)))]["document_id"]}  # fmt: skip
            for c in cands:  # the e-commerce filter reads the catalog's stock, sent with each candidate
                c["metadata"] = {"in_stock": bool(c.get("features", {}).get("in_stock", 1.0))}
            return json.dumps({"inputs": inputs, "candidates": cands, "stages": stages}).encode()

        return body

    return {f"pipeline: {name}": maker(stages) for name, stages in {**alone, **seed}.items()}


def _start(target: str, port: int, env: dict[str, str], cwd: Path = ROOT, log: Path | None = None,
           ready_seconds: float = 240, optimized: bool = True) -> subprocess.Popen[str]:  # fmt: skip
    """`bentoml serve target` on a loopback port, once /readyz answers 200; its output to `log` (appended) if given.
    `optimized=False`: started as releases before `reranker.launch` did (plain Python, the environment as given)."""
    out = log.open("a") if log is not None else subprocess.DEVNULL
    command = stage_command("127.0.0.1", port, target)
    if not optimized:
        command.remove("-O")
    proc = subprocess.Popen(command, cwd=cwd, env=stage_env(env) if optimized else env, stdout=out,
                            stderr=subprocess.STDOUT if log is not None else subprocess.PIPE, text=True)  # fmt: skip
    said = (lambda: log.read_text()) if log is not None else (lambda: proc.stderr.read())  # type: ignore[union-attr]
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", ready_seconds, said)
    except RuntimeError as e:
        raise SystemExit(f"{target}: {e}") from None
    return proc


HEADERS = {"content-type": "application/json"}


def _one_client(urls: dict[str, str], make: Any, n: int, score: Any, block: int = 100
                ) -> dict[str, dict[str, float]]:  # fmt: skip
    """p50 and p99 of each endpoint with one client, the endpoints (and LightGBM's prediction) taken in turn in
    blocks of `block` requests: the machine's drift falls on all of them alike, and within a block each runs as it
    would alone (interleaved request by request, every call would pay for the others' cache traffic). Each body is
    built just before it is sent (not timed)."""
    import httpx

    lat: dict[str, list[float]] = {name: [] for name in [*urls, LGBM]}
    rng = np.random.default_rng(0)
    makers = make if isinstance(make, dict) else dict.fromkeys(urls, make)
    with httpx.Client(timeout=10) as client:
        for name, url in urls.items():  # warm-up
            for _ in range(50):
                client.post(url, content=makers[name](rng), headers=HEADERS).raise_for_status()
        for start in range(0, n, block):
            for name, url in urls.items():
                for _ in range(start, min(start + block, n)):
                    body = makers[name](rng)
                    t = time.perf_counter()
                    client.post(url, content=body, headers=HEADERS).raise_for_status()
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


def _stage_times(url: str, make: Any, n: int) -> dict[str, float]:
    """Median time of each stage inside the stage process (the response's `stages[].ms`) over n requests."""
    import httpx

    times: dict[str, list[float]] = {}
    rng = np.random.default_rng(1)
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            got = client.post(url, content=make(rng), headers=HEADERS)
            got.raise_for_status()
            for stage in got.json()["stages"]:
                times.setdefault(stage["stage_id"], []).append(stage["ms"])
    return {stage: float(np.median(ms)) for stage, ms in times.items()}


def _eight_clients(urls: dict[str, str], make: Any, clients: int, seconds: float, rounds: int = 5
                   ) -> dict[str, dict[str, float]]:  # fmt: skip
    """Requests/s of each endpoint under `clients` concurrent clients: `seconds` per endpoint, in `rounds` windows
    taken in turn (endpoint by endpoint), for the same reason."""
    done: dict[str, list[float]] = {name: [] for name in urls}
    errors = dict.fromkeys(urls, 0)
    for _ in range(rounds):
        for name, url in urls.items():
            latencies, failed = _window(url, make, clients, seconds / rounds)
            done[name] += latencies
            errors[name] += failed
    out = {}
    for name, latencies in done.items():
        ms = np.array(latencies) * 1000
        out[name] = {"rps": len(ms) / seconds, "p50_ms": float(np.median(ms)), "p99_ms": float(np.quantile(ms, 0.99)),
                     "errors": errors[name]}  # fmt: skip
    return out


def _window(url: str, make: Any, clients: int, seconds: float) -> tuple[list[float], int]:
    """`clients` threads posting for `seconds`, each building its bodies: each request's latency, and how many
    were not answered 200."""
    import httpx

    stop = time.monotonic() + seconds
    done: list[tuple[float, bool]] = []  # appends are atomic: the threads share it

    def worker(offset: int) -> None:
        rng = np.random.default_rng([offset, int(stop * 1000)])
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < stop:
                body = make(rng)
                t = time.perf_counter()
                ok = client.post(url, content=body, headers=HEADERS).status_code == 200
                done.append((time.perf_counter() - t, ok))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [seconds for seconds, _ in done], sum(not ok for _, ok in done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=("movielens", "shop"), default="movielens")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="Default /tmp/reranker-bench/serve-<dataset>."
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=1, help="Worker processes of the stage.")
    args = parser.parse_args()
    data = provision(args.data_dir or Path(f"/tmp/reranker-bench/serve-{args.dataset}"), args.dataset)
    make = traffic(data, args.dataset)
    # user features are read from the online store on every request (no reuse across requests), as for traffic
    # where a user rarely returns within the cache's 5 s
    env = {**os.environ, "RERANKER_DATA_DIR": str(data), "BENTOML_HOME": str(data / "bentoml"),
           "OMP_WAIT_POLICY": "PASSIVE", "RERANKER_USER_CACHE_SECONDS": "0", "BENTOML_DO_NOT_TRACK": "true",
           "RERANKER_WORKERS": str(args.workers)}  # fmt: skip
    from flows.demo import stage_key

    HEADERS.update(stage_key(data, "benchmark"))  # authentication on, as in production
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
        pipelines = pipeline_traffic(data, args.dataset)
        pipeline_urls = dict.fromkeys(pipelines, f"http://127.0.0.1:{stage_port}/pipeline")
        staged = _one_client({"rerank (stage)": targets["rerank (stage)"], **pipeline_urls},
                             {"rerank (stage)": make, **pipelines}, args.requests // 2, predict)  # fmt: skip
        inside = {name: _stage_times(url, pipelines[name], 200) for name, url in pipeline_urls.items()}
        one = _one_client(targets, make, args.requests, predict)
        eight = _eight_clients(targets, make, 8, args.seconds)
        results: dict[str, Any] = {
            name: {"one_client": one[name], "eight_clients": eight[name]} for name in targets
        }
        results[LGBM] = {"one_client": {**one[LGBM], "trees": trees}}
        stages_out = {name: {"one_client": staged[name], "stage_ms": inside[name]} for name in pipelines}
        stages_out["rerank (stage)"] = {"one_client": staged["rerank (stage)"]}
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
        title=f"serving over HTTP ({args.dataset}), 100 candidates from the whole catalog, a user from the whole user "
        f"base per request, stage with {args.workers} worker(s) (same client, same run)"
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
    floor_now = results["no-op @bentoml.api"]["one_client"]["p50_ms"] + staged[LGBM]["p50_ms"]
    per_stage = Table(title=f"POST /pipeline at 100 candidates ({args.dataset}): each stage alone and the seed's "
                      "pipelines; p50 beside the floor (no-op p50 + LightGBM p50) and POST /rerank, same run")  # fmt: skip
    for col in [
        "pipeline",
        "p50 ms",
        "p99 ms",
        "p50 / floor",
        "p50 / rerank",
        "in-process ms per stage (median)",
    ]:
        per_stage.add_column(col)
    rerank_p50 = staged["rerank (stage)"]["p50_ms"]
    for name, r in stages_out.items():
        o = r["one_client"]
        inner = ", ".join(f"{k} {v:.2f}" for k, v in r.get("stage_ms", {}).items()) or "-"
        per_stage.add_row(name, f"{o['p50_ms']:.2f}", f"{o['p99_ms']:.2f}", f"{o['p50_ms'] / floor_now:.2f}",
                          f"{o['p50_ms'] / rerank_p50:.2f}", inner)  # fmt: skip
    Console(width=160).print(per_stage)
    summary["pipelines_p50_vs_floor"] = {
        n: r["one_client"]["p50_ms"] / floor_now for n, r in stages_out.items()
    }
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serving-{args.dataset}-{args.workers}w.json"
    out.write_text(json.dumps({"dataset": args.dataset, "workers": args.workers, "results": results,
                               "pipelines": stages_out, "summary": summary}, indent=2))  # fmt: skip


def _lgbm(data: Path) -> tuple[Any, int]:
    """LightGBM's own prediction of 100 rows with one thread, on the champion: a call to time, and the trees."""
    from models.registry import Registry

    registry = Registry(f"sqlite:///{data / 'mlflow' / 'mlflow.db'}")
    booster = registry.load("reranker", "champion").booster
    X = np.ascontiguousarray(np.random.default_rng(1).random((100, booster.num_feature())), dtype=np.float32)
    return (lambda: booster.predict(X, num_threads=1)), booster.num_trees()


if __name__ == "__main__":
    main()
