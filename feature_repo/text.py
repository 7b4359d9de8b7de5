"""Query-document text match: TF-IDF (scikit-learn) over the declared text attributes of the catalog.

Built with the features (`text_index.pkl` beside the tables), rows in the manifest's document order. A query (or a
candidate's `content`, for a document the catalog lacks) is vectorized with the fitted vectorizer's own analyzer and
idf, then matched against document rows by a compiled sparse dot product: the cosine of two L2-normalized TF-IDF
vectors, the same number for training and serving.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

TEXT_INDEX = "text_index.pkl"


@dataclass
class TextIndex:
    vectorizer: Any  # a fitted sklearn TfidfVectorizer
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    _analyze: Any = field(default=None, init=False, repr=False)
    _vocab: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _idf: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._analyze = self.vectorizer.build_analyzer()
        self._vocab = self.vectorizer.vocabulary_
        self._idf = self.vectorizer.idf_

    @classmethod
    def build(cls, texts: list[str]) -> TextIndex:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(sublinear_tf=True, max_features=200_000, dtype=np.float64)
        nonempty = [t for t in texts if t.strip()]
        vectorizer.fit(nonempty or ["empty"])
        matrix = vectorizer.transform(texts).tocsr()
        matrix.sort_indices()
        return cls(vectorizer, matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64),
                   matrix.data.astype(np.float64))  # fmt: skip

    @property
    def n_documents(self) -> int:
        return len(self.indptr) - 1

    def vector(self, text: str | None) -> tuple[np.ndarray, np.ndarray]:
        """The text's L2-normalized TF-IDF vector as (sorted term ids, weights), as `vectorizer.transform` gives."""
        if not text:
            return np.zeros(0, np.int64), np.zeros(0)
        counts: dict[int, int] = {}
        vocab = self._vocab
        for token in self._analyze(text):
            term = vocab.get(token)
            if term is not None:
                counts[term] = counts.get(term, 0) + 1
        if not counts:
            return np.zeros(0, np.int64), np.zeros(0)
        ids = np.fromiter(sorted(counts), np.int64, len(counts))
        assert self._idf is not None
        weights = (1.0 + np.log(np.fromiter((counts[i] for i in ids), np.float64, len(ids)))) * self._idf[ids]
        return ids, weights / np.sqrt((weights * weights).sum())

    def match(self, rows: np.ndarray, list_of_row: np.ndarray, query_ids: list[np.ndarray],
              query_weights: list[np.ndarray]) -> np.ndarray:  # fmt: skip
        """Cosine of each row's document (-1: unknown, NaN) with its list's query (an empty query: NaN)."""
        starts = np.zeros(len(query_ids) + 1, dtype=np.int64)
        starts[1:] = np.cumsum([len(q) for q in query_ids])
        ids = np.concatenate(query_ids) if query_ids else np.zeros(0, np.int64)
        weights = np.concatenate(query_weights) if query_weights else np.zeros(0)
        out = np.empty(len(rows))
        _match(rows, list_of_row, starts, ids.astype(np.int64), weights.astype(np.float64), self.indptr,
               self.indices, self.data, out)  # fmt: skip
        return out

    def save(self, directory: Path) -> Path:
        path = directory / TEXT_INDEX
        tmp = path.with_suffix(".pkl.tmp")
        tmp.write_bytes(pickle.dumps((self.vectorizer, self.indptr, self.indices, self.data)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: Path) -> TextIndex | None:
        path = directory / TEXT_INDEX
        if not path.exists():
            return None
        return cls(*pickle.loads(path.read_bytes()))  # written by the feature build


def warm_up() -> None:
    """Compile the match kernel now (or load it from numba's cache)."""
    out = np.empty(1)
    _match(np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([0, 1], np.int64), np.zeros(1, np.int64),
           np.ones(1), np.array([0, 1], np.int64), np.zeros(1, np.int64), np.ones(1), out)  # fmt: skip


def document_texts(catalog: pd.DataFrame, columns: list[str], documents: list[str]) -> list[str]:
    """The catalog's text attributes joined per document, in the manifest's document order ('' when unknown)."""
    frame = catalog.set_index(catalog["document_id"].astype(str))
    joined = frame[columns].fillna("").astype(str).agg(" ".join, axis=1) if columns else pd.Series(dtype=str)
    return [str(v) for v in joined.reindex(documents).fillna("").tolist()]


@njit(cache=True, nogil=True)
def _match(rows, list_of_row, q_starts, q_ids, q_weights, indptr, indices, data, out):  # type: ignore[no-untyped-def]
    n_docs = indptr.shape[0] - 1
    for r in range(rows.shape[0]):
        doc = rows[r]
        lst = list_of_row[r]
        qa, qb = q_starts[lst], q_starts[lst + 1]
        if doc < 0 or doc >= n_docs or qa == qb:
            out[r] = np.nan
            continue
        a, b = indptr[doc], indptr[doc + 1]
        total = 0.0
        i, j = a, qa
        while i < b and j < qb:  # both sorted by term id
            if indices[i] == q_ids[j]:
                total += data[i] * q_weights[j]
                i += 1
                j += 1
            elif indices[i] < q_ids[j]:
                i += 1
            else:
                j += 1
        out[r] = total
