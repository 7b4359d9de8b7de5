"""Durable JSON-lines logs of the stage, one file per day and process.

`write(..., sync=True)` returns after the lines are flushed and fsynced (posted interactions). `write(...,
sync=False)` queues them for a background flush every `flush_seconds` (served lists: the hot path does no disk
I/O; at most that much is at risk in a crash, and `close()` flushes on shutdown).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path


class JsonlLog:
    def __init__(self, root: Path, prefix: str, flush_seconds: float = 1.0, fsync: bool = True) -> None:
        self.root = root
        self.prefix = prefix
        self.fsync = fsync
        self._pending: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self._io = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(flush_seconds,), daemon=True, name=f"{prefix}-flush"
        )
        self._thread.start()

    def write(self, lines_by_day: dict[str, list[str]], sync: bool) -> None:
        if sync:
            self._append(lines_by_day)
            return
        with self._lock:
            for day, lines in lines_by_day.items():
                self._pending[day].extend(lines)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(list)
        if pending:
            self._append(pending)

    def close(self) -> None:
        self._stop.set()
        self.flush()

    def _loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self.flush()

    def _append(self, lines_by_day: dict[str, list[str]]) -> None:
        with self._io:
            for day, lines in lines_by_day.items():
                path = self.root / f"date={day}" / f"{self.prefix}-{os.getpid()}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as fh:
                    fh.write("\n".join(lines) + "\n")
                    fh.flush()
                    if self.fsync:
                        os.fsync(fh.fileno())
