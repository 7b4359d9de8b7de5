"""`bentoml build` of the stage: the generated Dockerfile is the reviewed one (infra/bento/Dockerfile.snapshot;
refresh with UPDATE_SNAPSHOTS=1 after reviewing the diff), the image installs exactly the locked requirements, and
the bento holds the code the stage imports and nothing of the data dir."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_bento_dockerfile_and_requirements_match_the_snapshot(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    run = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    (bento,) = [p for p in (tmp_path / "bentos" / "reranker").iterdir() if p.is_dir()]
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    snapshot = ROOT / "infra" / "bento" / "Dockerfile.snapshot"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(dockerfile)
    assert dockerfile == snapshot.read_text(), (
        "the generated Dockerfile changed: review, then UPDATE_SNAPSHOTS=1"
    )
    assert "USER bentoml" in dockerfile and "EXPOSE 3000" in dockerfile

    def pins(text: str, markers: bool) -> set[str]:
        """name==version of each line (with `markers`, also the lines that hold for some environments only)."""
        return {line.split(";")[0].strip() for line in text.splitlines()
                if line.strip() and not line.startswith(("#", "-")) and (markers or ";" not in line)}  # fmt: skip

    lock_file = (ROOT / "infra" / "bento-requirements.txt").read_text()
    locked, image = (
        pins(lock_file, False),
        pins((bento / "env" / "python" / "requirements.txt").read_text(), True),
    )
    # every pin of the lock that holds everywhere, and nothing the lock does not pin (markers resolved for Linux)
    assert locked <= image <= pins(lock_file, True), (locked - image, image - pins(lock_file, True))
    assert any(p.startswith("bentoml==") for p in locked) and any(p.startswith("lightgbm==") for p in locked)
    src = {p.relative_to(bento / "src").as_posix() for p in (bento / "src").rglob("*") if p.is_file()}
    assert {
        "serving/service.py",
        "models/lambdarank.py",
        "feature_repo/inputs.py",
        "reranker/settings.py",
    } <= src
    assert not any(p.startswith(("data/", "tests/", ".venv/")) for p in src)
