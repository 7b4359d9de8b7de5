"""The stage's JSON-lines logs: queued lines reach disk, and a failed flush loses nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from serving.served_log import JsonlLog
from tests.conftest import wait_for


def lines(root: Path) -> list[dict[str, object]]:
    return [
        json.loads(line) for path in sorted(root.rglob("*.jsonl")) for line in path.read_text().splitlines()
    ]


def test_queued_lines_are_written_at_flush(tmp_path):
    log = JsonlLog(tmp_path, "events", flush_seconds=3600)
    log.write({"2026-01-01": [json.dumps({"n": 1})], "2026-01-02": [json.dumps({"n": 2})]}, sync=False)
    assert lines(tmp_path) == []  # nothing on disk before the flush
    log.write({"2026-01-01": [json.dumps({"n": 0})]}, sync=True)
    assert lines(tmp_path) == [{"n": 0}]
    log.close()
    assert sorted(r["n"] for r in lines(tmp_path)) == [0, 1, 2]
    assert {p.parent.name for p in tmp_path.rglob("*.jsonl")} == {"date=2026-01-01", "date=2026-01-02"}


def test_lines_a_flush_could_not_write_stay_queued_for_the_next(tmp_path):
    root = tmp_path / "lake"
    root.mkdir()
    (root / "date=2026-01-02").write_text("a file where the day's directory should be")
    log = JsonlLog(root, "events", flush_seconds=3600)
    log.write({"2026-01-01": ['{"n": 1}'], "2026-01-02": ['{"n": 2}']}, sync=False)
    with pytest.raises(OSError):
        log.flush()
    log.write({"2026-01-02": ['{"n": 3}']}, sync=False)
    (root / "date=2026-01-02").unlink()
    log.close()
    assert sorted(r["n"] for r in lines(root)) == [
        1,
        2,
        3,
    ]  # day 1 written once, day 2 kept and written after


def test_the_background_flush_survives_a_failed_flush(tmp_path, caplog):
    root = tmp_path / "lake"
    root.mkdir()
    blocker = root / "date=2026-01-01"
    blocker.write_text("a file where the day's directory should be")
    log = JsonlLog(root, "events", flush_seconds=0.05)
    with caplog.at_level(logging.ERROR, logger="reranker.serving"):
        log.write({"2026-01-01": ['{"n": 1}']}, sync=False)
        wait_for(lambda: "flush failed" in caplog.text, 10, "the failed flush logged", every=0.05)
    blocker.unlink()
    wait_for(
        lambda: lines(root) == [{"n": 1}], 10, "the kept line written", every=0.05
    )  # written by the same thread, on a later flush
    log.close()
