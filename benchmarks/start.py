"""Time to a ready stage: `bentoml serve` of the rerank stage over a data dir until /readyz answers 200 (its preloaded
model loaded and warmed), against the same command as it was at another code root, taken in turn.

    uv run python -m benchmarks.start --data-dir data --base-root /tmp/before --base-plain --runs 5

`--base-root`: a checkout of the release to compare with (its `serving/` is served); `--base-plain`: start the
baseline as releases before this one did (no optimized mode, and no bytecode found: `PYTHONPYCACHEPREFIX` points at
an empty folder, as on an install where Python could not cache it). Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.serving import _port, _start
from reranker.launch import SERVICE

ROOT = Path(__file__).resolve().parents[1]


def time_to_ready(root: Path, data_dir: Path, plain: bool, limit: float = 600) -> float:
    env = {**os.environ, "RERANKER_DATA_DIR": str(data_dir), "PYTHONPATH": str(root),
           "BENTOML_HOME": str(data_dir / "bentoml")}  # fmt: skip
    if plain:
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="no-pyc-")
    started = time.monotonic()
    proc = _start(SERVICE, _port(), env, cwd=root, ready_seconds=limit, optimized=not plain)
    seconds = time.monotonic() - started
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--base-root", type=Path, required=True)
    parser.add_argument("--base-plain", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "start.json")
    args = parser.parse_args()
    data = args.data_dir.resolve()
    seconds: dict[str, list[float]] = {"this release": [], "base": []}
    for run in range(args.runs):  # in turn, so the machine's drift falls on both
        seconds["this release"].append(time_to_ready(ROOT, data, plain=False))
        seconds["base"].append(time_to_ready(args.base_root.resolve(), data, plain=args.base_plain))
        print(f"run {run + 1}: this release {seconds['this release'][-1]:.1f} s, base {seconds['base'][-1]:.1f} s",
              file=sys.stderr)  # fmt: skip
    ratio = np.array(seconds["this release"]) / np.array(seconds["base"])
    result = {name: {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v)), "runs": v}
              for name, v in seconds.items()}  # fmt: skip
    result["ratio_median"] = float(np.median(ratio))
    print(f"{'stage':14s} {'median s':>9s} {'min':>6s} {'max':>6s}")
    for name in ("this release", "base"):
        r = result[name]
        print(f"{name:14s} {r['median']:9.1f} {r['min']:6.1f} {r['max']:6.1f}")  # type: ignore[index]
    print(f"ratio (this release / base, median of pairs): {result['ratio_median']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
