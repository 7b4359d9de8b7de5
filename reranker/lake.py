"""The Parquet lake of validated interactions, partitioned by event date.

Writes are atomic (temporary file, then rename) and idempotent by event_id: a partition never holds an event twice,
and a crash leaves either the whole new file of a partition or nothing of it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reranker.contracts import STORED_KEY_PREFIX

LAKE_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("request_id", pa.string()),
        ("interaction_type", pa.string()),
        ("user_id", pa.string()),
        ("document_id", pa.string()),
        ("query", pa.string()),
        ("position", pa.int32()),
        ("propensity", pa.float64()),
        ("value", pa.float64()),
        ("score", pa.float64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("model_version", pa.string()),
        ("variant", pa.string()),
        ("features_json", pa.string()),
        ("context_json", pa.string()),
    ]
)
LAKE_COLUMNS = LAKE_SCHEMA.names
# What the feature build and the training lists read: every column but each event's own id (unique strings: at 10M
# events ≈ 2.7 GB of memory) and its A/B variant (the canary analysis reads the served log, not these).
LEARNING_COLUMNS = [c for c in LAKE_COLUMNS if c not in ("event_id", "variant")]


def user_key(user_id: str, salt: str | None) -> str:
    """The stored form of a user id: salted SHA-256 (16 hex characters), or the id itself when hashing is off
    (salt None). A `userkey:<key>` value is already in stored form and becomes <key>."""
    user_id = str(user_id)
    if user_id.startswith(STORED_KEY_PREFIX):
        stored = user_id[len(STORED_KEY_PREFIX) :]
        # hashing on, only a key's own shape passes as stored: `userkey:alice@example.com` is hashed like any id
        if salt is None or (len(stored) == 16 and all(c in "0123456789abcdef" for c in stored)):
            return stored
    return user_id if salt is None else hashlib.sha256(f"{salt}:{user_id}".encode()).hexdigest()[:16]


def hash_user_id(user_ids: pd.Series, salt: str | None) -> pd.Series:
    """`user_key` of each user id, computed once per distinct id; missing ids stay missing."""
    return user_ids.map({u: user_key(u, salt) for u in pd.unique(user_ids.dropna())})


def atomic_write_parquet(frame: pd.DataFrame | pa.Table, path: Path, schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    table = (
        frame
        if isinstance(frame, pa.Table)
        else pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    )
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def partition_of(ts: pd.Series) -> pd.Series:
    return ts.dt.strftime("%Y-%m-%d")


def to_lake_table(frame: pd.DataFrame) -> pa.Table:
    cols = {c: frame.get(c, None) for c in LAKE_COLUMNS}
    return pa.Table.from_pandas(
        pd.DataFrame(cols, index=frame.index), schema=LAKE_SCHEMA, preserve_index=False
    )


def partition_ids(root: Path, date: str) -> set[str]:
    part = root / f"date={date}"
    if not part.exists():
        return set()
    files = sorted(part.glob("*.parquet"))
    if not files:
        return set()
    return set(pq.read_table(files, columns=["event_id"]).column("event_id").to_pylist())


def commit_partition(root: Path, date: str, staged: Iterable[Path], ingest_id: str) -> tuple[int, int]:
    """Move the staged rows of one partition into the lake; returns (added, already present)."""
    table = pa.concat_tables([pq.read_table(p, schema=LAKE_SCHEMA) for p in staged])
    frame = table.to_pandas()
    frame = frame.drop_duplicates("event_id", keep="first")
    existing = partition_ids(root, date)
    fresh = frame[~frame["event_id"].isin(existing)]
    skipped = len(frame) - len(fresh)
    if len(fresh):
        atomic_write_parquet(to_lake_table(fresh), root / f"date={date}" / f"part-{ingest_id}.parquet")
    return len(fresh), skipped


def read_interactions(
    root: Path, columns: list[str] | None = None, filters: list | None = None
) -> pd.DataFrame:
    """All lake rows (optionally some columns / pyarrow filters); an empty frame with the schema when empty."""
    files = sorted(root.glob("date=*/*.parquet"))
    if not files:
        return LAKE_SCHEMA.empty_table().to_pandas()[columns or LAKE_COLUMNS]
    table = pq.read_table(files, columns=columns, filters=filters, schema=LAKE_SCHEMA)
    return table.to_pandas(
        split_blocks=True, self_destruct=True
    )  # Arrow's buffers freed as they are converted


def count_interactions(root: Path) -> int:
    """The lake's rows, from the Parquet footers (nothing read)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in root.glob("date=*/*.parquet"))


@dataclass(frozen=True)
class LakeEvents:
    """The lake's events, not yet read: counted from the footers, read once by what needs them (which drops the
    frame when done: at 10M events it is several GB)."""

    root: Path
    columns: tuple[str, ...] = tuple(LEARNING_COLUMNS)

    def count(self) -> int:
        return count_interactions(self.root)

    def read(self) -> pd.DataFrame:
        return read_interactions(self.root, columns=list(self.columns))


def read_catalog(path: Path) -> pd.DataFrame:
    """A document catalog file: Parquet, CSV or JSON lines (every column kept, types as stored or inferred)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return pd.read_json(path, lines=True)
    return pd.read_parquet(path)


def _storable(column: pd.Series) -> pd.Series:
    """A catalog column Parquet can hold: lists and numbers as they are, anything else mixed as text."""
    if column.dtype != object:
        return column
    kinds = {type(v) for v in column.dropna()}
    if kinds <= {list, tuple} or kinds <= {str}:
        return column.map(lambda v: list(v) if isinstance(v, tuple) else v)
    if kinds <= {int, float, bool}:
        return pd.to_numeric(column, errors="coerce")
    return column.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))


def upsert_documents(path: Path, catalog: pd.DataFrame) -> int:
    """Merge a document catalog into the lake's (new rows win; every column kept, the union of both catalogs'
    columns), atomically; returns the catalog size. Which columns the model uses is the feature set's business."""
    if "document_id" not in catalog.columns:
        raise ValueError(
            f"document catalog lacks a document_id column (columns: {sorted(map(str, catalog.columns))})"
        )
    catalog = catalog.copy()
    catalog.columns = [str(c) for c in catalog.columns]
    catalog = catalog[catalog["document_id"].notna()]
    catalog["document_id"] = catalog["document_id"].astype(str)
    if "created_at" in catalog and not pd.api.types.is_datetime64_any_dtype(catalog["created_at"]):
        parsed = pd.to_datetime(catalog["created_at"], utc=True, errors="coerce", format="mixed")
        if parsed.notna().sum() >= catalog["created_at"].notna().sum():
            catalog["created_at"] = parsed
    if path.exists():
        catalog = pd.concat([catalog, pd.read_parquet(path)], ignore_index=True)
    catalog = catalog.drop_duplicates("document_id", keep="first").sort_values("document_id")
    catalog = catalog.apply(_storable)
    atomic_write_parquet(catalog.reset_index(drop=True), path)
    return len(catalog)


@dataclass
class Rewrite:
    """One file's planned rewrite without a user's data: the new content already written beside it (hidden), so
    that a deletion either replaces every file or none."""

    path: Path
    tmp: Path
    removed: int

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        self.tmp.unlink(missing_ok=True)


def _hidden_tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def plan_user_rows(root: Path, key: str, column: str = "user_id") -> list[Rewrite]:
    """The Parquet files under root rewritten without the user's rows (not yet in place)."""
    plans = []
    for path in sorted(root.rglob("*.parquet")):
        table = pq.read_table(path)
        if column not in table.column_names:
            continue
        frame = table.to_pandas()
        keep = frame[frame[column] != key]
        if len(keep) == len(frame):
            continue
        tmp = _hidden_tmp(path)
        # an emptied file stays, empty with its schema: a feature table's source must keep existing
        pq.write_table(pa.Table.from_pandas(keep, schema=table.schema, preserve_index=False), tmp)
        plans.append(Rewrite(path, tmp, len(frame) - len(keep)))
    return plans


def plan_user_lines(root: Path, key: str, raw_id: str | None = None) -> list[Rewrite]:
    """The JSON-lines files under root rewritten without the user's lines: those whose user_id is the user's key
    (stored or marked), and any line naming the raw id as a JSON string (e.g. a quarantined line of an older
    release). Lines are split on newlines only (a served query may hold U+2028); a line that is not JSON is
    dropped when it holds the key or the raw id, kept otherwise."""
    import json

    marks = {key, STORED_KEY_PREFIX + key}
    needles = [key.encode()]
    if raw_id is not None:
        quoted = json.dumps(raw_id)
        needles += [quoted.encode(), json.dumps(quoted)[1:-1].encode()]

    def mine(line: bytes) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return any(n in line for n in needles)
        if isinstance(record, dict) and record.get("user_id") in marks:
            return True
        return raw_id is not None and any(n in line for n in needles[1:])

    plans = []
    for path in sorted(root.rglob("*.jsonl")):
        lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
        keep = [line for line in lines if not mine(line)]
        if len(keep) == len(lines):
            continue
        tmp = _hidden_tmp(path)
        tmp.write_bytes(b"".join(line + b"\n" for line in keep))
        plans.append(Rewrite(path, tmp, len(lines) - len(keep)))
    return plans
