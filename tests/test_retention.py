"""Retention removes whole days older than the cutoff wherever events are kept, and nothing newer."""

import json
import os
from datetime import UTC, datetime

from reranker.retention import apply_retention
from reranker.settings import Layout


def test_old_days_go_everywhere_newer_ones_stay(tmp_path):
    layout = Layout(tmp_path)
    for root, name in ((layout.interactions, "part-a.parquet"), (layout.served, "served-1.jsonl"),
                       (layout.landing, "events-1.jsonl")):  # fmt: skip
        for day in ("2026-01-01", "2026-03-01", "2026-03-09"):
            folder = root / f"date={day}"
            folder.mkdir(parents=True)
            (folder / name).write_text(json.dumps({"day": day}))
    old_ingest = layout.quarantine / "abc123"
    old_ingest.mkdir(parents=True)
    (old_ingest / "rows.jsonl").write_text("{}\n")
    stamp = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    os.utime(old_ingest, (stamp, stamp))
    recent_ingest = layout.quarantine / "def456"
    recent_ingest.mkdir()

    report = apply_retention(layout, days=30, now=datetime(2026, 3, 10, tzinfo=UTC))
    assert report.cutoff == "2026-02-08"
    assert report.counts() == {"lake": 1, "served_lists": 1, "landing_zone": 1, "quarantine_and_reports": 1}
    for root in (layout.interactions, layout.served, layout.landing):
        assert sorted(p.name for p in root.iterdir()) == ["date=2026-03-01", "date=2026-03-09"]
    assert not old_ingest.exists() and recent_ingest.exists()
    assert not list(tmp_path.rglob("*.removing"))
    again = apply_retention(layout, days=30, now=datetime(2026, 3, 10, tzinfo=UTC))
    assert sum(again.counts().values()) == 0
