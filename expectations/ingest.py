"""Ingestion: read an interaction file in chunks -> parse types -> validate with GE -> quarantine or land.

Good rows are staged per partition and only then committed to the lake (atomic file renames, deduplicated by
event_id against what the lake holds), so a crash mid-ingest leaves no partial partition and re-ingesting a
file adds nothing. Failing rows go to `quarantine/<ingest_id>/rows.jsonl`, each naming what it failed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from expectations.interactions import InteractionValidator
from reranker.contracts import INTERACTION_COLUMNS, REQUIRED_COLUMNS
from reranker.lake import (
    atomic_write_parquet,
    commit_partition,
    hash_user_id,
    partition_of,
    to_lake_table,
)
from reranker.settings import Layout

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
STRING_COLUMNS = ["event_id", "request_id", "interaction_type", "user_id", "document_id", "query",
                  "model_version", "variant"]  # fmt: skip
FLOAT_COLUMNS = ["propensity", "value", "score"]
UNIQUE_EVENT_ID = "expect_column_values_to_be_unique(event_id)"
OPTIONAL_COLUMNS = [c for c in [*STRING_COLUMNS, *FLOAT_COLUMNS, "position"] if c not in REQUIRED_COLUMNS]


MAX_LINE_BYTES = 1 << 20  # a JSON line longer than this is quarantined unread (never held whole in memory)
MAX_FIELD_CHARS = {"event_id": 256, "request_id": 128, "user_id": 300, "document_id": 256, "query": 2_000,
                   "interaction_type": 64, "model_version": 64, "variant": 64}  # fmt: skip


class IngestError(RuntimeError):
    """The input cannot be read at all; nothing was written."""


class IngestBusy(RuntimeError):
    """Another ingest holds the lake's lock for longer than this one would wait."""


@contextmanager
def lake_lock(
    layout: Layout, wait_seconds: float, say: Callable[[str], None] = lambda m: None
) -> Iterator[None]:
    """One ingest at a time per lake (an exclusive `flock` beside it); a second one waits up to `wait_seconds`."""
    layout.lake.mkdir(parents=True, exist_ok=True)
    with (layout.lake / ".ingest.lock").open("a") as handle:
        deadline = time.monotonic() + wait_seconds
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IngestBusy(f"another ingest into {layout.lake} is still running after "
                                     f"{wait_seconds:.0f} s; try again when it has finished") from None  # fmt: skip
                if not told:
                    say("waiting for another ingest into this lake to finish")
                    told = True
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class IngestSummary:
    source: str
    ingest_id: str
    rows_read: int = 0
    added: int = 0
    already_present: int = 0
    duplicates: int = (
        0  # rows whose event_id came earlier in this same ingest (another file or chunk): dropped
    )
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    partitions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    quarantine_path: str | None = None
    data_docs: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.quarantined == 0 and self.rows_read > 0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


def resolve_files(path: Path) -> list[Path]:
    if not path.exists():
        raise IngestError(f"{path}: no such file or directory")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    files = [p for p in files if not p.name.startswith(".")]
    unknown = [p for p in files if p.suffix.lower() not in SUFFIXES]
    if path.is_file() and unknown:
        raise IngestError(f"{path}: unsupported format {path.suffix!r} (use .jsonl, .csv or .parquet)")
    return [p for p in files if p.suffix.lower() in SUFFIXES]


def file_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- reading


def read_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, list[dict[str, object]]]]:
    """Yield (records, unparseable rows) per chunk; records carry `_row`, the 1-based record number."""
    kind = SUFFIXES[path.suffix.lower()]
    row = 0
    if kind == "parquet":
        try:
            reader = pq.ParquetFile(path)
        except Exception as exc:
            raise IngestError(f"{path}: not a readable Parquet file ({exc})") from exc
        try:
            for batch in reader.iter_batches(batch_size=chunk_rows):
                frame = batch.to_pandas()
                frame.insert(0, "_row", np.arange(row + 1, row + 1 + len(frame)))
                row += len(frame)
                yield frame, []
        except Exception as exc:
            raise IngestError(f"{path}: Parquet file is corrupt or truncated ({exc})") from exc
    elif kind == "csv":
        try:
            for frame in pd.read_csv(
                path, dtype=str, chunksize=chunk_rows, keep_default_na=False, na_values=[""]
            ):
                frame.insert(0, "_row", np.arange(row + 1, row + 1 + len(frame)))
                row += len(frame)
                yield frame, []
        except pd.errors.EmptyDataError:
            return
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise IngestError(f"{path}: malformed or truncated CSV after record {row} ({exc})") from exc
    else:
        records: list[dict[str, object]] = []
        bad: list[dict[str, object]] = []
        with path.open("rb") as fh:
            while True:
                line = fh.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    size = len(line) + _skip_line(fh)
                    row += 1
                    bad.append({"_row": row, "_bytes": size,
                                "_reasons": [f"parse: line over {MAX_LINE_BYTES} bytes"]})  # fmt: skip
                    continue
                if not line.strip():
                    continue
                row += 1
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise ValueError("not a JSON object")
                    obj["_row"] = row
                    records.append(obj)
                except ValueError as exc:
                    # the line itself is not kept (it may hold a raw user id): its record number, size and digest
                    bad.append({"_row": row, "_bytes": len(line),
                                "_sha256": hashlib.sha256(line.rstrip(b"\r\n")).hexdigest(),
                                "_reasons": [f"parse: malformed JSON line ({type(exc).__name__})"]})  # fmt: skip
                if len(records) + len(bad) >= chunk_rows:
                    yield pd.DataFrame.from_records(records), bad
                    records, bad = [], []
        if records or bad:
            yield pd.DataFrame.from_records(records), bad


def _skip_line(fh: BinaryIO) -> int:
    """Read past the rest of an over-long line in bounded blocks; the bytes skipped."""
    skipped = 0
    while True:
        block = fh.readline(1 << 20)
        skipped += len(block)
        if not block or block.endswith(b"\n"):
            return skipped


# ---------------------------------------------------------------- parsing


def _blank_to_none(series: pd.Series) -> pd.Series:
    out = series.astype(object).where(series.notna(), None)
    return out.map(lambda v: None if v is None or (isinstance(v, str) and not v.strip()) else str(v))


def parse_chunk(
    raw: pd.DataFrame, salt: str, hash_ids: bool
) -> tuple[pd.DataFrame, dict[int, list[str]], list[str]]:
    """Typed frame (same index), per-row parse errors, and warnings about the chunk's columns."""
    errors: dict[int, list[str]] = {}
    warnings = []
    unknown = sorted(set(raw.columns) - set(INTERACTION_COLUMNS) - {"_row"})
    if unknown:
        warnings.append(f"unknown columns ignored: {unknown}")
    typed = pd.DataFrame(index=raw.index)

    def fail(mask: pd.Series, column: str, kind: str) -> None:
        for idx, value in raw.loc[mask, column].items():
            errors.setdefault(int(idx), []).append(f"parse: {column} is not {kind} ({str(value)[:60]!r})")

    for col in STRING_COLUMNS:
        if col in raw:
            typed[col] = _blank_to_none(raw[col])
            too_long = typed[col].str.len() > MAX_FIELD_CHARS[col]
            for idx in np.flatnonzero(too_long.fillna(False).to_numpy()):
                errors.setdefault(int(typed.index[idx]), []).append(
                    f"parse: {col} is over {MAX_FIELD_CHARS[col]} characters"
                )
    if "user_id" in typed:
        typed["user_id"] = hash_user_id(typed["user_id"], salt if hash_ids else None)
    for col in [*FLOAT_COLUMNS, "position"]:
        if col not in raw:
            continue
        present = _blank_to_none(raw[col]).notna()
        num = pd.to_numeric(raw[col], errors="coerce").astype(float)
        num[~np.isfinite(num)] = np.nan
        if col == "position":
            not_int = num.notna() & (num != np.round(num))
            fail(present & (num.isna() | not_int), col, "an integer")
            num[not_int] = np.nan
            typed[col] = num.astype("Int64")
        else:
            fail(present & num.isna(), col, "a number")
            typed[col] = num
    if "timestamp" in raw:
        typed["timestamp"] = parse_timestamps(raw["timestamp"])
        present = _blank_to_none(raw["timestamp"]).notna()
        fail(present & typed["timestamp"].isna(), "timestamp", "a timestamp in range")
    for col in OPTIONAL_COLUMNS:  # an absent optional column is all-null, not a failure of every row
        if col not in typed:
            typed[col] = pd.Series(np.nan if col in (*FLOAT_COLUMNS, "position") else None, index=raw.index,
                                   dtype="Int64" if col == "position" else None)  # fmt: skip
    for column in ("features", "context"):
        if column in raw:
            typed[f"{column}_json"] = raw[column].map(_mapping_json)
    return typed, errors, warnings


def _mapping_json(value: object) -> str | None:
    """A logged mapping (features, context) as canonical JSON; missing entries (None, NaN) dropped."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    kept = {str(k): v for k, v in value.items()
            if v is not None and not (isinstance(v, float) and np.isnan(v))}  # fmt: skip
    return json.dumps(kept, sort_keys=True) if kept else None


def parse_timestamps(values: pd.Series) -> pd.Series:
    """ISO-8601 strings, datetimes or epoch seconds -> UTC timestamps (naive ones are taken as UTC); NaT if bad."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = pd.to_datetime(values, utc=True)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        as_text = pd.to_datetime(values.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601")
        # Only the numbers: pandas 2.x reads an uninitialized buffer at NaN entries with `unit=`, and its garbage
        # can raise FloatingPointError (pandas#58419, fixed in 3.0).
        epoch = numeric.dropna()
        as_epoch = pd.to_datetime(epoch, unit="s", utc=True, errors="coerce").reindex(values.index)
        ts = as_text.fillna(as_epoch)
    return ts.dt.as_unit("us")


# ---------------------------------------------------------------- the ingest


def ingest(
    path: Path,
    layout: Layout,
    *,
    salt: str,
    hash_ids: bool = True,
    chunk_rows: int = 250_000,
    future_skew_seconds: int = 300,
    now: datetime | None = None,
    progress: bool = False,
    wait_seconds: float = 3600,
    say: Callable[[str], None] = lambda m: None,
) -> IngestSummary:
    """Ingest `path` into the lake, one ingest at a time (a second waits for the first up to `wait_seconds`)."""
    files = resolve_files(path)
    with lake_lock(layout, wait_seconds, say):
        shutil.rmtree(
            layout.staging, ignore_errors=True
        )  # left by a killed ingest: no other ingest is running
        return _ingest(path, files, layout, salt=salt, hash_ids=hash_ids, chunk_rows=chunk_rows,
                       future_skew_seconds=future_skew_seconds, now=now, progress=progress)  # fmt: skip


def _ingest(
    path: Path,
    files: list[Path],
    layout: Layout,
    *,
    salt: str,
    hash_ids: bool,
    chunk_rows: int,
    future_skew_seconds: int,
    now: datetime | None,
    progress: bool,
) -> IngestSummary:
    started = time.perf_counter()
    ingest_id = file_digest(files) if files else "empty"
    summary = IngestSummary(source=str(path), ingest_id=ingest_id)
    if not files:
        summary.warnings.append("no interaction files found")
        return summary
    staging = layout.staging / f"{ingest_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    validator = InteractionValidator(layout.gx, now or datetime.now(UTC), future_skew_seconds)
    reasons: Counter[str] = Counter()
    bad_out = staging / "quarantine.jsonl"
    staged: dict[str, list[Path]] = {}
    try:
        from tqdm import tqdm

        with bad_out.open("w") as qfh, tqdm(unit="rows", disable=not progress, desc="ingest") as bar:
            chunk_no = 0
            for file in files:
                for raw, unparseable in read_chunks(file, chunk_rows):
                    chunk_no += 1
                    summary.rows_read += len(raw) + len(unparseable)
                    bar.update(len(raw) + len(unparseable))
                    for rec in unparseable:
                        rec["_file"] = file.name
                        reasons.update(cast(list[str], rec["_reasons"]))
                        qfh.write(json.dumps(rec, default=str) + "\n")
                    summary.quarantined += len(unparseable)
                    if raw.empty:
                        continue
                    raw = raw.reset_index(drop=True)
                    good, bad = _validate_chunk(raw, validator, salt, hash_ids, summary,
                                                f"{file.name} rows {summary.rows_read - len(raw) - len(unparseable)}-"
                                                f"{summary.rows_read - 1}")  # fmt: skip
                    for why in bad.values():
                        reasons.update(why)
                    _write_quarantine(qfh, raw, bad, file.name, salt if hash_ids else None)
                    summary.quarantined += len(bad)
                    for date, part in good.groupby(partition_of(good["timestamp"]), sort=True):
                        target = staging / f"date={date}" / f"chunk-{chunk_no:05d}.parquet"
                        atomic_write_parquet(to_lake_table(part), target)
                        staged.setdefault(str(date), []).append(target)
        known = lake_event_hashes(layout.interactions)
        seen: set[int] = set()
        for date, parts in sorted(staged.items()):
            parts, present, repeated = _new_events(parts, known, seen, staging / f"date={date}")
            summary.already_present += present
            summary.duplicates += repeated
            if not parts:
                continue
            added, present = commit_partition(
                layout.interactions, date, parts, f"{ingest_id}-{uuid.uuid4().hex[:8]}"
            )
            summary.added += added
            summary.already_present += present
            if added:
                summary.partitions.append(date)
        summary.reasons = dict(reasons.most_common())
        if summary.quarantined:
            qdir = layout.quarantine / ingest_id
            qdir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(bad_out), qdir / "rows.jsonl")
            summary.quarantine_path = str(qdir / "rows.jsonl")
        summary.data_docs = str(validator.build_docs())
        summary.seconds = round(time.perf_counter() - started, 3)
        layout.ingest_log.mkdir(parents=True, exist_ok=True)
        log_path = layout.ingest_log / f"{ingest_id}-{int(time.time())}.json"
        log_path.write_text(json.dumps(summary.to_dict(), indent=2, default=str))
        if summary.quarantined:
            (layout.quarantine / ingest_id / "report.json").write_text(
                json.dumps(summary.to_dict(), indent=2, default=str)
            )
        return summary
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def lake_event_hashes(root: Path) -> np.ndarray:
    """A sorted 64-bit hash of every event_id in the lake, read file by file (80 MB for 10M events)."""
    hashes = [pd.util.hash_array(pq.read_table(f, columns=["event_id"]).column("event_id").to_numpy(zero_copy_only=False))
              for f in sorted(root.glob("date=*/*.parquet"))]  # fmt: skip
    return np.sort(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)


def _new_events(
    parts: list[Path], known: np.ndarray, seen: set[int], out: Path
) -> tuple[list[Path], int, int]:
    """One partition's staged rows without the events the lake holds in any partition (counted as already present)
    and without the ones an earlier file or chunk of this ingest staged (counted as duplicates)."""
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    hashes = pd.util.hash_array(table.column("event_id").to_numpy(zero_copy_only=False))
    in_lake = np.isin(hashes, known)
    first = ~pd.Series(hashes).duplicated().to_numpy()
    earlier = np.fromiter((int(h) in seen for h in hashes), bool, len(hashes))
    keep = ~in_lake & first & ~earlier
    seen.update(int(h) for h in hashes[keep])
    if keep.all():
        return parts, 0, 0
    present = int(in_lake.sum())
    repeated = int((~in_lake).sum() - keep.sum())
    if not keep.any():
        return [], present, repeated
    target = out / "new.parquet"
    atomic_write_parquet(table.filter(pa.array(keep)), target)
    return [target], present, repeated


def _validate_chunk(
    raw: pd.DataFrame,
    validator: InteractionValidator,
    salt: str,
    hash_ids: bool,
    summary: IngestSummary,
    batch: str = "batch",
) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    typed, parse_errors, warnings = parse_chunk(raw, salt, hash_ids)
    for w in warnings:
        if w not in summary.warnings:
            summary.warnings.append(w)
    report = validator.validate(typed, batch)
    failed: dict[int, list[str]] = {}
    if report.table_failures:
        failed = {int(i): list(report.table_failures) for i in typed.index}
    for idx, why in report.failed_rows.items():
        failed.setdefault(idx, []).extend(why)
    # The first copy of a duplicated event_id is kept; later copies are quarantined as duplicates.
    first_copy = ~typed["event_id"].duplicated(keep="first") if "event_id" in typed else None
    for idx in list(failed):
        why = failed[idx]
        if first_copy is not None and first_copy.get(idx, False) and UNIQUE_EVENT_ID in why:
            why = [w for w in why if w != UNIQUE_EVENT_ID]
        if idx in parse_errors:
            why = parse_errors[idx] + why
        if why:
            failed[idx] = why
        else:
            del failed[idx]
    for idx, why in parse_errors.items():
        failed.setdefault(idx, why)
    good = typed.drop(index=list(failed))
    return good, failed


def _write_quarantine(
    fh: object, raw: pd.DataFrame, bad: dict[int, list[str]], name: str, salt: str | None
) -> None:
    """Append the failing rows, as read (user ids hashed), each with the expectations it failed."""
    if not bad:
        return
    rows = raw.loc[list(bad)].astype(object)
    rows = rows.where(rows.notna(), None)
    if "user_id" in rows:
        rows["user_id"] = hash_user_id(rows["user_id"], salt)
    rows = rows.assign(_file=name, _reasons=list(bad.values()))
    lines = [
        json.dumps({k: _jsonable(v) for k, v in rec.items()}, default=str) for rec in rows.to_dict("records")
    ]
    fh.write("\n".join(lines) + "\n")  # type: ignore[attr-defined]


def _jsonable(value: object) -> object:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
