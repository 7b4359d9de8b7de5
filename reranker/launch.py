"""How the stage is started: `bentoml serve` in optimized mode (PYTHONOPTIMIZE=1), for `reranker serve`, the demo,
the tests and the benchmarks alike.

Optimized mode is the production switch of the runtime type checks some libraries compile in at import: Feast
decorates its classes with typeguard's `@typechecked`, which re-parses and recompiles their source in every process
unless Python runs optimized (typeguard's documented behaviour); that was about 5 of a worker's 8 s importing Feast
here. `make install` writes the optimized bytecode the workers then load (`compileall -o 1`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping

SERVICE = "serving.service:Reranker"


def stage_command(host: str, port: int, target: str = SERVICE) -> list[str]:
    return [sys.executable, "-O", "-m", "bentoml", "serve", target, "--host", host, "--port", str(port)]


def stage_env(base: Mapping[str, str], **settings: str) -> dict[str, str]:
    """`base` (usually os.environ) with these settings, in optimized mode for the workers BentoML starts too."""
    return {**base, **settings, "PYTHONOPTIMIZE": "1"}


def wait_ready(
    proc: subprocess.Popen[str], base_url: str, ready_seconds: float, said: Callable[[], str]
) -> None:
    """Return once `base_url`/readyz answers 200; RuntimeError with what the process said (`said()`) if it exits
    first, or once `ready_seconds` have passed."""
    import httpx

    deadline = time.monotonic() + ready_seconds
    while True:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the stage exited ({proc.returncode}): {said()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stage did not become ready in {ready_seconds:.0f} s")
        time.sleep(0.5)
