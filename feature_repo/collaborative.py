"""Collaborative signals, point in time: item-item co-occurrence neighbours and latent user/document factors, refitted
at epochs from the positives strictly before each epoch.

A request at time t reads the models of the latest epoch at or before t (`FeatureManifest.epoch_of`), so no
co-occurrence or factor learned from t onwards reaches its features; the last epoch, just after the newest event,
is what serving reads. Everything is scikit-learn and scipy: the co-occurrence cosine of the binary user x document
matrix, and TruncatedSVD of the same matrix (the dot product of a user's and a document's factors is the model
input).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import sparse

from reranker.featureset import Collaborative


def epoch_times(timestamps: pd.Series, cfg: Collaborative) -> list[pd.Timestamp]:
    """Every `epoch_days` (spread wider when that would exceed `max_epochs`) from the first day, then one epoch just
    after the newest event."""
    ts = pd.to_datetime(timestamps, utc=True)
    first, last = ts.min().floor("D"), ts.max()
    span = max(1.0, (last - first).total_seconds() / 86400.0)
    step = max(cfg.epoch_days, math.ceil(span / max(1, cfg.max_epochs - 1)))
    epochs = []
    t = first + pd.Timedelta(days=step)
    while t <= last:
        epochs.append(t)
        t += pd.Timedelta(days=step)
    epochs.append((last + pd.Timedelta(seconds=1)).floor("s"))
    return [pd.Timestamp(e).as_unit("us") for e in epochs]


def _matrix(user_codes: np.ndarray, doc_idx: np.ndarray, n_users: int, n_docs: int) -> sparse.csr_matrix:
    X = sparse.csr_matrix((np.ones(len(user_codes)), (user_codes, doc_idx)), shape=(n_users, n_docs))
    X.data[:] = 1.0  # binary: repeated positives count once
    return X


def neighbours(X: sparse.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k cosine co-occurrence neighbours per document (self excluded): CSR (indptr, indices, similarities)."""
    co = (X.T @ X).tocsr().astype(np.float64)
    norms = np.sqrt(co.diagonal()).clip(min=1.0)
    co = sparse.diags(1.0 / norms) @ co @ sparse.diags(1.0 / norms)
    co.setdiag(0.0)
    co.eliminate_zeros()
    co = co.tocsr()
    indptr = [0]
    indices: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    for row in range(co.shape[0]):
        start, end = co.indptr[row], co.indptr[row + 1]
        cols, vals = co.indices[start:end], co.data[start:end]
        if len(vals) > k:
            keep = np.argpartition(-vals, k - 1)[:k]
            cols, vals = cols[keep], vals[keep]
        order = np.lexsort((cols, -vals))
        indices.append(cols[order].astype(np.int64))
        sims.append(vals[order])
        indptr.append(indptr[-1] + len(order))
    return (np.asarray(indptr, dtype=np.int64), np.concatenate(indices) if indices else np.zeros(0, np.int64),
            np.concatenate(sims) if sims else np.zeros(0))  # fmt: skip


def factors(X: sparse.csr_matrix, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(user factors, document factors), each padded to `n` columns: TruncatedSVD of the binary matrix, users
    as U*Sigma and documents as V, so that their dot product is the rank-n reconstruction."""
    from sklearn.decomposition import TruncatedSVD

    rank = min(n, min(X.shape) - 1)
    users = np.zeros((X.shape[0], n))
    docs = np.zeros((X.shape[1], n))
    if rank >= 1 and X.nnz:
        svd = TruncatedSVD(n_components=rank, algorithm="randomized", n_iter=5, random_state=seed)
        users[:, :rank] = svd.fit_transform(X)
        docs[:, :rank] = svd.components_.T
    return users, docs


def epoch_tables(positives: pd.DataFrame, documents: list[str], cfg: Collaborative, epochs: list[pd.Timestamp],
                 seed: int = 7) -> dict[str, pd.DataFrame]:  # fmt: skip
    """The collaborative tables, one block of rows per epoch (event_timestamp = the epoch): `document_neighbors`
    (neighbour document indexes and similarities), `document_factors` and `user_factors` (with the epoch's index).

    `positives`: user_id, document_id, timestamp of every positive event."""
    doc_index = pd.Index(documents)
    pos = positives.assign(doc=doc_index.get_indexer(positives["document_id"].astype(str)))
    pos = pos[pos["doc"] >= 0]
    ts = pd.to_datetime(pos["timestamp"], utc=True)
    out: dict[str, list[pd.DataFrame]] = {
        "document_neighbors": [],
        "document_factors": [],
        "user_factors": [],
    }
    n_docs = len(documents)
    for number, epoch in enumerate(epochs):
        before = pos[ts < epoch]
        if before.empty:
            continue
        users = pd.Index(before["user_id"].unique())
        X = _matrix(users.get_indexer(before["user_id"]), before["doc"].to_numpy(), len(users), n_docs)
        if cfg.covisitation:
            indptr, indices, sims = neighbours(X, cfg.neighbors)
            has = np.flatnonzero(np.diff(indptr) > 0)
            out["document_neighbors"].append(pd.DataFrame({
                "document_id": doc_index.take(has), "event_timestamp": epoch,
                "neighbors": [indices[indptr[r]:indptr[r + 1]] for r in has],
                "similarities": [sims[indptr[r]:indptr[r + 1]] for r in has],
            }))  # fmt: skip
        if cfg.factors:
            user_f, doc_f = factors(X, cfg.factors, seed)
            out["document_factors"].append(pd.DataFrame({"document_id": documents, "event_timestamp": epoch,
                                                         "factors": list(doc_f), "epoch": number}))  # fmt: skip
            out["user_factors"].append(pd.DataFrame({"user_id": users, "event_timestamp": epoch,
                                                     "factors": list(user_f), "epoch": number}))  # fmt: skip
    return {
        name: (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame())
        for name, parts in out.items()
    }
