"""Durable log of served lists: JSON lines appended (and flushed) per day under the lake, for the next training,
off-policy evaluation and canary analysis."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from reranker.contracts import ServedListEvent


class ServedListLog:
    def __init__(self, root: Path, fsync: bool = False) -> None:
        self.root = root
        self.fsync = fsync
        self._lock = threading.Lock()

    def append(self, event: ServedListEvent) -> None:
        path = self.root / f"date={event.timestamp:%Y-%m-%d}" / f"served-{os.getpid()}.jsonl"
        line = event.model_dump_json() + "\n"
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(line)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
