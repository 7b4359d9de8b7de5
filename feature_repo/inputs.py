"""Model inputs, generated from a feature build, and the one compiled kernel that computes them.

`available_inputs(manifest)` lists every input a build can supply, named `family.name` (the seed's style:
`metadata.brand`, `engagement.purchase_rate`, `affinity.categories`, `collaborative.covisit_max`, `query.text_match`,
`request.in_stock`, `context.device`, `first_stage.rank`, ...). A model trains on such a list and records it on its
card; serving checks the card against the current build (`supply_problems`) before it serves the model.

Rows reach the kernel as three matrices laid out by the manifest - the documents' stored values (`doc_layout`), the
users' (`user_layout`, one row per list) and per-row extras computed beside them (`extra_layout`: request fields,
context, co-visitation, text match, query click statistics) - plus the first-stage scores and each list's time.
Training fills them from Feast's point-in-time join, serving from what Feast materialized; `compute` is the same
code for both (one numba pass), so the training matrix and the served inputs cannot drift apart.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from numba import njit
from pydantic import BaseModel, ConfigDict

from feature_repo.manifest import AttributeEncoding, Encodings, FeatureManifest
from reranker.featureset import ContextKind, DocumentKind

FAMILIES = ("first_stage", "metadata", "engagement", "user", "affinity", "collaborative", "query", "request",
            "context")  # fmt: skip
PERSONAL_FAMILIES = frozenset({"user", "affinity", "collaborative"})

# kernel operations
(
    DOC,
    USER,
    EXTRA,
    CODE,
    SLOT_OTHER,
    AGE,
    AFF_CODE,
    AFF_MEAN,
    AFF_MAX,
    AFF_BUCKET,
    DOT,
    FS_SCORE,
    FS_RANK,
    FS_GAP,
) = range(14)
OPS = {"doc": DOC, "user": USER, "extra": EXTRA, "code": CODE, "slot_other": SLOT_OTHER, "age": AGE,
       "affinity_code": AFF_CODE, "affinity_mean": AFF_MEAN, "affinity_max": AFF_MAX, "affinity_bucket": AFF_BUCKET,
       "dot": DOT, "first_stage_score": FS_SCORE, "first_stage_rank": FS_RANK, "first_stage_gap": FS_GAP}  # fmt: skip


class ModelInput(BaseModel):
    """One model input: its name, family, how it is computed (`op` over `source`), and what it means."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: str
    op: str
    source: str = ""  # a column of the doc / user / extra layout (the op says which)
    attribute: str | None = None  # the document attribute behind metadata and affinity inputs
    slot: int | None = None  # a multi-valued attribute's value slot
    description: str = ""

    @property
    def personal(self) -> bool:
        return self.family in PERSONAL_FAMILIES


# ---------------------------------------------------------------- layouts


def doc_layout(manifest: FeatureManifest) -> list[str]:
    """Columns of the document matrix: declared attributes (multi-valued: one per slot), engagement, factors."""
    fs, enc = manifest.feature_set, manifest.encodings
    cols = []
    for name, attr in fs.documents.items():
        if attr.kind is DocumentKind.text:
            continue
        if attr.kind is DocumentKind.multi_categorical:
            cols += [f"attr:{name}#{s}" for s in range(enc.attributes[name].slots)]
        else:
            cols.append(f"attr:{name}")
    if "document_engagement" in manifest.views:
        cols += [f"eng:{c}" for c in manifest.view("document_engagement").columns]
    if "document_factors" in manifest.views:
        cols += [f"fac:{i}" for i in range(_n_factors(manifest))] + ["fac:epoch"]
    return cols


def user_layout(manifest: FeatureManifest) -> list[str]:
    cols = []
    if "user_activity" in manifest.views:
        cols += [f"act:{c}" for c in manifest.view("user_activity").columns]
    for name in manifest.feature_set.affinities:
        cols += [f"aff:{name}#{s}" for s in range(manifest.encodings.attributes[name].slots)]
    if "user_factors" in manifest.views:
        cols += [f"fac:{i}" for i in range(_n_factors(manifest))] + ["fac:epoch"]
    return cols


def extra_layout(manifest: FeatureManifest) -> list[str]:
    fs = manifest.feature_set
    cols = [f"req:{name}" for name in fs.request] + [f"ctx:{name}" for name in fs.context]
    if "document_neighbors" in manifest.views:
        cols += ["cov:mean", "cov:max"]
    if fs.query is not None and fs.query.text:
        cols.append("txt:match")
    if "query_document" in manifest.views:
        cols += ["qd:ctr", "qd:impressions", "qd:clicks"]
    return cols


def _n_factors(manifest: FeatureManifest) -> int:
    cfg = manifest.feature_set.collaborative
    return cfg.factors if cfg is not None else 0


# ---------------------------------------------------------------- the inputs a build supplies


def available_inputs(manifest: FeatureManifest) -> list[ModelInput]:
    fs, enc = manifest.feature_set, manifest.encodings
    out: list[ModelInput] = []

    def add(name: str, family: str, op: str, source: str = "", **kw: object) -> None:
        out.append(ModelInput(name=f"{family}.{name}", family=family, op=op, source=source, **kw))  # type: ignore[arg-type]

    add("score", "first_stage", "first_stage_score", description="the caller's first-stage score")
    add("rank", "first_stage", "first_stage_rank", description="1-based rank by first-stage score")
    add("gap", "first_stage", "first_stage_gap", description="first-stage score minus the list's best")
    for name, attr in fs.documents.items():
        a = enc.attributes[name]
        if attr.kind in (DocumentKind.numeric, DocumentKind.boolean):
            add(name, "metadata", "doc", f"attr:{name}", attribute=name)
        elif attr.kind is DocumentKind.categorical:
            add(name, "metadata", "code", f"attr:{name}", attribute=name)
        elif attr.kind is DocumentKind.multi_categorical:
            for s, value in enumerate(a.values):
                add(f"{name}#{s:02d}", "metadata", "doc", f"attr:{name}#{s}", attribute=name, slot=s,
                    description=value)  # fmt: skip
            add(f"{name}#other", "metadata", "slot_other", f"attr:{name}#{len(a.values)}", attribute=name,
                description="any other value")  # fmt: skip
        elif attr.kind is DocumentKind.timestamp:
            add(f"{name}_age_days", "metadata", "age", f"attr:{name}", attribute=name)
    if "document_engagement" in manifest.views:
        for col in manifest.view("document_engagement").columns:
            add(col, "engagement", "doc", f"eng:{col}")
    if "user_activity" in manifest.views:
        for col in manifest.view("user_activity").columns:
            add(col, "user", "user", f"act:{col}")
    for name in fs.affinities:
        kind = fs.documents[name].kind
        if kind is DocumentKind.multi_categorical:
            add(name, "affinity", "affinity_mean", f"attr:{name}#0", attribute=name,
                description="the user's share of positives over the document's values (mean)")  # fmt: skip
            add(f"{name}_max", "affinity", "affinity_max", f"attr:{name}#0", attribute=name)
        elif kind is DocumentKind.categorical:
            add(name, "affinity", "affinity_code", f"attr:{name}", attribute=name,
                description="the user's share of positives with the document's value")  # fmt: skip
        else:
            add(name, "affinity", "affinity_bucket", f"attr:{name}", attribute=name,
                description="the user's share of positives in the document's bucket")  # fmt: skip
    if "document_neighbors" in manifest.views:
        add("covisit_mean", "collaborative", "extra", "cov:mean",
            description="mean co-occurrence similarity to the user's recent positives")  # fmt: skip
        add("covisit_max", "collaborative", "extra", "cov:max")
    if "document_factors" in manifest.views and "user_factors" in manifest.views:
        add("factor_dot", "collaborative", "dot", "fac:0", description="user x document latent factors")
    if fs.query is not None and fs.query.text:
        add(
            "text_match",
            "query",
            "extra",
            "txt:match",
            description="TF-IDF cosine of query and document text",
        )
    if "query_document" in manifest.views:
        add("ctr", "query", "extra", "qd:ctr", description="smoothed click rate under this query")
        add("impressions", "query", "extra", "qd:impressions")
        add("clicks", "query", "extra", "qd:clicks")
    for name in fs.request:
        add(name, "request", "extra", f"req:{name}")
    for name in fs.context:
        add(name, "context", "extra", f"ctx:{name}")
    return out


def default_inputs(manifest: FeatureManifest) -> list[ModelInput]:
    """What a model trains on by default: every input supplied, without the first stage's when the feature set
    says `first_stage: false`."""
    keep_first = manifest.feature_set.first_stage
    return [i for i in available_inputs(manifest) if keep_first or i.family != "first_stage"]


def select_inputs(inputs: list[ModelInput], requested: list[str]) -> tuple[np.ndarray, list[str]]:
    """Which inputs a request's `features` list selects (a full name, or a prefix at a `.`/`#` boundary such as a
    family `engagement` or an attribute `metadata.categories`), and the requested names that match nothing."""
    mask = np.zeros(len(inputs), dtype=bool)
    unknown = []
    for want in requested:
        hit = np.array([i.name == want or i.name.startswith((want + ".", want + "#")) or
                        (i.attribute is not None and f"{i.family}.{i.attribute}" == want)
                        for i in inputs], dtype=bool)  # fmt: skip
        if not hit.any():
            unknown.append(want)
        mask |= hit
    return mask, unknown


def supply_problems(inputs: list[ModelInput], encodings: Encodings, manifest: FeatureManifest) -> list[str]:
    """Why the build cannot supply these inputs as the model was trained on them (empty: it can)."""
    have = {i.name: i for i in available_inputs(manifest)}
    problems = []
    for want in inputs:
        got = have.get(want.name)
        if got is None:
            problems.append(f"{want.name}: not supplied by the current features (feature set "
                            f"{manifest.feature_set.name} {manifest.version})")  # fmt: skip
        elif (got.op, got.source) != (want.op, want.source) and want.op != "slot_other":
            problems.append(f"{want.name}: computed as {got.op}({got.source}), the model expects "
                            f"{want.op}({want.source})")  # fmt: skip
    for name, mine in encodings.attributes.items():
        theirs = manifest.encodings.attributes.get(name)
        if theirs is None:
            problems.append(f"attribute {name}: not in the current features")
        elif theirs.kind is not mine.kind:
            problems.append(f"attribute {name}: {theirs.kind.value} now, {mine.kind.value} for the model")
        elif theirs.values[: len(mine.values)] != mine.values or theirs.max_values != mine.max_values:
            problems.append(
                f"attribute {name}: its vocabulary changed (the model's is not a prefix of the current)"
            )
        elif theirs.buckets != mine.buckets:
            problems.append(f"attribute {name}: bucket edges changed ({mine.buckets} -> {theirs.buckets})")
    for name, values in encodings.context.items():
        now = manifest.encodings.context.get(name, [])
        if now[: len(values)] != values:
            problems.append(f"context {name}: its vocabulary changed")
    return problems


def used_encodings(inputs: list[ModelInput], manifest: FeatureManifest) -> Encodings:
    """The encodings the inputs read (what a model card keeps)."""
    attrs = {i.attribute for i in inputs if i.attribute is not None}
    contexts = {i.name.split(".", 1)[1] for i in inputs if i.family == "context"}
    enc = manifest.encodings
    return Encodings(attributes={n: a for n, a in enc.attributes.items() if n in attrs},
                     context={n: v for n, v in enc.context.items() if n in contexts})  # fmt: skip


# ---------------------------------------------------------------- rows -> matrices


def encode_documents(raw: pd.DataFrame, manifest: FeatureManifest) -> np.ndarray:
    """The document matrix (rows x doc_layout) from raw view values (columns `view__feature`)."""
    fs, enc = manifest.feature_set, manifest.encodings
    blocks: list[np.ndarray] = []
    n = len(raw)
    for name, attr in fs.documents.items():
        col = f"document_attributes__{name}"
        values = raw[col] if col in raw else pd.Series([None] * n, index=raw.index, dtype=object)
        a = enc.attributes[name]
        if attr.kind is DocumentKind.text:
            continue
        if attr.kind is DocumentKind.multi_categorical:
            blocks.append(a.slots_matrix(values, attr.separator))
        elif attr.kind is DocumentKind.categorical:
            blocks.append(a.codes(values)[:, None])
        else:
            blocks.append(pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)[:, None])
    if "document_engagement" in manifest.views:
        blocks.append(_floats(raw, "document_engagement", manifest.view("document_engagement").columns))
    if "document_factors" in manifest.views:
        blocks.append(_factors(raw, "document_factors", _n_factors(manifest)))
    return np.ascontiguousarray(np.hstack(blocks) if blocks else np.zeros((n, 0)))


def encode_users(raw: pd.DataFrame, manifest: FeatureManifest) -> np.ndarray:
    """The user matrix (rows x user_layout) from raw view values (columns `view__feature`)."""
    enc = manifest.encodings
    n = len(raw)
    blocks: list[np.ndarray] = []
    if "user_activity" in manifest.views:
        blocks.append(_floats(raw, "user_activity", manifest.view("user_activity").columns))
    for name in manifest.feature_set.affinities:
        blocks.append(_arrays(raw.get(f"user_affinity__{name}"), n, enc.attributes[name].slots))
    if "user_factors" in manifest.views:
        blocks.append(_factors(raw, "user_factors", _n_factors(manifest)))
    return np.ascontiguousarray(np.hstack(blocks) if blocks else np.zeros((n, 0)))


def user_slots(manifest: FeatureManifest) -> list[tuple[str, int, int]]:
    """Where each stored user value goes in the user layout: (`view__feature`, first column, width; 0 = scalar)."""
    cols = manifest.columns[1]
    out: list[tuple[str, int, int]] = []
    if "user_activity" in manifest.views:
        out += [(f"user_activity__{c}", cols[f"act:{c}"], 0) for c in manifest.view("user_activity").columns]
    for name in manifest.feature_set.affinities:
        out.append(
            (f"user_affinity__{name}", cols[f"aff:{name}#0"], manifest.encodings.attributes[name].slots)
        )
    if "user_factors" in manifest.views:
        n = _n_factors(manifest)
        out += [("user_factors__factors", cols["fac:0"], n), ("user_factors__epoch", cols["fac:epoch"], 0)]
    return out


def user_vector(values: dict[str, object], manifest: FeatureManifest,
                slots: list[tuple[str, int, int]] | None = None) -> np.ndarray:  # fmt: skip
    """One user's row of the user layout from its stored values by `view__feature` - what `encode_users` gives
    for one row, without pandas (serving's path)."""
    out = np.full(len(manifest.columns[1]), np.nan)
    for key, start, width in slots if slots is not None else user_slots(manifest):
        value = values.get(key)
        if value is None:
            continue
        if width:
            array = np.asarray(value, dtype=np.float64)
            if array.shape == (width,):
                out[start : start + width] = array
        else:
            with contextlib.suppress(TypeError, ValueError):
                out[start] = float(value)  # type: ignore[arg-type]
    return out


def _floats(raw: pd.DataFrame, view: str, columns: dict[str, str]) -> np.ndarray:
    out = np.full((len(raw), len(columns)), np.nan)
    for j, name in enumerate(columns):
        col = f"{view}__{name}"
        if col in raw:
            out[:, j] = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _arrays(values: pd.Series | None, n: int, width: int) -> np.ndarray:
    """Array-valued cells as a (n x width) matrix (NaN rows where missing or of another width)."""
    out = np.full((n, width), np.nan)
    if values is None:
        return out
    for row, cell in enumerate(values.tolist()):
        if cell is not None and not (isinstance(cell, float) and np.isnan(cell)) and len(cell) == width:
            out[row] = np.asarray(cell, dtype=np.float64)
    return out


def _factors(raw: pd.DataFrame, view: str, width: int) -> np.ndarray:
    out = np.full((len(raw), width + 1), np.nan)
    out[:, :width] = _arrays(raw.get(f"{view}__factors"), len(raw), width)
    if f"{view}__epoch" in raw:
        out[:, width] = pd.to_numeric(raw[f"{view}__epoch"], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    return out


def ragged(cells: list[object]) -> tuple[np.ndarray, np.ndarray]:
    """Array-valued cells (None: empty) as CSR (indptr, values)."""
    arrays = [
        np.asarray(c) if c is not None and not (isinstance(c, float) and np.isnan(c)) else None for c in cells
    ]
    sizes = np.array([0 if a is None else len(a) for a in arrays], dtype=np.int64)
    indptr = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    parts = [a for a in arrays if a is not None and len(a)]
    values = np.concatenate(parts) if parts else np.zeros(0)
    return indptr, values


def context_row(
    manifest: FeatureManifest, context: dict[str, object] | None, when: pd.Timestamp
) -> np.ndarray:
    """One request's context values in the order of the declared context fields (categorical: codes)."""
    fs = manifest.feature_set
    context = context or {}
    out = np.full(len(fs.context), np.nan)
    for j, (name, field) in enumerate(fs.context.items()):
        if field.kind is ContextKind.hour_of_day:
            out[j] = when.hour
        elif field.kind is ContextKind.day_of_week:
            out[j] = when.dayofweek
        elif field.kind is ContextKind.categorical:
            out[j] = manifest.encodings.context_code(name, context.get(name))
        else:
            value = context.get(name)
            try:
                out[j] = np.nan if value is None else float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                out[j] = np.nan
    return out


def covisitation(row_doc: np.ndarray, list_of_row: np.ndarray, nb_indptr: np.ndarray, nb_indices: np.ndarray,
                 nb_sims: np.ndarray, recent_indptr: np.ndarray, recent: np.ndarray, n_docs: int) -> np.ndarray:  # fmt: skip
    """(rows x 2): mean and max co-occurrence similarity of each row's document (its neighbour list: row `row_doc` of
    the CSR; -1 unknown) to its list's recent positives (CSR per list; none: NaN). `n_docs` bounds valid rows."""
    out = np.empty((len(row_doc), 2))
    _covisit(np.asarray(row_doc, dtype=np.int64), np.asarray(list_of_row, dtype=np.int64),
             np.asarray(nb_indptr, dtype=np.int64), np.asarray(nb_indices, dtype=np.int64),
             np.asarray(nb_sims, dtype=np.float64), np.asarray(recent_indptr, dtype=np.int64),
             np.asarray(recent, dtype=np.int64), n_docs, out)  # fmt: skip
    return out


@njit(cache=True, nogil=True)
def _covisit(row_doc, list_of_row, nb_indptr, nb_indices, nb_sims, recent_indptr, recent, n_docs, out):  # type: ignore[no-untyped-def]
    n = row_doc.shape[0]
    current = -1
    mine = np.empty(0, dtype=np.int64)
    for r in range(n):
        lst = list_of_row[r]
        if lst != current:  # rows of a list are contiguous: its recent positives, sorted and distinct, once
            current = lst
            part = np.sort(recent[recent_indptr[lst] : recent_indptr[lst + 1]])
            k = 0
            for i in range(part.shape[0]):
                if 0 <= part[i] < n_docs and (k == 0 or part[i] != part[k - 1]):
                    part[k] = part[i]
                    k += 1
            mine = part[:k]
        doc = row_doc[r]
        if mine.shape[0] == 0 or doc < 0 or doc >= nb_indptr.shape[0] - 1:
            out[r, 0] = np.nan
            out[r, 1] = np.nan
            continue
        total, best = 0.0, 0.0
        for i in range(nb_indptr[doc], nb_indptr[doc + 1]):
            j = np.searchsorted(mine, nb_indices[i])
            if j < mine.shape[0] and mine[j] == nb_indices[i]:
                total += nb_sims[i]
                if nb_sims[i] > best:
                    best = nb_sims[i]
        out[r, 0] = total / mine.shape[0]
        out[r, 1] = best


# ---------------------------------------------------------------- the plan and the kernel


@dataclass(frozen=True)
class InputPlan:
    """The kernel's program for one list of inputs over one manifest's layouts."""

    inputs: tuple[ModelInput, ...]
    op: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    edges: np.ndarray
    doc_width: int
    user_width: int
    extra_width: int

    @classmethod
    def build(cls, inputs: list[ModelInput], manifest: FeatureManifest,
              encodings: Encodings | None = None) -> InputPlan:  # fmt: skip
        """`encodings`: the model's (its vocabularies, a prefix of the manifest's); default the manifest's own."""
        problems = supply_problems(inputs, encodings or manifest.encodings, manifest)
        if problems:
            raise InputsUnavailable(problems)
        enc = encodings or manifest.encodings
        doc = {c: i for i, c in enumerate(doc_layout(manifest))}
        user = {c: i for i, c in enumerate(user_layout(manifest))}
        extra = {c: i for i, c in enumerate(extra_layout(manifest))}
        n = len(inputs)
        op, a, b, c = (np.zeros(n, np.int64) for _ in range(4))
        edges: list[float] = []
        for j, spec in enumerate(inputs):
            op[j] = OPS[spec.op]
            attr: AttributeEncoding | None = enc.attributes.get(spec.attribute) if spec.attribute else None
            if spec.op in ("doc", "age"):
                a[j] = doc[spec.source]
            elif spec.op == "user":
                a[j] = user[spec.source]
            elif spec.op == "extra":
                a[j] = extra[spec.source]
            elif spec.op == "code":
                assert attr is not None
                a[j], b[j], c[j] = doc[spec.source], len(attr.values), attr.max_values
            elif spec.op == "slot_other":
                assert attr is not None and spec.attribute is not None
                start = doc[f"attr:{spec.attribute}#0"]
                a[j], b[j] = (
                    start + len(attr.values),
                    start + manifest.encodings.attributes[spec.attribute].slots,
                )
            elif spec.op in ("affinity_mean", "affinity_max", "affinity_code", "affinity_bucket"):
                assert spec.attribute is not None
                width = manifest.encodings.attributes[spec.attribute].slots
                a[j], b[j] = doc[spec.source], user[f"aff:{spec.attribute}#0"]
                c[j] = width
                if spec.op == "affinity_bucket":
                    assert attr is not None
                    c[j] = len(edges)
                    edges += attr.buckets
                    edges.append(np.nan)  # terminator: the kernel reads edges until NaN
            elif spec.op == "dot":
                a[j], b[j], c[j] = doc["fac:0"], user["fac:0"], _n_factors(manifest)
        return cls(tuple(inputs), op, a, b, c, np.asarray(edges, dtype=np.float64) if edges else np.zeros(1),
                   len(doc), len(user), len(extra))  # fmt: skip

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @cached_property
    def personal(self) -> np.ndarray:
        return np.array([i.personal for i in self.inputs], dtype=np.bool_)

    def compute(self, docs: np.ndarray, users: np.ndarray, extras: np.ndarray, first_stage: np.ndarray,
                list_starts: np.ndarray, now_days: np.ndarray, dtype: Any = np.float64) -> np.ndarray:  # fmt: skip
        """(rows x inputs), of `dtype` (the values computed in float64, stored as `dtype`). docs (rows x doc_width), users (lists x user_width), extras (rows x extra_width),
        first_stage (rows), list_starts (lists + 1, rows of a list contiguous), now_days (lists: each list's
        time in days since the epoch)."""
        n = len(first_stage)
        X = np.empty((n, len(self.inputs)), dtype)
        _compute(X, np.ascontiguousarray(docs, dtype=np.float64), np.ascontiguousarray(users, dtype=np.float64),
                 np.ascontiguousarray(extras, dtype=np.float64), np.ascontiguousarray(first_stage, dtype=np.float64),
                 np.ascontiguousarray(list_starts, dtype=np.int64), np.ascontiguousarray(now_days, dtype=np.float64),
                 self.op, self.a, self.b, self.c, self.edges)  # fmt: skip
        return X


def warm_up() -> None:
    """Compile the kernels now (or load them from numba's cache), not in a request's time budget."""
    X = np.empty((2, 2))
    op = np.array([FS_RANK, AFF_BUCKET], np.int64)
    zeros = np.zeros(2, np.int64)
    _compute(X, np.zeros((2, 2)), np.zeros((1, 3)), np.zeros((2, 1)), np.array([1.0, np.nan]),
             np.array([0, 2], np.int64), np.zeros(1), op, zeros, zeros, zeros, np.array([0.5, np.nan]))  # fmt: skip
    covisitation(np.array([0, -1]), np.zeros(2, np.int64), np.array([0, 1, 1]), np.array([1]), np.array([0.5]),
                 np.array([0, 1]), np.array([1]), 2)  # fmt: skip


class InputsUnavailable(ValueError):
    """The current features cannot supply a model's inputs (the reasons are listed)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        )
        self.problems = problems


@njit(cache=True, nogil=True)
def _compute(X, D, U, E, first, starts, now, op, a, b, c, edges):  # type: ignore[no-untyped-def]
    n, m = X.shape
    n_lists = starts.shape[0] - 1
    rank = np.full(n, np.nan)
    gap = np.full(n, np.nan)
    needs_rank = False
    for j in range(m):
        if op[j] == FS_RANK or op[j] == FS_GAP:
            needs_rank = True
    if needs_rank:
        for lst in range(n_lists):
            s, e = starts[lst], starts[lst + 1]
            scored = np.empty(e - s, dtype=np.int64)
            k = 0
            best = -np.inf
            for r in range(s, e):
                if not np.isnan(first[r]):
                    scored[k] = r
                    k += 1
                    if first[r] > best:
                        best = first[r]
            if k == 0:
                continue
            vals = np.empty(k)
            for i in range(k):
                vals[i] = -first[scored[i]]
            order = np.argsort(vals, kind="mergesort")  # stable: ties keep row order
            for pos in range(k):
                r = scored[order[pos]]
                rank[r] = pos + 1.0
                gap[r] = first[r] - best
    for lst in range(n_lists):
        for r in range(starts[lst], starts[lst + 1]):
            for j in range(m):
                o = op[j]
                if o == DOC:
                    X[r, j] = D[r, a[j]]
                elif o == USER:
                    X[r, j] = U[lst, a[j]]
                elif o == EXTRA:
                    X[r, j] = E[r, a[j]]
                elif o == CODE:
                    v = D[r, a[j]]
                    X[r, j] = v if np.isnan(v) or v < b[j] else c[j]
                elif o == SLOT_OTHER:
                    v = np.nan
                    for col in range(a[j], b[j]):
                        x = D[r, col]
                        if not np.isnan(x) and (np.isnan(v) or x > v):
                            v = x
                    X[r, j] = v
                elif o == AGE:
                    X[r, j] = now[lst] - D[r, a[j]]
                elif o == AFF_CODE:
                    code = D[r, a[j]]
                    X[r, j] = np.nan if np.isnan(code) else U[lst, b[j] + int(code)]
                elif o == AFF_MEAN or o == AFF_MAX:  # noqa: SIM109 - numba compiles this, not tuple membership
                    total, weight, top = 0.0, 0.0, -np.inf
                    for s in range(c[j]):
                        x = D[r, a[j] + s]
                        u = U[lst, b[j] + s]
                        if np.isnan(x) or np.isnan(u):
                            continue
                        total += x * u
                        weight += x
                        if x > 0 and u > top:
                            top = u
                    if weight <= 0:
                        X[r, j] = np.nan
                    elif o == AFF_MEAN:
                        X[r, j] = total / weight
                    else:
                        X[r, j] = top
                elif o == AFF_BUCKET:
                    v = D[r, a[j]]
                    if np.isnan(v):
                        X[r, j] = np.nan
                    else:
                        bucket = 0
                        i = c[j]
                        while not np.isnan(edges[i]) and v >= edges[i]:
                            bucket += 1
                            i += 1
                        X[r, j] = U[lst, b[j] + bucket]
                elif o == DOT:
                    w = c[j]
                    if (
                        D[r, a[j] + w] != U[lst, b[j] + w]
                    ):  # factors of different epochs (or missing): not comparable
                        X[r, j] = np.nan
                    else:
                        total = 0.0
                        for s in range(w):
                            total += D[r, a[j] + s] * U[lst, b[j] + s]
                        X[r, j] = total
                elif o == FS_SCORE:
                    X[r, j] = first[r]
                elif o == FS_RANK:
                    X[r, j] = rank[r]
                else:
                    X[r, j] = gap[r]
