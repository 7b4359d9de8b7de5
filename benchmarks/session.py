"""The README's synthetic-shop session, end to end at one size, each command timed with its process tree's peak RSS.

The commands are the README's, run as written in a fresh data dir with the default settings (the training-memory
budget included; the load with `--json`, so the ingest reads the paths it reports): data load (generation, not
part of the loop) -> ingest -> features apply -> features materialize -> train -> models list. The loop's total (ingest to a registered model) is set beside the issue's
targets in the same run: 30 minutes and the memory budget (`RERANKER_TRAINING_MEMORY_GB`, 8 GB).
Usage: python -m benchmarks.session --size 10000000 [--root /tmp/reranker-session] [--out session-10m]
(`RERANKER_ENGINE=ray` in the environment: the same session on the Ray engine, a local cluster capped at 2 CPUs)
(`--memory-cap-gb 8`: each command runs in a memory cgroup the kernel caps at 8 GB (10^9 bytes) for the command and
every process it starts, Ray's included; a command over it is killed and the session fails. Needs a machine where
this process may create cgroups, e.g. root in a container; the table adds the group's peak charge: anonymous and
shared memory, each page once)
(prints a table, writes benchmarks/results/NAME.json)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.cgroup import MemoryGroup
from benchmarks.offline import RESULTS, PeakTree
from reranker.settings import Settings

TARGET_SECONDS = 30 * 60


def run(size: int, root: Path, cap_gb: float | None = None) -> dict[str, Any]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "RERANKER_DATA_DIR": str(root / "data-shop")}
    out: dict[str, Any] = {"size": size, "engine": Settings().engine, "memory_cap_gb": cap_gb, "steps": {}}

    def step(name: str, args: list[str], ok: tuple[int, ...] = (0,)) -> str:
        print(f"$ reranker {' '.join(args)}", flush=True)
        group = MemoryGroup.create(int(cap_gb * 1e9)) if cap_gb else None
        if isinstance(group, str):
            raise SystemExit(f"--memory-cap-gb: {group}")
        peak, started = PeakTree(group=group), time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "reranker.cli", *args], env=env, cwd=root,
                                  stdout=subprocess.PIPE, text=True, preexec_fn=group.enter if group else None)  # fmt: skip
            seconds, peak_gb = time.perf_counter() - started, peak.stop_mb() * 2**20 / 1e9  # the budget's GB
            kills = group.oom_kills() if group else 0
        finally:
            if group:
                group.close()
        print(proc.stdout, end="", flush=True)
        out["steps"][name] = {
            "seconds": round(seconds, 1),
            "peak_rss_gb": round(peak_gb, 2),
            "peak_pss_gb": round(peak.peak_pss / 1e9, 2),
            **({"peak_cgroup_gb": round(peak.peak_group / 1e9, 2), "oom_kills": kills} if group else {}),
            "exit": proc.returncode,
        }
        if proc.returncode not in ok or kills:
            raise SystemExit(f"`reranker {' '.join(args)}` exited {proc.returncode}"
                             + (f" ({kills} processes killed over the {cap_gb:g} GB cap)" if kills else ""))  # fmt: skip
        return proc.stdout

    # the files the load wrote, as it reports them (JSON: the same work, its paths read rather than re-derived)
    loaded = json.loads(step("data load", ["data", "load", "synthetic", "--size", str(size), "--shift-to-now",
                                           "--json"]))  # fmt: skip
    step("ingest", ["ingest", loaded["interactions"], "--documents", loaded["documents"]])
    step("features apply", ["features", "apply"])
    step("features materialize", ["features", "materialize"])
    step("train", ["train", "--model-id", "shop-search"], ok=(0, 3))  # 3: registered, but passed no gate
    step("models list", ["models", "list", "shop-search"])
    loop = [v for k, v in out["steps"].items() if k not in ("data load", "models list")]
    out["loop"] = {"seconds": round(sum(v["seconds"] for v in loop), 1),
                   **{m: max(v[m] for v in loop) for m in ("peak_rss_gb", "peak_pss_gb", "peak_cgroup_gb")
                      if m in loop[0]},
                   "target_seconds": TARGET_SECONDS, "budget_gb": Settings().training_memory_gb}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/reranker-session"))
    parser.add_argument("--out", default="session")
    parser.add_argument("--memory-cap-gb", type=float, default=None)
    args = parser.parse_args()
    result = run(args.size, args.root, args.memory_cap_gb)
    from rich.console import Console
    from rich.table import Table

    capped = f", each command capped at {args.memory_cap_gb:g} GB by a cgroup" if args.memory_cap_gb else ""
    table = Table(title=f"the README's shop session at {args.size:,} events, {result['engine']} engine{capped} "
                  "(ratio = loop / target)")  # fmt: skip
    memory = {"peak_rss_gb": "peak RSS GB (10^9 bytes)", "peak_pss_gb": "peak PSS GB (shared pages once)",
              "peak_cgroup_gb": "cgroup peak GB (kernel's count)"}  # fmt: skip
    memory = {k: v for k, v in memory.items() if k in result["loop"]}
    for col in ["step", "seconds", *memory.values()]:
        table.add_column(col)
    for name, r in result["steps"].items():
        table.add_row(name, f"{r['seconds']:.1f}", *(f"{r[k]:.2f}" for k in memory))
    loop = result["loop"]
    table.add_row("ingest → registered", f"{loop['seconds']:.1f} ({loop['seconds'] / loop['target_seconds']:.2f} of "
                  "30 min)", *(f"{loop[k]:.2f} ({loop[k] / loop['budget_gb']:.2f} of the budget)" for k in memory))  # fmt: skip
    Console(width=150).print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / args.out}.json")


if __name__ == "__main__":
    main()
