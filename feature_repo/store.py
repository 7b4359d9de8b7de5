"""The feature store adapter: build the offline tables from the feature set, apply, materialize, and point-in-time
retrieval.

Feast is imported lazily (it costs ~14 s per process) and only here.
"""

from __future__ import annotations

import json
import pickle
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feature_repo.collaborative import epoch_tables, epoch_times
from feature_repo.definitions import JOIN_KEYS, build_objects, table_path
from feature_repo.manifest import Encodings, FeatureManifest
from feature_repo.segments import SegmentModel
from feature_repo.text import TextIndex, document_texts
from feature_repo.transforms import (
    activity_columns,
    document_attributes,
    document_engagement,
    engagement_columns,
    label_events,
    normalize_query,
    query_document_key,
    query_documents,
    user_activity,
    user_affinities,
    user_history,
)
from reranker.engine import RayCluster, prepare_ray_process
from reranker.featureset import DocumentKind, FeatureSet, check_catalog
from reranker.lake import atomic_write_parquet
from reranker.settings import Layout

CONFIG_YAML = """# rendered by `reranker features apply` from the RERANKER_* settings: change those, not this file
project: reranker
provider: local
registry:
{registry}
online_store:
{online_store}
offline_store:
{offline_store}
{batch_engine}entity_key_serialization_version: 3
"""
SEGMENTS = "segments.pkl"
MATERIALIZED = "materialized.json"
ARROW = {"Float64": pa.float64(), "Int64": pa.int64(), "String": pa.string(),
         "Array(String)": pa.list_(pa.string()), "Array(Float64)": pa.list_(pa.float64()),
         "Array(Int64)": pa.list_(pa.int64())}  # fmt: skip


class FeatureStoreError(RuntimeError):
    pass


@dataclass
class FeatureBuild:
    rows: dict[str, int]
    feature_set: str
    feature_set_version: str
    inputs: int
    segments: int
    epochs: int
    data_end: str
    warnings: list[str]
    seconds: float


def build_from_lake(layout: Layout, fs: FeatureSet, seed: int) -> FeatureBuild:
    """`build_tables` over the lake's interactions and documents, into the layout's feature tables."""
    from reranker.lake import LEARNING_COLUMNS, read_interactions

    events = read_interactions(layout.interactions, columns=LEARNING_COLUMNS)
    catalog = pd.read_parquet(layout.documents) if layout.documents.exists() else pd.DataFrame()
    return build_tables(events, catalog, layout.feature_tables, fs, seed=seed)


def _contexts(events: pd.DataFrame) -> pd.DataFrame | None:
    if "context_json" not in events or events["context_json"].isna().all():
        return None
    return pd.DataFrame([json.loads(v) for v in events["context_json"].dropna().unique()])


def _write(frame: pd.DataFrame, path: Path, key: str, columns: dict[str, str]) -> int:
    """A table with a typed schema (lists and empty tables included), timestamps in microseconds, atomically."""
    schema = pa.schema([(key, pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
                        *[(c, ARROW[t]) for c, t in columns.items()]])  # fmt: skip
    if frame.empty:
        table = schema.empty_table()
    else:
        frame = frame.assign(
            event_timestamp=pd.to_datetime(frame["event_timestamp"], utc=True).dt.as_unit("us")
        )
        arrays = []
        for field in schema:
            values = frame[field.name]
            if pa.types.is_list(field.type):
                values = [None if v is None else list(v) for v in values]
            arrays.append(pa.array(values, type=field.type, from_pandas=True))
        table = pa.Table.from_arrays(arrays, schema=schema)
    atomic_write_parquet(table, path)
    return table.num_rows


def build_tables(events: pd.DataFrame, catalog: pd.DataFrame, tables_dir: Path, fs: FeatureSet, *,
                 segment_fit_quantile: float = 0.5, seed: int = 7) -> FeatureBuild:  # fmt: skip
    """Every table the feature set asks for (point in time, microsecond timestamps, atomic writes), the segment
    model (fitted on user profiles of the first `segment_fit_quantile` of the time window), the text index and the
    manifest. Encodings and the document index grow from the previous build's."""
    started = time.perf_counter()
    if events.empty:
        raise FeatureStoreError("the lake holds no interactions: ingest some first")
    if catalog.empty:
        raise FeatureStoreError("the lake holds no document catalog: ingest one with --documents")
    check = check_catalog(fs, catalog)
    if not check.ok:
        raise FeatureStoreError("the catalog does not fit the feature set:\n  " + "\n  ".join(check.errors))
    tables_dir.mkdir(parents=True, exist_ok=True)
    previous = FeatureManifest.read_if_any(tables_dir)
    catalog = catalog.assign(document_id=catalog["document_id"].astype(str))
    encodings = Encodings.build(fs, catalog, _contexts(events), previous.encodings if previous else None)
    known = previous.documents if previous else []
    have = set(known)
    fresh = sorted((set(catalog["document_id"]) | set(events["document_id"].astype(str))) - have)
    documents = [*known, *fresh]
    doc_index = {d: i for i, d in enumerate(documents)}
    labelled = label_events(events, fs.engagement.kinds if fs.engagement else [])
    views: dict[str, dict[str, Any]] = {}
    rows: dict[str, int] = {}

    def save(
        view: str, entity: str, frame: pd.DataFrame, columns: dict[str, str], epoch_keyed: bool = False
    ) -> None:
        rows[view] = _write(frame, table_path(tables_dir, view), JOIN_KEYS[entity], columns)
        views[view] = {"entity": entity, "columns": columns, "epoch_keyed": epoch_keyed}

    attrs = {n: a for n, a in fs.documents.items() if a.kind is not DocumentKind.text}
    if attrs:
        types = {n: "String" if a.kind is DocumentKind.categorical else
                 "Array(String)" if a.kind is DocumentKind.multi_categorical else "Float64"
                 for n, a in attrs.items()}  # fmt: skip
        save("document_attributes", "document", document_attributes(catalog, fs), types)
    if fs.engagement is not None:
        save("document_engagement", "document", document_engagement(labelled, fs.engagement),
             dict.fromkeys(engagement_columns(fs.engagement), "Float64"))  # fmt: skip
    if fs.user is not None and fs.user.activity:
        save("user_activity", "user", user_activity(labelled, fs.user),
             dict.fromkeys(activity_columns(fs.user), "Float64"))  # fmt: skip
    profiles = user_affinities(labelled, catalog, fs, encodings)
    if fs.affinities:
        save("user_affinity", "user", profiles, dict.fromkeys(fs.affinities, "Array(Float64)"))
    n_segments = 0
    segment_names: list[str] = []
    if fs.user is not None and not profiles.empty:
        fit_until = pd.to_datetime(events["timestamp"], utc=True).quantile(segment_fit_quantile)
        fit_rows = profiles[profiles["event_timestamp"] <= fit_until]
        segments = SegmentModel.fit(
            fit_rows if len(fit_rows) else profiles, fs.affinities, fs.user.segments, seed, encodings
        )
        (tables_dir / SEGMENTS).write_bytes(pickle.dumps(segments))
        save("user_segment", "user", profiles.assign(segment=segments.assign(profiles)), {"segment": "Int64"})
        n_segments = segments.n_segments
        segment_names = list(segments.names)
    epochs: list[pd.Timestamp] = []
    if fs.collaborative is not None:
        cfg = fs.collaborative
        if cfg.covisitation:
            save("user_history", "user", user_history(labelled, doc_index, cfg.recent_positives),
                 {"recent_positives": "Array(Int64)"})  # fmt: skip
        epochs = epoch_times(labelled["timestamp"], cfg)
        positives = labelled.loc[labelled["positive"], ["user_id", "document_id", "timestamp"]]
        tables = epoch_tables(positives, documents, cfg, epochs, seed)
        if cfg.covisitation:
            save("document_neighbors", "document", tables["document_neighbors"],
                 {"neighbors": "Array(Int64)", "similarities": "Array(Float64)"}, epoch_keyed=True)  # fmt: skip
        if cfg.factors:
            factor_types = {"factors": "Array(Float64)", "epoch": "Int64"}
            save("document_factors", "document", tables["document_factors"], factor_types, epoch_keyed=True)
            save("user_factors", "user", tables["user_factors"], factor_types, epoch_keyed=True)
    if fs.query is not None and fs.query.click_stats:
        qd = query_documents(labelled)
        if len(qd):
            save("query_document", "query_document", qd, {"impressions": "Float64", "clicks": "Float64",
                                                          "ctr": "Float64"})  # fmt: skip
            atomic_write_parquet(qd[["query_document_key", "query", "document_id"]].drop_duplicates(
                "query_document_key"), tables_dir / "query_document_keys.parquet")  # fmt: skip
    if fs.query is not None and fs.query.text:
        TextIndex.build(document_texts(catalog, [fs.documents[n].source(n) for n in fs.query.text], documents)).save(
            tables_dir)  # fmt: skip
    ts = pd.to_datetime(events["timestamp"], utc=True)
    manifest = FeatureManifest(feature_set=fs, encodings=encodings, documents=documents, views=views,
                               epochs=[e.to_pydatetime() for e in epochs], data_start=ts.min().to_pydatetime(),
                               data_end=ts.max().to_pydatetime(), built_at=datetime.now(UTC), rows=rows,
                               segments=n_segments, segment_names=segment_names)  # fmt: skip
    manifest.write(tables_dir)
    from feature_repo.inputs import available_inputs

    return FeatureBuild(rows, fs.name, fs.version, len(available_inputs(manifest)), n_segments, len(epochs),
                        str(ts.max()), check.warnings, round(time.perf_counter() - started, 3))  # fmt: skip


def serving_files(tables_dir: Path) -> dict[str, Path]:
    """What `build_tables` writes beside the tables that a model keeps with it (registered with it)."""
    return {name: tables_dir / name for name in (SEGMENTS,)}


def load_segments(directory: Path) -> SegmentModel | None:
    path = directory / SEGMENTS
    return pickle.loads(path.read_bytes()) if path.exists() else None  # written by the build


def write_config(repo_dir: Path, redis: str | None = None, registry: str | None = None,
                 ray: RayCluster | None = None) -> Path:  # fmt: skip
    """feature_store.yaml: the local provider; the online store SQLite under `repo_dir`, or Redis at `redis` (Feast's
    connection string: host:port[,db=N][,password=...][,ssl=true]); the registry a file under `repo_dir`, or the SQL
    database at `registry` (a SQLAlchemy URL, e.g. postgresql+psycopg://...); point-in-time joins in DuckDB, or with
    `ray` on Feast's Ray offline store, which also materializes (`ray.engine`), on that cluster."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    if registry:
        registry_yaml = f"  registry_type: sql\n  path: {json.dumps(registry)}\n  cache_ttl_seconds: 60"
    else:
        registry_yaml = f"  registry_type: file\n  path: {(repo_dir / 'registry.db').resolve()}"
    if redis:
        online = f"  type: redis\n  connection_string: {json.dumps(redis)}"
    else:
        online = f"  type: sqlite\n  path: {(repo_dir / 'online.db').resolve()}"
    offline, engine = "  type: duckdb", ""
    if ray is not None:
        staging = (repo_dir / "ray_staging").resolve()
        options = _yaml_block(ray.feast_options(), 2)
        offline = f"  type: ray\n  storage_path: {staging}\n  enable_ray_logging: false\n{options}"
        # SQLite takes one writer at a time; Redis takes parallel writes
        # tasks at once: Feast's default (12) waits for CPUs a 2-CPU cluster never frees
        parallel = ray.num_cpus if ray.address is None else 12
        engine = (f"batch_engine:\n  type: ray.engine\n  staging_location: {staging}\n  max_workers: {parallel}\n"
                  f"  write_concurrency: {8 if redis else 1}\n{options}\n")  # fmt: skip
    path = repo_dir / "feature_store.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(CONFIG_YAML.format(registry=registry_yaml, online_store=online, offline_store=offline,
                                      batch_engine=engine))  # fmt: skip
    tmp.replace(path)
    return path


def _yaml_block(values: dict[str, Any], indent: int) -> str:
    import yaml

    text = yaml.safe_dump(values, default_flow_style=False, sort_keys=True).rstrip("\n")
    return "\n".join(" " * indent + line for line in text.splitlines())


def open_store(repo_dir: Path) -> Any:
    from feast import FeatureStore

    # Importing Feast shows every DeprecationWarning ("once", reset whenever a filter changes): ibis's warning about
    # its own DuckDB call was printed on every point-in-time query of `reranker train`. Not the user's to act on.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\.")

    config = repo_dir / "feature_store.yaml"
    if not config.exists():
        raise FeatureStoreError(f"no feature_store.yaml in {repo_dir}: run `reranker features apply` first")
    if "\n  type: ray\n" in config.read_text():
        prepare_ray_process()
    return FeatureStore(repo_path=str(repo_dir))


def apply(repo_dir: Path, tables_dir: Path, redis: str | None = None, registry: str | None = None,
          ray: RayCluster | None = None) -> Any:  # fmt: skip
    """Render the config (see `write_config`), then register the build's entities, views and feature service;
    views the feature set no longer declares are removed."""
    manifest = FeatureManifest.read(tables_dir)
    write_config(repo_dir, redis, registry, ray)
    store = open_store(repo_dir)
    objects = build_objects(tables_dir, manifest)
    keep = {o.name for o in objects}
    stale = [v for v in store.list_feature_views() if v.name not in keep]
    store.apply(objects, objects_to_delete=stale, partial=not stale)
    return store


def materialize(store: Any, tables_dir: Path, end: datetime | None = None, incremental: bool = False,
                late_arrival: timedelta = timedelta(days=1)) -> dict[str, object]:  # fmt: skip
    """Load the newest snapshot of every entity into the online store.

    The end is now, or the day after the newest event when the data runs ahead of the clock (a replayed log), so the
    newest day's snapshots are served. Full: from the oldest snapshot. Incremental: from the last materialization's
    end minus `late_arrival` (events ingested late produce snapshots timestamped before that end; Feast's own
    `materialize_incremental` would skip them), or full when a view was never materialized.
    """
    started = time.perf_counter()
    manifest = FeatureManifest.read(tables_dir)
    views = list(manifest.views)
    if end is None:
        end = datetime.now(UTC)
        if manifest.data_end is not None:
            end = max(
                end,
                (
                    pd.Timestamp(manifest.data_end).floor("D") + pd.Timedelta(days=1, seconds=1)
                ).to_pydatetime(),
            )
    last_ends = [store.get_feature_view(view).most_recent_end_time for view in views] if incremental else []
    if incremental and last_ends and all(t is not None for t in last_ends):
        start = min(last_ends) - late_arrival
        mode = "incremental"
    else:
        starts = []
        for view in views:
            ts = pd.read_parquet(table_path(tables_dir, view), columns=["event_timestamp"])["event_timestamp"]
            if len(ts):
                starts.append(ts.min())
        start = min(starts).to_pydatetime() - pd.Timedelta(seconds=1) if starts else end - timedelta(days=1)
        mode = "full"
    store.materialize(start_date=start, end_date=end, feature_views=views)
    result = {
        "mode": mode,
        "start": str(start),
        "end": str(end),
        "seconds": round(time.perf_counter() - started, 3),
    }
    marker = tables_dir / MATERIALIZED
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**result, "feature_set_version": manifest.version}))
    tmp.replace(marker)  # serving reloads what it holds in memory when this changes
    return result


def historical_features(store: Any, entity_rows: pd.DataFrame, manifest: FeatureManifest) -> pd.DataFrame:
    """Point-in-time values of every view for each (user_id, document_id, event_timestamp[, query]) row, in the
    same order, as columns `view__feature` (`PointInTimeAnswers` for all the rows at once)."""
    return PointInTimeAnswers.ask(store, entity_rows, manifest).rows(0, len(entity_rows))


@dataclass
class _GroupAnswers:
    names: list[str]  # the columns, `view__feature`
    answers: pd.DataFrame  # one row per distinct (key, time) asked, then one row of nulls
    # each entity row's answer: an int32 row of `answers` (the null row when the row could not be asked)
    codes: np.ndarray


@dataclass
class PointInTimeAnswers:
    """Feast's point-in-time answers for a set of entity rows, asked once per entity and spread over any range of
    the rows on demand (`rows`): a training set's build asks its questions once for all its lists (each call to
    Feast's Ray store costs tens of seconds whatever its size) and holds the few distinct answers and an int32 code
    per row and view group, then spreads one chunk of rows at a time.

    Documents and users are asked at the row's time, moved back to the newest snapshot time at or before it (the
    same answer; `as_of_snapshots`); collaborative views at the epoch of that time (so a user's and a document's
    factors come from the same fit); query x document statistics under the row's normalized query. Each (entity,
    time) pair is asked once (a list asks for one user at one time, 100 times over; a document is asked once a
    day however often it is shown). Every pair asked for comes back (unmatched ones with nulls); the counts are
    checked."""

    groups: list[_GroupAnswers]

    @classmethod
    def ask(cls, store: Any, entity_rows: pd.DataFrame, manifest: FeatureManifest, per_call: int | None = None
            ) -> PointInTimeAnswers:  # fmt: skip
        """`per_call`: distinct questions per call to Feast (default `questions_per_call` of the store's engine)."""
        if entity_rows.empty:
            raise FeatureStoreError("no entity rows to retrieve features for")
        # Asked at whole seconds: Ray's store resolves times to seconds and then drops pairs it sees twice (two rows
        # of one key in the same second: 30 in 500,000 lost at 1M events). The feature builds write snapshots at day
        # boundaries, so the floor never moves a row across one, and it can only make the join stricter.
        times = pd.to_datetime(entity_rows["event_timestamp"], utc=True).dt.floor("s").dt.as_unit("us")
        times = times.reset_index(drop=True)
        keys = _EntityKeys.of(entity_rows, "query_document" in manifest.views)
        refs_of: dict[tuple[str, bool], list[str]] = {}
        for view, spec in manifest.view_specs().items():
            refs_of.setdefault((spec.entity, spec.epoch_keyed), []).extend(
                f"{view}:{c}" for c in spec.columns
            )
        epochs = manifest.epoch_of(times).dt.as_unit("us") if any(e for _, e in refs_of) else None
        groups = []
        for (entity, epoch_keyed), refs in refs_of.items():
            if epochs is not None and epoch_keyed:
                when = epochs
            else:
                grid = snapshot_times(store, list(dict.fromkeys(r.split(":")[0] for r in refs)))
                when = as_of_snapshots(times, grid)
            codes, first = _distinct_pairs(keys.codes[entity], when)
            distinct = pd.DataFrame({JOIN_KEYS[entity]: keys.values(entity, keys.codes[entity][first]),
                                     "event_timestamp": when.iloc[first].reset_index(drop=True)})  # fmt: skip
            names = [r.replace(":", "__") for r in refs]
            answers = pd.DataFrame(index=np.arange(len(distinct)), columns=names, dtype=object)
            if not distinct.empty:
                step = per_call or questions_per_call(store) or len(distinct)
                answers = pd.concat([_answers(store, distinct.iloc[a : a + step], refs, names)
                                     for a in range(0, len(distinct), step)], ignore_index=True)  # fmt: skip
            codes[codes < 0] = len(distinct)  # the null row
            groups.append(_GroupAnswers(names, answers.reindex(np.arange(len(distinct) + 1)), codes))
        return cls(groups)

    def rows(self, start: int, stop: int) -> pd.DataFrame:
        """The answers of entity rows start..stop-1, in order, as columns `view__feature`."""
        return pd.concat([g.answers.iloc[g.codes[start:stop]].reset_index(drop=True) for g in self.groups],
                         axis=1)  # fmt: skip


@dataclass
class _EntityKeys:
    """Each entity row's user, document and (normalized query, document) pair as integer codes (-1: none), so that
    distinct questions are found without a string per row; the keys themselves are made for the distinct ones."""

    codes: dict[str, np.ndarray]
    users: np.ndarray
    documents: np.ndarray
    queries: np.ndarray  # distinct normalized queries

    @classmethod
    def of(cls, rows: pd.DataFrame, with_queries: bool) -> _EntityKeys:
        users, user_values = pd.factorize(rows["user_id"])
        documents, document_values = pd.factorize(rows["document_id"])
        pairs, query_values = np.full(len(rows), -1, np.int64), np.array([], dtype=object)
        if with_queries and "query" in rows:
            raw, raw_values = pd.factorize(rows["query"])
            normalized, query_values = pd.factorize(
                pd.Series([normalize_query(q) for q in raw_values], dtype=object)
            )
            query = np.append(normalized, -1)[raw].astype(
                np.int64
            )  # a missing query (-1) takes the -1 appended
            known = (query >= 0) & (documents >= 0)
            pairs[known] = query[known] * max(len(document_values), 1) + documents[known]
        codes = {
            "user": users.astype(np.int64),
            "document": documents.astype(np.int64),
            "query_document": pairs,
        }
        return cls(codes, np.asarray(user_values, dtype=object), np.asarray(document_values, dtype=object),
                   np.asarray(query_values, dtype=object))  # fmt: skip

    def values(self, entity: str, codes: np.ndarray) -> np.ndarray:
        """The join key values of these (non-negative) codes of `entity`."""
        if entity == "user":
            return self.users[codes]
        if entity == "document":
            return self.documents[codes]
        n = max(len(self.documents), 1)
        return np.array([query_document_key(q, str(d)) for q, d in
                         zip(self.queries[codes // n], self.documents[codes % n], strict=True)], dtype=object)  # fmt: skip


def _distinct_pairs(keys: np.ndarray, times: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each row's distinct (key, time) number, in order of first appearance (-1 where either is missing), and the
    first row of each."""
    usable = (keys >= 0) & times.notna().to_numpy()
    instants = times.dt.tz_localize(None).to_numpy("datetime64[us]").view(np.int64)
    numbered = (
        pd.DataFrame({"k": keys[usable], "t": instants[usable]}).groupby(["k", "t"], sort=False).ngroup()
    )
    codes = np.full(len(keys), -1, np.int32)
    codes[usable] = numbered.to_numpy(np.int32)
    first = np.flatnonzero(usable)[np.unique(codes[usable], return_index=True)[1]]
    return codes, first


def questions_per_call(store: Any) -> int | None:
    """How many distinct point-in-time questions to put to the store's offline engine at once (None: all). The peak
    of Feast's DuckDB query grows with the questions (at 1M events: 800 MB over the rest for all 86,470 document
    questions in one call, at most 560 MB in slices of 50,000), so it is asked in slices; a call to Feast's Ray store
    costs tens of seconds whatever its size and runs the join in Ray's workers block by block, so it is asked
    everything at once."""
    return None if on_ray(store) else 50_000


def on_ray(store: Any) -> bool:
    """Whether the store's offline engine is Feast's Ray store."""
    return bool(store.config.offline_store.type == "ray")


def _answers(store: Any, questions: pd.DataFrame, refs: list[str], names: list[str]) -> pd.DataFrame:
    """Feast's answers to `questions` (key, event_timestamp), in their order."""
    got = store.get_historical_features(entity_df=questions.assign(_ask=np.arange(len(questions))), features=refs,
                                        full_feature_names=True).to_df()  # fmt: skip
    asked = np.sort(got["_ask"].to_numpy()) if "_ask" in got else None
    if asked is None or not np.array_equal(asked, np.arange(len(questions))):
        raise FeatureStoreError(f"feature retrieval returned {len(got)} rows for {len(questions)} asked")
    # Answers are matched to questions by the row number they carry: engines return rows in their own order and
    # some (Ray's) with the time at another resolution.
    return _as_duckdb_answers(got.set_index("_ask")[names].sort_index()).reset_index(drop=True)


def snapshot_times(store: Any, views: list[str]) -> np.ndarray:
    """The distinct times of these views' snapshot rows, sorted (datetime64[us], UTC), read from their sources."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    times = []
    for view in views:
        source = store.get_feature_view(view).batch_source
        column = pq.read_table(source.path, columns=[source.timestamp_field]).column(0)
        distinct = pd.DatetimeIndex(pd.to_datetime(pc.unique(column).to_pandas(), utc=True))
        times.append(distinct.dropna().tz_convert(None).as_unit("us").to_numpy())
    return np.unique(np.concatenate(times)) if times else np.array([], "datetime64[us]")


def as_of_snapshots(times: pd.Series, grid: np.ndarray) -> pd.Series:
    """Each time moved back to the newest snapshot time at or before it: no snapshot lies in between, so the
    point-in-time join answers the same there, and a list's many times collapse to the few snapshot times (at 100k
    events, 52,660 (document, time) questions became a few thousand (document, day) ones). Times before the first
    snapshot (nothing to find either way) go to one second before it; missing times stay missing."""
    if len(grid) == 0:
        return times
    values = pd.to_datetime(times, utc=True).dt.as_unit("us")
    naive = values.dt.tz_localize(None).to_numpy()
    at = np.searchsorted(grid, naive, side="right") - 1
    snapped = np.where(at >= 0, grid[np.maximum(at, 0)], grid[0] - np.timedelta64(1, "s"))
    out = pd.Series(pd.to_datetime(snapped).tz_localize("UTC").as_unit("us"), index=times.index)
    return out.where(values.notna())


def _as_duckdb_answers(frame: pd.DataFrame) -> pd.DataFrame:
    """List-valued features the way DuckDB returns them, whichever engine answered. Ray returns an entity with no
    row as an empty list (DuckDB: None; the builds never store an empty list, so it is taken as missing) and a
    one-element list as a 0-d array."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        arrays = values.map(lambda v: isinstance(v, list | np.ndarray)).to_numpy(bool)
        if not arrays.any():
            continue
        fixed = [v if not is_array else None if np.size(v) == 0 else v.reshape(1) if np.ndim(v) == 0 else v
                 for v, is_array in zip(values, arrays, strict=True)]  # fmt: skip
        frame[column] = pd.Series(fixed, index=frame.index, dtype=object)
    return frame


def user_entity_key(user_key: str) -> Any:
    """Feast's entity key of a user: what its online stores index a user's rows by."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[JOIN_KEYS["user"]], entity_values=[Value(string_val=user_key)])


USER_DELETION_STORES = ("sqlite", "redis")


def check_user_deletion(store: Any) -> None:
    """Raise FeatureStoreError unless `delete_online_user` supports the store's online store (checked before
    anything is deleted, so that a user is never half removed)."""
    kind = store.config.online_store.type
    if kind not in USER_DELETION_STORES:
        raise FeatureStoreError(
            f"deleting a user is implemented for the {' and '.join(USER_DELETION_STORES)} online stores, not {kind}"
        )


def serialized_user_key(config: Any, user_key: str) -> bytes:
    """A user's entity key as Feast's SQLite online store stores it."""
    from feast.infra.key_encoding_utils import serialize_entity_key

    return bytes(
        serialize_entity_key(
            user_entity_key(user_key),
            entity_key_serialization_version=config.entity_key_serialization_version,
        )
    )


def user_views(store: Any) -> list[Any]:
    """The registered feature views keyed by the user."""
    return [v for v in store.list_feature_views() if v.entity_columns and
            [c.name for c in v.entity_columns] == [JOIN_KEYS["user"]]]  # fmt: skip


def sqlite_user_tables(store: Any, views: list[Any] | None = None) -> tuple[str, list[str]]:
    """Feast's SQLite online store: its database path (a relative one resolved against the repo, as Feast does)
    and the tables of the user feature views, named as Feast names them."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id

    config = store.config
    versioned = config.registry.enable_online_feature_view_versioning
    tables = [
        _table_id(config.project, view, versioned)
        for view in (views if views is not None else user_views(store))
    ]
    return SqliteOnlineStore._get_db_path(config), tables


def delete_online_user(store: Any, user_key: str) -> int:
    """Remove a user's rows from the online store (SQLite or Redis); returns the rows (Redis: keys) deleted."""
    import sqlite3

    from feast.infra.online_stores.sqlite import _quote_id

    check_user_deletion(store)
    config = store.config
    if config.online_store.type == "redis":
        # every user view of one user is one Redis hash, under Feast's key for the entity and project
        from feast.infra.online_stores.helpers import _redis_key

        online = store._get_provider().online_store
        client = online._get_client(config.online_store)
        key = _redis_key(config.project, user_entity_key(user_key), config.entity_key_serialization_version)
        return int(client.delete(key))
    path, tables_of_users = sqlite_user_tables(store)  # the tables serving reads a user from
    key = serialized_user_key(config, user_key)
    deleted = 0
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in tables_of_users:
            if table in tables:
                deleted += conn.execute(
                    f"DELETE FROM {_quote_id(table)} WHERE entity_key = ?", (key,)
                ).rowcount
    return deleted
