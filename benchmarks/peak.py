"""One command's wall time and peak memory: RSS and PSS summed over its process tree (`benchmarks.offline.PeakTree`,
sampled every 0.2 s), for a step measured on its own, e.g. `reranker train` on an existing lake.
Usage: python -m benchmarks.peak -- reranker train --model-id shop-search
(prints `rc N seconds S peak_rss_gb R peak_pss_gb P`, GB of 10^9 bytes, the budget's unit; exits with the
command's code)
"""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.offline import PeakTree


def main() -> None:
    command = sys.argv[2:] if sys.argv[1:2] == ["--"] else sys.argv[1:]
    if not command:
        raise SystemExit(__doc__)
    peak, started = PeakTree(), time.perf_counter()
    code = subprocess.run(command).returncode
    seconds, rss = time.perf_counter() - started, peak.stop_mb() * 2**20 / 1e9
    print(f"rc {code} seconds {seconds:.1f} peak_rss_gb {rss:.2f} peak_pss_gb {peak.peak_pss / 1e9:.2f}")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
