"""Rows of ranking lists as the input kernel reads them (`RowBlock`), from Feast's point-in-time join (training) or
from one request and what serving holds in memory (`feature_repo.inputs` computes the inputs from either).

The request-side values are turned into numbers here, once, for both paths: request fields (a candidate's
`features`, logged with impressions), overrides of numeric document attributes by request values, the context of
the list, co-visitation against the user's recent positives, the query-document text match and the query click
statistics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.inputs import context_row, covisitation, encode_documents, encode_users, ragged
from feature_repo.manifest import FeatureManifest
from feature_repo.text import TextIndex
from reranker.featureset import DocumentKind


@dataclass
class RowBlock:
    docs: np.ndarray  # rows x doc_layout
    users: np.ndarray  # lists x user_layout
    extras: np.ndarray  # rows x extra_layout
    first_stage: np.ndarray  # rows
    list_starts: np.ndarray  # lists + 1
    now_days: np.ndarray  # lists
    dropped: bool = False  # the values dropped (`structure`): the lists remain, nothing can be computed

    @property
    def n_rows(self) -> int:
        return len(self.first_stage)

    def take_lists(self, lists: np.ndarray) -> RowBlock:
        """The block of the given list positions (in that order)."""
        starts, ends = self.list_starts[lists], self.list_starts[lists + 1]
        rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)]) if len(lists) else \
            np.zeros(0, np.int64)  # fmt: skip
        new_starts = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=new_starts[1:])
        return RowBlock(self.docs[rows], self.users[lists], self.extras[rows], self.first_stage[rows], new_starts,
                        self.now_days[lists], self.dropped)  # fmt: skip

    @staticmethod
    def assemble(list_starts: np.ndarray, blocks: Any) -> RowBlock:
        """The blocks (an iterable of consecutive runs of whole lists) written one after the other into arrays
        allocated once for all the rows of `list_starts`: each block is dropped once copied, so the build holds the
        whole block and one chunk, not all the chunks and their concatenation besides."""
        n_rows, n_lists = int(list_starts[-1]), len(list_starts) - 1
        out: RowBlock | None = None
        row = lst = 0
        for block in blocks:
            if out is None:
                out = RowBlock(np.empty((n_rows, block.docs.shape[1]), block.docs.dtype),
                               np.empty((n_lists, block.users.shape[1]), block.users.dtype),
                               np.empty((n_rows, block.extras.shape[1]), block.extras.dtype),
                               np.empty(n_rows, block.first_stage.dtype), np.asarray(list_starts, np.int64),
                               np.empty(n_lists, block.now_days.dtype))  # fmt: skip
            rows, lists = block.n_rows, len(block.list_starts) - 1
            if not np.array_equal(block.list_starts + row, out.list_starts[lst : lst + lists + 1]):
                raise ValueError("blocks do not follow the lists in order")
            out.docs[row : row + rows], out.extras[row : row + rows] = block.docs, block.extras
            out.first_stage[row : row + rows] = block.first_stage
            out.users[lst : lst + lists], out.now_days[lst : lst + lists] = block.users, block.now_days
            row, lst = row + rows, lst + lists
        if out is None or (row, lst) != (n_rows, n_lists):
            raise ValueError(f"blocks hold {row} rows in {lst} lists, not {n_rows} in {n_lists}")
        return out

    def structure(self) -> RowBlock:
        """The lists without the documents', users' and extras' values (at 10M events several GB), for work that
        reads only inputs already computed."""
        n, k = self.n_rows, len(self.now_days)
        return RowBlock(np.empty((n, 0)), np.empty((k, 0)), np.empty((n, 0)), self.first_stage, self.list_starts,
                        self.now_days, dropped=True)  # fmt: skip

    def compute(self, plan: Any, dtype: Any = np.float64) -> np.ndarray:
        if self.dropped:
            raise ValueError(
                "this block's values were dropped (RowBlock.structure): compute from the full block"
            )
        return plan.compute(
            self.docs, self.users, self.extras, self.first_stage, self.list_starts, self.now_days, dtype
        )


def days(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC times as days since the Unix epoch."""
    ts = pd.DatetimeIndex(pd.to_datetime(times, utc=True))
    return ts.as_unit("ns").asi8 / 86_400e9


def parse_mappings(cells: pd.Series) -> list[dict[str, Any]]:
    """Logged JSON mappings (features_json, context_json) as dicts ({} where missing)."""
    cache: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for cell in cells.tolist():
        if not isinstance(cell, str):
            out.append({})
            continue
        if cell not in cache:
            try:
                parsed = json.loads(cell)
                cache[cell] = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                cache[cell] = {}
        out.append(cache[cell])
    return out


def column_of(features: list[dict[str, Any]], name: str) -> np.ndarray:
    """One named value of each row's mapping as floats (NaN where absent or not a number)."""
    values = [f.get(name) for f in features]
    try:
        return np.array(
            values, dtype=np.float64
        )  # numbers, booleans and None (NaN): the usual case, in one call
    except (TypeError, ValueError):
        return np.array([_number(v) for v in values], dtype=np.float64)


def request_matrix(manifest: FeatureManifest, features: list[dict[str, Any]], present: set[str] | None = None
                   ) -> np.ndarray:  # fmt: skip
    """(rows x declared request fields) from each row's request features (NaN where absent); `present`: the names
    any row carries, when the caller knows them."""
    names = list(manifest.feature_set.request)
    out = np.full((len(features), len(names)), np.nan)
    present = _keys(features) if present is None else present
    for j, name in enumerate(names):
        if name in present:
            out[:, j] = column_of(features, name)
    return out


def apply_overrides(docs: np.ndarray, manifest: FeatureManifest, features: list[dict[str, Any]],
                    present: set[str] | None = None) -> None:  # fmt: skip
    """Request values of numeric/boolean document attributes replace the stored ones, in place."""
    layout = manifest.columns[0]
    present = _keys(features) if present is None else present
    for name in manifest.feature_set.attributes(DocumentKind.numeric, DocumentKind.boolean):
        if name in present:
            given = column_of(features, name)
            col = layout[f"attr:{name}"]
            docs[:, col] = np.where(np.isnan(given), docs[:, col], given)


def _keys(features: list[dict[str, Any]]) -> set[str]:
    present: set[str] = set()
    for f in features:
        if f:
            present.update(f)
    return present


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool | str):
        return float(value) if isinstance(value, bool) else np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def list_starts_of(list_ids: pd.Series) -> np.ndarray:
    """Start rows of each run of equal list ids (rows of a list must be contiguous), and the end."""
    values = list_ids.to_numpy()
    change = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    if len(pd.unique(values)) != len(change):
        raise ValueError("rows of each list must be contiguous")
    return np.r_[change, len(values)].astype(np.int64)


def block_from_frame(lists: pd.DataFrame, raw: pd.DataFrame, manifest: FeatureManifest,
                     text: TextIndex | None) -> RowBlock:  # fmt: skip
    """The block of training lists: `lists` (list_id, user_id, document_id, event_timestamp, first_stage_score,
    optional query, features_json, context_json), rows of a list contiguous; `raw` their point-in-time values
    (`feature_repo.store.historical_features`), same rows."""
    starts = list_starts_of(lists["list_id"])
    first_rows = starts[:-1]
    times = pd.to_datetime(lists["event_timestamp"], utc=True)
    list_times = pd.DatetimeIndex(times.iloc[first_rows])
    docs = encode_documents(raw, manifest)
    features = parse_mappings(lists["features_json"]) if "features_json" in lists else [{}] * len(lists)
    apply_overrides(docs, manifest, features)
    users = encode_users(raw.iloc[first_rows].reset_index(drop=True), manifest)
    contexts = parse_mappings(lists["context_json"].iloc[first_rows]) if "context_json" in lists else \
        [{}] * len(first_rows)  # fmt: skip
    list_of_row = np.repeat(np.arange(len(first_rows)), np.diff(starts))
    doc_index = manifest.doc_index()
    row_doc = lists["document_id"].astype(str).map(doc_index).fillna(-1).to_numpy(dtype=np.int64)
    queries = lists["query"].iloc[first_rows].tolist() if "query" in lists else [None] * len(first_rows)
    pairs = pd.DataFrame({"document": row_doc, "epoch": manifest.epoch_of(times).to_numpy()})
    extra = extras(manifest, text, features, contexts, list_times, list_of_row, row_doc, queries,
                     raw=raw, first_rows=first_rows, pairs=pairs)  # fmt: skip
    first_stage = pd.to_numeric(lists["first_stage_score"], errors="coerce").to_numpy(dtype=np.float64)
    return RowBlock(docs, users, extra, first_stage, starts, days(list_times))


def extras(manifest: FeatureManifest, text: TextIndex | None, features: list[dict[str, Any]],
            contexts: list[dict[str, Any]], list_times: pd.DatetimeIndex, list_of_row: np.ndarray,
            row_doc: np.ndarray, queries: list[Any], *, raw: pd.DataFrame | None = None,
            first_rows: np.ndarray | None = None, pairs: pd.DataFrame | None = None, neighbours: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
            recent: tuple[np.ndarray, np.ndarray] | None = None, query_stats: np.ndarray | None = None,
            content_vectors: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
            query_vectors: list[tuple[np.ndarray, np.ndarray]] | None = None,
            present: set[str] | None = None) -> np.ndarray:  # fmt: skip
    """The extra columns (`extra_layout`). Training passes `raw` (point-in-time values per row); serving passes the
    neighbour CSR by document index, the user's recent positives and the query statistics it looked up."""
    col = manifest.columns[2]
    n = len(row_doc)
    out = np.full((n, len(col)), np.nan)
    fs = manifest.feature_set
    if fs.request:
        req = request_matrix(manifest, features, present)
        for j, name in enumerate(fs.request):
            out[:, col[f"req:{name}"]] = req[:, j]
    if fs.context:
        ctx = np.vstack([context_row(manifest, c, t) for c, t in zip(contexts, list_times, strict=True)]) if \
            len(contexts) else np.zeros((0, len(fs.context)))  # fmt: skip
        for j, name in enumerate(fs.context):
            out[:, col[f"ctx:{name}"]] = ctx[list_of_row, j] if n else np.zeros(0)
    if "cov:mean" in col:
        if neighbours is None:
            assert raw is not None and first_rows is not None
            assert pairs is not None
            neighbours, nb_rows = _row_neighbours(raw, pairs)
            recent = ragged(raw["user_history__recent_positives"].iloc[first_rows].tolist())
        else:
            nb_rows = row_doc
        assert recent is not None
        indptr, indices, sims = neighbours
        out[:, [col["cov:mean"], col["cov:max"]]] = covisitation(
            nb_rows, list_of_row, indptr, indices, sims, recent[0], recent[1], len(manifest.documents)
        )
    if "txt:match" in col and text is not None:
        vectors = query_vectors if query_vectors is not None else [
            text.vector(q if isinstance(q, str) else None) for q in queries]  # fmt: skip
        out[:, col["txt:match"]] = text.match(
            row_doc, list_of_row, [v[0] for v in vectors], [v[1] for v in vectors]
        )
        for row, (ids, weights) in (
            content_vectors or {}
        ).items():  # documents the catalog lacks, by their content
            q_ids, q_weights = vectors[list_of_row[row]]
            _, ia, ib = np.intersect1d(ids, q_ids, return_indices=True)
            out[row, col["txt:match"]] = float(weights[ia] @ q_weights[ib]) if len(q_ids) else np.nan
    if "qd:ctr" in col:
        if query_stats is None:
            assert raw is not None
            query_stats = np.column_stack([pd.to_numeric(raw[f"query_document__{c}"], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan) for c in ("ctr", "impressions", "clicks")])  # fmt: skip
        out[:, [col["qd:ctr"], col["qd:impressions"], col["qd:clicks"]]] = query_stats
    return out


def _row_neighbours(raw: pd.DataFrame, pairs: pd.DataFrame) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray],
                                                                     np.ndarray]:  # fmt: skip
    """The neighbour lists of the rows' (document, epoch) pairs (`pairs`, same rows) as one CSR over the distinct
    pairs, and each row's position in it."""
    cells = raw["document_neighbors__neighbors"]
    codes = pairs.groupby(list(pairs.columns), sort=False, dropna=False).ngroup().to_numpy()
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    nb = cells.iloc[first].tolist()
    sims = raw["document_neighbors__similarities"].iloc[first].tolist()
    indptr, indices = ragged(nb)
    _, values = ragged(sims)
    missing = np.array([c is None or (isinstance(c, float) and np.isnan(c)) for c in nb], dtype=bool)
    rows = codes.astype(np.int64)
    rows[missing[codes]] = -1
    return (indptr, indices.astype(np.int64), values.astype(np.float64)), rows
