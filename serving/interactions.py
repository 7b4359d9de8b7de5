"""Interactions posted to the stage: landed durably for the next training, and pushed to the online store.

Every served list is landed as impression events (request_id, position, propensity, score, model version and
variant), and every posted interaction beside them, as JSON lines under `<lake>/incoming/date=…/` (appended,
posted interactions flushed and fsynced before the call returns; served lists made into lines once the response is
sent, and flushed by a background thread every second). `reranker ingest <lake>/incoming` validates and
lands them in the lake like any other log; ingestion is idempotent by event_id, so ingesting the landing zone again
adds nothing.
A posted interaction also updates the user's activity counts and recent positives (co-visitation) in the online
store at once (near-real-time); rates, affinities and factors are recomputed by the next materialization. The update reads, adds and writes, so it holds a
lock shared by the stage's worker processes (one machine: a scaled-out online store needs its own atomic update).
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from feature_repo.manifest import FeatureManifest
from feature_repo.transforms import positive_flags
from reranker.contracts import STORED_KEY_PREFIX, InteractionEvent, InteractionType, ServedListEvent
from reranker.request_ids import RequestIds
from serving.errors import InteractionRejected
from serving.served_log import JsonlLog

log = logging.getLogger("reranker.serving")


def impressions(event: ServedListEvent) -> list[InteractionEvent]:
    return [
        InteractionEvent(event_id=f"{event.request_id}-{item.position}-impression", request_id=event.request_id,
                         interaction_type=InteractionType.impression, user_id=event.user_id, document_id=item.document_id,
                         query=event.query, position=item.position, propensity=item.propensity,
                         score=item.first_stage_score,
                         timestamp=event.timestamp, model_version=event.model_version, variant=event.variant,
                         features=item.features, context=event.context)
        for item in event.items
    ]  # fmt: skip


class LandingZone:
    """Interaction events as JSON lines under `<root>/date=…/events-<pid>.jsonl` (user ids in stored form)."""

    def __init__(self, root: Path, flush_seconds: float = 1.0) -> None:
        self.log = JsonlLog(root, "events", flush_seconds)

    def append(self, events: list[InteractionEvent]) -> None:
        """Land the events, flushed and fsynced before returning."""
        self.log.write(_lines(events), sync=True)

    def append_served(self, event: ServedListEvent) -> None:
        """Land a served list's impressions with the next background flush."""
        self.log.write(_lines(impressions(event)), sync=False)


def _lines(events: list[InteractionEvent]) -> dict[str, list[str]]:
    """The events' JSON lines by day, user ids (already hashed) in stored form."""
    by_day: dict[str, list[str]] = {}
    for ev in events:
        stored = ev.model_copy(update={"user_id": STORED_KEY_PREFIX + ev.user_id})
        by_day.setdefault(f"{ev.timestamp:%Y-%m-%d}", []).append(stored.model_dump_json(exclude_none=True))
    return by_day


class PushLock:
    """One read-modify-write of a user's online counts at a time, across the threads and the worker processes of
    this machine: a thread lock, then an exclusive `flock` on a file beside the data."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)


class RequestCounter:
    """How many interactions each served request id has received, across the stage's workers and restarts (a
    SQLite table beside the landing zone): a request id cannot be replayed beyond `limit` events. Rows older than
    `max_age_days` are pruned (older ids are refused anyway)."""

    def __init__(self, path: Path, limit: int, max_age_days: float) -> None:
        self.path, self.limit, self.max_age_days = path, limit, max_age_days
        self._calls = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS counts (request_id TEXT PRIMARY KEY, n INTEGER, day REAL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5, isolation_level=None)

    def take(self, wanted: dict[str, int]) -> str | None:
        """Count the batch's events per request id, all or nothing; the id over its limit, if one is."""
        day = time.time() / 86400
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            for request_id, n in wanted.items():
                row = db.execute("SELECT n FROM counts WHERE request_id = ?", (request_id,)).fetchone()
                if (row[0] if row else 0) + n > self.limit:
                    db.execute("ROLLBACK")
                    return request_id
                db.execute("INSERT INTO counts VALUES (?, ?, ?) ON CONFLICT(request_id) DO UPDATE SET n = n + ?",
                           (request_id, n, day, n))  # fmt: skip
            self._calls += 1
            if self._calls % 1000 == 1:
                db.execute("DELETE FROM counts WHERE day < ?", (day - self.max_age_days,))
            db.execute("COMMIT")
            return None
        finally:
            db.close()


@dataclass
class InteractionGuard:
    """What a posted interaction must prove: a request id the stage issued to the same user, recently, not replayed
    beyond a limit. Users who opted out are not personalized from their interactions either (dropped, counted)."""

    request_ids: RequestIds
    counter: RequestCounter
    opted_out: set[str]

    def admit(self, events: list[InteractionEvent]) -> tuple[list[InteractionEvent], int]:
        """The events to land (user ids already hashed) and how many were dropped as opted out."""
        wanted: dict[str, int] = {}
        for i, ev in enumerate(events):
            if not ev.request_id:
                raise InteractionRejected(f"events[{i}].request_id",
                                          "an interaction must name the request_id of the list the stage served")  # fmt: skip
            problem = self.request_ids.check(ev.request_id, ev.user_id)
            if problem is not None:
                raise InteractionRejected(f"events[{i}].request_id", problem)
            wanted[ev.request_id] = wanted.get(ev.request_id, 0) + 1
        over = self.counter.take(wanted)
        if over is not None:
            first = next(i for i, ev in enumerate(events) if ev.request_id == over)
            raise InteractionRejected(f"events[{first}].request_id",
                                      f"request {over} has received its {self.counter.limit} interactions")  # fmt: skip
        kept = [ev for ev in events if ev.user_id not in self.opted_out]
        return kept, len(events) - len(kept)


class InteractionSink:
    """Hash user ids, check the events (`InteractionGuard`), land them, push the users' new activity counts to the
    online store."""

    def __init__(self, landing: LandingZone, store: Any, hash_user: Callable[[str], str], push_lock: PushLock,
                 manifest: Callable[[], FeatureManifest],
                 on_user_update: Callable[[str], None] = lambda key: None,
                 guard: InteractionGuard | None = None) -> None:  # fmt: skip
        self.landing = landing
        self.store = store
        self.manifest = manifest
        self.hash_user = hash_user
        self.push_lock = push_lock
        self.on_user_update = on_user_update
        self.guard = guard

    def accept(self, events: list[InteractionEvent]) -> dict[str, int]:
        """Land the events (durable before returning); then push the new counts. A failed push is logged, not
        raised: the events are already landed and the next materialization brings the counts."""
        hashed = [ev.model_copy(update={"user_id": self.hash_user(ev.user_id)}) for ev in events]
        dropped = 0
        if self.guard is not None:
            hashed, dropped = self.guard.admit(hashed)
        if not hashed:
            return {"accepted": 0, "users_updated": 0, "ignored_opted_out": dropped}
        self.landing.append(hashed)
        pushed = 0
        if self.store is not None:
            try:
                with self.push_lock.held():
                    pushed = self._push(hashed)
            except Exception as exc:
                log.warning("online push of %d events failed (landed; the next materialization catches up): %r",
                            len(hashed), exc)  # fmt: skip
        return {"accepted": len(hashed), "users_updated": pushed, "ignored_opted_out": dropped}

    def _push(self, events: list[InteractionEvent]) -> int:
        """Add the batch's events and positives to each user's online activity counts, and its positives to the
        front of the user's recent positives (impressions are counted at the next materialization, with the served
        lists they belong to)."""
        manifest = self.manifest()
        if "user_activity" not in manifest.views:
            return 0
        batch = pd.DataFrame([{"user_id": ev.user_id, "kind": ev.interaction_type.value, "value": ev.value,
                               "document_id": ev.document_id, "timestamp": ev.timestamp}
                              for ev in events if ev.interaction_type != InteractionType.impression])  # fmt: skip
        if batch.empty:
            return 0
        batch["positive"] = positive_flags(batch["kind"], batch["value"].astype(float))
        added = batch.groupby("user_id").agg(n=("kind", "size"), positive=("positive", "sum"))
        users = list(added.index)
        window = f"{manifest.feature_set.user.window_days}d" if manifest.feature_set.user else "30d"
        columns = list(manifest.view("user_activity").columns)
        current = self.store.get_online_features(
            features=[f"user_activity:{name}" for name in columns], entity_rows=[{"user_id": u} for u in users]
        ).to_df().set_index("user_id")  # fmt: skip
        for name in ("events", f"events_{window}"):
            current[name] = current[name].astype(float).fillna(0.0) + added["n"]
        for name in ("positives", f"positives_{window}"):
            current[name] = current[name].astype(float).fillna(0.0) + added["positive"]
        frame = current.reset_index()
        frame["event_timestamp"] = pd.Timestamp.now(tz="UTC")
        self.store.write_to_online_store(feature_view_name="user_activity", df=frame)
        if "user_history" in manifest.views and manifest.feature_set.collaborative is not None:
            self._push_recent(batch[batch["positive"]], manifest)
        for user in users:
            self.on_user_update(user)
        return len(users)

    def _push_recent(self, positives: pd.DataFrame, manifest: FeatureManifest) -> None:
        if positives.empty:
            return
        assert manifest.feature_set.collaborative is not None
        keep = manifest.feature_set.collaborative.recent_positives
        index = manifest.doc_index()
        users = sorted(positives["user_id"].unique())
        stored = self.store.get_online_features(features=["user_history:recent_positives"],
                                                entity_rows=[{"user_id": u} for u in users]).to_dict()  # fmt: skip
        rows = []
        for user, recent in zip(stored["user_id"], stored["recent_positives"], strict=True):
            mine = positives[positives["user_id"] == user].sort_values("timestamp", ascending=False)
            new = [index[d] for d in mine["document_id"] if d in index]
            rows.append({"user_id": user, "recent_positives": (new + list(recent or []))[:keep]})
        frame = pd.DataFrame(rows)
        frame["event_timestamp"] = pd.Timestamp.now(tz="UTC")
        self.store.write_to_online_store(feature_view_name="user_history", df=frame)
