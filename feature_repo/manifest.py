"""What a feature build supplies: the feature set it was built from, the encodings of its attributes, the views it
wrote and their columns, the stable document index and the collaborative epochs. Written beside the offline tables
(`manifest.json`); serving checks a model's card against it before serving the model.

Encodings only grow: a rebuild keeps every value's code and slot and appends new values (up to `max_values`), so a
model trained on an older build still reads its codes from a newer one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from reranker.featureset import ContextKind, DocumentKind, FeatureSet

MANIFEST = "manifest.json"


class AttributeEncoding(BaseModel):
    """Categorical values in code order (code `max_values` is 'other'), or a numeric attribute's bucket edges."""

    kind: DocumentKind
    values: list[str] = Field(default_factory=list)
    max_values: int = 0
    buckets: list[float] = Field(default_factory=list)

    @property
    def slots(self) -> int:
        """Multi-hot and affinity width: one slot per value, plus 'other'."""
        if self.kind is DocumentKind.numeric:
            return len(self.buckets) + 1
        return self.max_values + 1

    def codes(self, values: pd.Series) -> np.ndarray:
        """Float codes of single values: NaN where missing, `max_values` for a value outside the vocabulary."""
        index = pd.Index(self.values)
        text = values.where(values.notna(), None)
        found = index.get_indexer(text.map(lambda v: None if v is None else str(v)))
        out = np.where(found >= 0, found, self.max_values).astype(np.float64)
        out[text.isna().to_numpy()] = np.nan
        return out

    def bucket(self, values: np.ndarray) -> np.ndarray:
        """Bucket index of numeric values (NaN kept)."""
        out = np.searchsorted(np.asarray(self.buckets), values, side="right").astype(np.float64)
        out[np.isnan(values)] = np.nan
        return out

    def slots_matrix(self, values: pd.Series, separator: str = "|") -> np.ndarray:
        """Multi-hot (rows x slots) of multi-valued cells (a list or a separated string); all-NaN rows where missing."""
        out = np.zeros((len(values), self.slots))
        index = {v: i for i, v in enumerate(self.values)}
        for row, cell in enumerate(values.tolist()):
            items = split_values(cell, separator)
            if items is None:
                out[row] = np.nan
                continue
            for item in items:
                out[row, index.get(item, self.max_values)] = 1.0
        return out


def split_values(cell: Any, separator: str = "|") -> list[str] | None:
    """The values of a multi-valued cell; None when missing."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return None
    if isinstance(cell, list | tuple | np.ndarray):
        return [str(v).strip() for v in cell if v is not None and str(v).strip()]
    return [v.strip() for v in str(cell).split(separator) if v.strip()]


class Encodings(BaseModel):
    attributes: dict[str, AttributeEncoding] = Field(default_factory=dict)
    context: dict[str, list[str]] = Field(default_factory=dict)

    @classmethod
    def build(cls, fs: FeatureSet, catalog: pd.DataFrame, contexts: pd.DataFrame | None,
              previous: Encodings | None) -> Encodings:  # fmt: skip
        """Vocabularies (by frequency) and bucket edges (quintiles, unless declared) from the catalog; the logged
        contexts' values for categorical context fields without declared values. Starts from `previous`."""
        out = cls()
        for name, attr in fs.documents.items():
            old = previous.attributes.get(name) if previous else None
            if old is not None and old.kind is not attr.kind:
                old = None
            enc = AttributeEncoding(kind=attr.kind, max_values=attr.max_values)
            column = catalog[attr.source(name)] if attr.source(name) in catalog else pd.Series(dtype=object)
            if attr.kind in (DocumentKind.categorical, DocumentKind.multi_categorical):
                if attr.kind is DocumentKind.multi_categorical:
                    exploded = [
                        v for cell in column.tolist() for v in (split_values(cell, attr.separator) or [])
                    ]
                    counts = pd.Series(exploded, dtype=object).value_counts()
                else:
                    counts = column.dropna().astype(str).value_counts()
                ordered = sorted(counts.index, key=lambda v: (-counts[v], v))
                enc.values = _extend(old.values if old else [], ordered, attr.max_values)
            elif attr.kind is DocumentKind.numeric:
                if attr.buckets is not None:
                    enc.buckets = list(attr.buckets)
                elif old is not None and old.buckets:
                    enc.buckets = old.buckets
                else:
                    numbers = pd.to_numeric(column, errors="coerce").dropna()
                    edges: list[float] = (
                        np.unique(np.quantile(numbers, [0.2, 0.4, 0.6, 0.8])).tolist() if len(numbers) else []
                    )
                    enc.buckets = [float(e) for e in edges] or [0.0]
            out.attributes[name] = enc
        for name, ctx in fs.context.items():
            if ctx.kind is not ContextKind.categorical:
                continue
            if ctx.values is not None:
                out.context[name] = list(ctx.values)
                continue
            seen: list[str] = []
            if contexts is not None and name in contexts:
                counts = contexts[name].dropna().astype(str).value_counts()
                seen = sorted(counts.index, key=lambda v: (-counts[v], v))
            old_values = previous.context.get(name, []) if previous else []
            out.context[name] = _extend(old_values, seen, 32)
        return out

    def context_code(self, name: str, value: Any) -> float:
        if value is None:
            return float("nan")
        values = self.context.get(name, [])
        text = str(value)
        return float(values.index(text)) if text in values else float(len(values))


def _extend(old: list[str], ordered: list[str], limit: int) -> list[str]:
    """`old` in its order, then new values from `ordered`, up to `limit` values."""
    have = set(old)
    return (old + [v for v in ordered if v not in have])[: max(limit, len(old))]


@dataclass(frozen=True)
class ViewSpec:
    """A generated Feast view: its entity, columns (name -> Feast type name), and whether it is asked at the epoch
    of a request's time (collaborative models) rather than at the time itself."""

    entity: str
    columns: dict[str, str]
    epoch_keyed: bool = False


class FeatureManifest(BaseModel):
    feature_set: FeatureSet
    encodings: Encodings
    documents: list[str] = Field(description="The stable document index (append-only across builds).")
    views: dict[str, dict[str, Any]] = Field(description="view -> {entity, columns, epoch_keyed}")
    epochs: list[datetime] = Field(default_factory=list)
    data_start: datetime | None = None
    data_end: datetime | None = None
    built_at: datetime | None = None
    rows: dict[str, int] = Field(default_factory=dict)
    segments: int = 0
    segment_names: list[str] = Field(
        default_factory=list, description="Each segment's readable name, by number."
    )

    @property
    def version(self) -> str:
        return self.feature_set.version

    def view(self, name: str) -> ViewSpec:
        spec = self.views[name]
        return ViewSpec(spec["entity"], dict(spec["columns"]), bool(spec.get("epoch_keyed", False)))

    def view_specs(self) -> dict[str, ViewSpec]:
        return {name: self.view(name) for name in self.views}

    def epoch_of(self, times: pd.Series) -> pd.Series:
        """The latest epoch at or before each time (NaT before the first)."""
        if not self.epochs:
            return pd.Series(pd.NaT, index=times.index, dtype="datetime64[us, UTC]")
        epochs = pd.DatetimeIndex(pd.to_datetime(self.epochs, utc=True)).as_unit("us")
        ts = pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("us")
        pos = np.searchsorted(epochs.asi8, ts.asi8, side="right") - 1
        out = pd.Series(epochs.take(np.clip(pos, 0, None)), index=times.index)
        out[pos < 0] = pd.NaT
        return out

    def doc_index(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.documents)}

    @cached_property
    def columns(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Column positions of the document, user and extra layouts (`feature_repo.inputs`), computed once."""
        from feature_repo.inputs import doc_layout, extra_layout, user_layout

        return tuple({c: i for i, c in enumerate(f(self))} for f in (doc_layout, user_layout, extra_layout))  # type: ignore[return-value]

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, directory: Path) -> FeatureManifest:
        path = directory / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path}: no feature build yet (run `reranker features apply`)")
        return cls.model_validate(json.loads(path.read_text()))

    @classmethod
    def read_if_any(cls, directory: Path) -> FeatureManifest | None:
        try:
            return cls.read(directory)
        except (FileNotFoundError, ValueError):
            return None
