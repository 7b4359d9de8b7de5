"""Retention: what is older than `RERANKER_RETENTION_DAYS` goes - lake partitions, served lists, landed events,
quarantined rows and ingest reports. Everything under the data dir that holds events is partitioned by day
(`date=YYYY-MM-DD`), so a day leaves whole (a directory removed after it was renamed out of sight, so a reader
never sees half a day); the quarantine, kept per ingest, goes by the time it was written. The feature tables are
computed from the lake, so the next feature build (the retention flow runs one) drops what the lake no longer has.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reranker.settings import Layout


@dataclass
class RetentionReport:
    cutoff: str
    removed: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {where: len(days) for where, days in self.removed.items()}


def _old_days(root: Path, cutoff: str) -> list[Path]:
    """The `date=…` directories under root (any depth) of days before the cutoff (ISO dates sort as text)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("date=*") if p.is_dir() and p.name[len("date=") :] < cutoff)


def _remove(path: Path) -> None:
    hidden = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.removing")
    path.rename(hidden)
    shutil.rmtree(hidden)


def apply_retention(layout: Layout, days: float, now: datetime | None = None) -> RetentionReport:
    """Remove every day of events older than `days` before `now` (UTC), everywhere events are kept."""
    now = now or datetime.now(UTC)
    cutoff_time = now - timedelta(days=days)
    report = RetentionReport(cutoff=f"{cutoff_time:%Y-%m-%d}")
    for where, root in (("lake", layout.interactions), ("served_lists", layout.served),
                        ("landing_zone", layout.landing)):  # fmt: skip
        old = _old_days(root, report.cutoff)
        for day in old:
            _remove(day)
        report.removed[where] = [d.name for d in old]
    stale = []
    for root in (layout.quarantine, layout.ingest_log):
        if root.exists():
            for entry in sorted(root.iterdir()):
                if datetime.fromtimestamp(entry.stat().st_mtime, UTC) < cutoff_time:
                    stale.append(entry)
                    if entry.is_dir():
                        _remove(entry)
                    else:
                        entry.unlink()
    report.removed["quarantine_and_reports"] = [e.name for e in stale]
    return report
