"""Durable JSON-lines logs of the stage, one file per day and process.

`write(..., sync=True)` returns after the lines are flushed and fsynced (posted interactions). `write(...,
sync=False)` queues them for a background flush every `flush_seconds` (served lists: no disk I/O in the request;
at most that much is at risk in a crash, and `close()` flushes on shutdown). Lines a flush could not write stay
queued for the next one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from pathlib import Path

LinesByDay = dict[str, list[str]]
log = logging.getLogger("reranker.serving")


class JsonlLog:
    def __init__(self, root: Path, prefix: str, flush_seconds: float = 1.0, fsync: bool = True) -> None:
        self.root = root
        self.prefix = prefix
        self.fsync = fsync
        self._pending: defaultdict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self._io = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(flush_seconds,), daemon=True, name=f"{prefix}-flush"
        )
        self._thread.start()

    def write(self, lines_by_day: LinesByDay, sync: bool) -> None:
        if sync:
            self._append(dict(lines_by_day))
            return
        with self._lock:
            for day, lines in lines_by_day.items():
                self._pending[day].extend(lines)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(list)
        if not pending:
            return
        try:
            self._append(pending)
        except Exception:
            with self._lock:  # what was not written is kept, ahead of what came since, for the next flush
                for day, lines in self._pending.items():
                    pending[day].extend(lines)
                self._pending = pending
            raise

    def close(self) -> None:
        self._stop.set()
        self.flush()

    def _loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.flush()
            except Exception:
                log.exception("%s log: flush failed; the lines stay queued for the next one", self.prefix)

    def _append(self, lines_by_day: LinesByDay) -> None:
        """Append and fsync each day's lines, taking each day out of `lines_by_day` once it is written (what is
        left after a failure is what was not)."""
        with self._io:
            for day, lines in list(lines_by_day.items()):
                path = self.root / f"date={day}" / f"{self.prefix}-{os.getpid()}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as fh:
                    fh.write("\n".join(lines) + "\n")
                    fh.flush()
                    if self.fsync:
                        os.fsync(fh.fileno())
                del lines_by_day[day]
