"""Offline-loop benchmark: ingest, feature build, materialize, training-set build and training at several sizes.

Each stage runs in its own process (peak RSS is per stage) and is reported beside a baseline measured in the
same run on the same data, as a ratio:
- ingest            vs reading + writing the same Parquet with pyarrow (the I/O floor)
- features build    vs one pandas groupby over the same events
- training set      vs pandas merge_asof of one feature table onto the same entity rows
- train             vs the same LambdaRank without position-bias modelling
Usage: python -m benchmarks.offline --sizes 100000 1000000   (prints a table, writes benchmarks/results/offline.json)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage(name: str, size: int, root: Path) -> dict[str, Any]:
    import pandas as pd

    from reranker.settings import Layout, apply_runtime_env

    apply_runtime_env()
    layout = Layout(root)
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
        from reranker.lake import read_interactions

        events = read_interactions(layout.interactions)
        t = time.perf_counter()
        events.groupby([events["user_id"], events["timestamp"].dt.floor("D")]).size()
        out["baseline_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        build_tables(events, pd.read_parquet(layout.documents), layout.feature_tables,
                     load_feature_set(BUNDLED / "synthetic.yaml"))  # fmt: skip
        out["seconds"] = time.perf_counter() - t
        store = apply(layout.feast, layout.feature_tables)
        out["materialize_seconds"] = materialize(store, layout.feature_tables)["seconds"]
    elif name == "training_set":
        import pickle

        from feature_repo.manifest import FeatureManifest
        from feature_repo.store import open_store
        from feature_repo.text import TextIndex
        from models.lists import logged_lists, relevant_lists
        from models.training_set import build_training_set
        from reranker.lake import read_interactions

        lists = relevant_lists(logged_lists(read_interactions(layout.interactions)))
        table = pd.read_parquet(layout.feature_tables / "user_activity.parquet")
        table["event_timestamp"] = table["event_timestamp"].dt.as_unit("ns")
        lists["event_timestamp"] = lists["event_timestamp"].dt.as_unit("ns")
        t = time.perf_counter()
        pd.merge_asof(lists.sort_values("event_timestamp"), table.sort_values("event_timestamp"),
                      on="event_timestamp", by="user_id")  # fmt: skip
        out["baseline_seconds"] = time.perf_counter() - t
        store = open_store(layout.feast)
        manifest = FeatureManifest.read(layout.feature_tables)
        t = time.perf_counter()
        data = build_training_set(store, lists, manifest, TextIndex.load(layout.feature_tables))
        out["seconds"] = time.perf_counter() - t
        out["rows"], out["inputs"] = len(data.frame), len(data.features)
        (root / "training_set.pkl").write_bytes(pickle.dumps((data.frame, data.X, data.features)))
    elif name == "train":
        import pickle

        from models.lambdarank import TrainConfig, train_lambdarank

        frame, X, features = pickle.loads((root / "training_set.pkl").read_bytes())
        t = time.perf_counter()
        train_lambdarank(frame, X, features, TrainConfig(num_boost_round=150, position_aware=False))
        out["baseline_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        _, info = train_lambdarank(frame, X, features, TrainConfig(num_boost_round=150))
        out["seconds"] = time.perf_counter() - t
        out["rows"], out["position_aware"] = len(frame), info["position_aware"]
    out["peak_rss_mb"] = _peak_mb()
    return out


STAGES = ["generate", "ingest", "features", "training_set", "train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--root", type=Path, default=Path("/tmp/reranker-bench"))
    parser.add_argument("--stage", choices=STAGES)
    parser.add_argument("--size", type=int)
    args = parser.parse_args()
    if args.stage:  # child process
        print(json.dumps(stage(args.stage, args.size, args.root)))
        return
    import shutil

    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    results: dict[str, Any] = {}
    with tqdm(total=len(args.sizes) * len(STAGES), desc="benchmark stages") as bar:
        for size in args.sizes:
            root = args.root / str(size)
            shutil.rmtree(root, ignore_errors=True)
            results[str(size)] = {}
            for name in STAGES:
                proc = subprocess.run([sys.executable, "-m", "benchmarks.offline", "--stage", name, "--size",
                                       str(size), "--root", str(root)], capture_output=True, text=True)  # fmt: skip
                if proc.returncode != 0:
                    raise SystemExit(f"stage {name} at {size} failed:\n{proc.stderr[-3000:]}")
                results[str(size)][name] = json.loads(proc.stdout.strip().splitlines()[-1])
                bar.update(1)
    table = Table(title="offline loop (synthetic events; ratio = stage / same-run baseline)")
    for col in ["events", "stage", "seconds", "baseline s", "ratio", "throughput / rows", "peak RSS MB"]:
        table.add_column(col)
    for size, stages in results.items():
        for name, r in stages.items():
            base = r.get("baseline_seconds")
            extra = (f"{r['events_per_s']:,.0f} ev/s" if "events_per_s" in r else
                     f"{r['rows']:,} rows" if "rows" in r else
                     f"materialize {r['materialize_seconds']:.1f}s" if "materialize_seconds" in r else "")  # fmt: skip
            table.add_row(f"{int(size):,}", name, f"{r['seconds']:.2f}", f"{base:.2f}" if base else "-",
                          f"{r['seconds'] / base:.1f}x" if base else "-", extra, f"{r['peak_rss_mb']:.0f}")  # fmt: skip
    Console(width=140).print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "offline.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS / 'offline.json'}")


if __name__ == "__main__":
    main()
