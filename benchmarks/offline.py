"""Offline-loop benchmark: ingest, feature build, materialize, training-set build and training at several sizes,
on the local engine and on Ray (a local cluster capped at 2 CPUs: `--engines local ray`).

Each stage runs in its own process; its peak RSS is the largest sum over the process and its descendants (Ray's
raylet and workers included; shared memory counted once per process that maps it, so an upper bound), sampled every
0.2 s. Each stage is reported beside a baseline measured in the same run on the same data, as a ratio:
- ingest            vs reading + writing the same Parquet with pyarrow (the I/O floor)
- features build    vs one pandas groupby over the same events
- training set      vs pandas merge_asof of one feature table onto the same entity rows
- train             vs the same LambdaRank without position-bias modelling
On Ray the feature tables are the local build's (pandas); Feast's Ray offline store answers the point-in-time
joins and its `ray.engine` materializes; Ray Train's LightGBM (2 workers) trains.
Usage: python -m benchmarks.offline --sizes 100000 1000000 [--engines local ray] [--out NAME]
(prints a table, writes benchmarks/results/NAME.json and, with several sizes, NAME.png: time and memory against
events, log-log)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.cgroup import MemoryGroup

RESULTS = Path(__file__).parent / "results"


class PeakTree:
    """The largest RSS of this process and its descendants seen by a sampler thread, and the largest PSS (each
    shared page split among the processes that map it: Ray's object store, mapped by the driver and each worker
    that reads a block, is counted once, where the RSS sum counts it in each); with a memory cgroup the command
    runs in, the largest resident charge the kernel counts for it (`peak_group`, `MemoryGroup.resident`)."""

    def __init__(self, every: float = 0.2, group: MemoryGroup | None = None) -> None:
        import threading

        import psutil

        self.peak, self.peak_pss, self.peak_group, self._stop = 0, 0, 0, threading.Event()
        me = psutil.Process()

        def sample() -> None:
            while not self._stop.is_set():
                total = pss = 0
                for p in [me, *me.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        info = p.memory_full_info()
                        total, pss = total + info.rss, pss + info.pss
                self.peak, self.peak_pss = max(self.peak, total), max(self.peak_pss, pss)
                if group is not None:
                    with contextlib.suppress(OSError):
                        self.peak_group = max(self.peak_group, group.resident())
                self._stop.wait(every)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop_mb(self) -> float:
        """The peak RSS sum in MiB (stops the sampler; `peak_pss` then holds the PSS sum's peak in bytes)."""
        self._stop.set()
        self._thread.join()
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(self.peak, own) / 2**20


def _cluster(root: Path) -> Any:
    from reranker.engine import RayCluster

    return RayCluster(num_cpus=2, object_store_mb=2048, workers=2, storage=root / "ray-train")


def stage(name: str, size: int, root: Path, engine: str = "local") -> dict[str, Any]:
    import pandas as pd

    from reranker.settings import Layout, apply_runtime_env

    apply_runtime_env()
    peak = PeakTree()
    layout = Layout(root)
    ray = _cluster(root) if engine == "ray" else None
    feast_dir = layout.feast if ray is None else root / "feast-ray"
    raw = layout.raw / "bench"
    out: dict[str, Any] = {}
    if name == "generate":
        from reranker.synthetic import SyntheticWorld, WorldConfig, write_dataset

        t = time.perf_counter()
        write_dataset(SyntheticWorld.create(WorldConfig.shop(seed=3)), size, raw, progress=False)
        out["seconds"] = time.perf_counter() - t
    elif name == "ingest":
        import pyarrow.parquet as pq

        from expectations.ingest import ingest
        from reranker.lake import upsert_documents

        files = sorted((raw / "interactions").glob("*.parquet"))
        t = time.perf_counter()
        for f in files:
            pq.write_table(pq.read_table(f), root / "baseline-copy.parquet")
        out["baseline_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        summary = ingest(raw / "interactions", layout, salt="bench")
        out["seconds"] = time.perf_counter() - t
        upsert_documents(layout.documents, pd.read_parquet(raw / "documents.parquet"))
        out["events_per_s"] = summary.added / out["seconds"]
        out["added"] = summary.added
    elif name == "features":
        from feature_repo.store import apply, build_tables, materialize
        from reranker.featureset import BUNDLED, load_feature_set
        from reranker.lake import LEARNING_COLUMNS, read_interactions

        events = read_interactions(layout.interactions, columns=LEARNING_COLUMNS)
        t = time.perf_counter()
        events.groupby([events["user_id"], events["timestamp"].dt.floor("D")]).size()
        out["baseline_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        if ray is None:  # the tables are built once (pandas), on the local run
            build_tables(events, pd.read_parquet(layout.documents), layout.feature_tables,
                         load_feature_set(BUNDLED / "synthetic.yaml"))  # fmt: skip
            out["seconds"] = time.perf_counter() - t
        del events
        store = apply(feast_dir, layout.feature_tables, ray=ray)
        out["materialize_seconds"] = materialize(store, layout.feature_tables)["seconds"]
        out.setdefault("seconds", out["materialize_seconds"])
    elif name == "training_set":
        import pickle

        from feature_repo.manifest import FeatureManifest
        from feature_repo.store import open_store
        from feature_repo.text import TextIndex
        from models.lists import logged_lists, relevant_lists
        from models.training_set import build_training_set
        from reranker.lake import LEARNING_COLUMNS, read_interactions

        lists = relevant_lists(logged_lists(read_interactions(layout.interactions, columns=LEARNING_COLUMNS)))
        table = pd.read_parquet(layout.feature_tables / "user_activity.parquet")
        table["event_timestamp"] = table["event_timestamp"].dt.as_unit("ns")
        lists["event_timestamp"] = lists["event_timestamp"].dt.as_unit("ns")
        t = time.perf_counter()
        pd.merge_asof(lists.sort_values("event_timestamp"), table.sort_values("event_timestamp"),
                      on="event_timestamp", by="user_id")  # fmt: skip
        out["baseline_seconds"] = time.perf_counter() - t
        store = open_store(feast_dir)
        manifest = FeatureManifest.read(layout.feature_tables)
        t = time.perf_counter()
        data = build_training_set(store, lists, manifest, TextIndex.load(layout.feature_tables))
        out["seconds"] = time.perf_counter() - t
        out["rows"], out["inputs"] = len(data.frame), len(data.features)
        out["peak_rss_mb"] = peak.stop_mb()  # the build's (and the listing's) peak, not the hand-off's below
        with (root / f"training_set-{engine}.pkl").open("wb") as f:  # streamed: no second copy of X in memory
            pickle.dump((data.frame, data.X, data.features), f, protocol=pickle.HIGHEST_PROTOCOL)
    elif name == "train":
        import pickle

        from models.lambdarank import TrainConfig, train_lambdarank

        frame, X, features = pickle.loads((root / f"training_set-{engine}.pkl").read_bytes())
        t = time.perf_counter()
        train_lambdarank(frame, X, features, TrainConfig(num_boost_round=150, position_aware=False))
        out["baseline_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        _, info = train_lambdarank(frame, X, features, TrainConfig(num_boost_round=150, ray=ray))
        out["seconds"] = time.perf_counter() - t
        out["rows"], out["position_aware"] = len(frame), info["position_aware"]
    if "peak_rss_mb" not in out:
        out["peak_rss_mb"] = peak.stop_mb()
    return out


STAGES = ["generate", "ingest", "features", "training_set", "train"]
ENGINE_STAGES = ["features", "training_set", "train"]  # what runs on the engine; generate and ingest run once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local"])
    parser.add_argument("--root", type=Path, default=Path("/tmp/reranker-bench"))
    parser.add_argument("--out", default="offline")
    parser.add_argument("--stage", choices=STAGES)
    parser.add_argument("--size", type=int)
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    if args.stage:  # child process
        print(json.dumps(stage(args.stage, args.size, args.root, args.engine)))
        return
    import shutil

    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    results: dict[str, Any] = {e: {} for e in args.engines}
    plan = [("local", s) for s in ["generate", "ingest"]] + [
        (e, s)
        for e in (["local"] if "local" in args.engines else []) + [e for e in args.engines if e != "local"]
        for s in ENGINE_STAGES
    ]
    with tqdm(total=len(args.sizes) * len(plan), desc="benchmark stages") as bar:
        for size in args.sizes:
            root = args.root / str(size)
            shutil.rmtree(root, ignore_errors=True)
            for engine, name in plan:
                if engine == "ray" and name == "features" and "local" not in args.engines:
                    _run("features", size, root, "local")  # the tables the Ray run reads
                bar.set_postfix_str(f"{size:,} {engine} {name}")
                try:
                    result = _run(name, size, root, engine)
                except SystemExit as failed:  # recorded; the other stages and sizes still run and are written
                    bar.write(str(failed)[-1500:])
                    result = {"error": str(failed)[-500:]}
                results[engine if name in ENGINE_STAGES else args.engines[0]].setdefault(str(size), {})[
                    name
                ] = result
                bar.update(1)
    table = Table(title="offline loop (synthetic events; ratio = stage / same-run baseline)")
    for col in [
        "engine",
        "events",
        "stage",
        "seconds",
        "baseline s",
        "ratio",
        "throughput / rows",
        "peak RSS MB",
    ]:
        table.add_column(col)
    for engine, sizes in results.items():
        for size, stages in sizes.items():
            for name, r in stages.items():
                if "error" in r:
                    table.add_row(engine, f"{int(size):,}", name, "failed", "-", "-", r["error"][-60:], "-")
                    continue
                base = r.get("baseline_seconds")
                extra = (f"{r['events_per_s']:,.0f} ev/s" if "events_per_s" in r else
                         f"{r['rows']:,} rows" if "rows" in r else
                         f"materialize {r['materialize_seconds']:.1f}s" if "materialize_seconds" in r else "")  # fmt: skip
                table.add_row(engine, f"{int(size):,}", name, f"{r['seconds']:.2f}", f"{base:.2f}" if base else "-",
                              f"{r['seconds'] / base:.1f}x" if base else "-", extra, f"{r['peak_rss_mb']:.0f}")  # fmt: skip
    Console(width=150).print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS / args.out}.json")
    if len(args.sizes) > 1:
        _plot(results, RESULTS / f"{args.out}.png")
        print(f"wrote {RESULTS / args.out}.png")


def _run(name: str, size: int, root: Path, engine: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.offline", "--stage", name, "--size", str(size),
                           "--root", str(root), "--engine", engine], capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} ({engine}) at {size} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for engine, sizes in results.items():
        for name in STAGES:
            points = [(int(s), st[name]) for s, st in sizes.items() if name in st and "error" not in st[name]]
            if not points:
                continue
            xs = [p[0] for p in points]
            style = "-" if engine == "local" else "--"
            left.plot(xs, [p[1]["seconds"] for p in points], style, marker="o", label=f"{name} ({engine})")
            right.plot(
                xs,
                [p[1]["peak_rss_mb"] / 1024 for p in points],
                style,
                marker="o",
                label=f"{name} ({engine})",
            )
    for ax, label in ((left, "seconds"), (right, "peak RSS (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("synthetic events")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    right.axhline(8, color="grey", lw=1, ls=":")
    left.legend(fontsize=7, loc="upper left")
    fig.suptitle("offline loop: time and memory against events (2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
