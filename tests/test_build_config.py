"""Build configuration stays in step with the lock file, and `bentoml build` works from it."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bento_requirements_match_the_lock_file():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"] if "version" in p}
    pins = {}
    for line in (ROOT / "infra" / "bento-requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(3)
    assert {"lightgbm", "bentoml", "feast", "mlflow-skinny"} <= set(pins)
    stale = {n: (v, locked.get(n)) for n, v in pins.items() if locked.get(n) != v}
    assert not stale, f"regenerate with `make bento-requirements`: {stale}"


@pytest.mark.integration
def test_bentoml_build_from_the_repo_config(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run([sys.executable, "-m", "bentoml", "build", str(ROOT)], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    services = list(tmp_path.glob("bentos/reranker/*/src/serving/service.py"))
    assert services, "the bento carries the service source"
