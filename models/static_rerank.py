"""The static rerank stage: a query-document model that needs no training data (the seed's `rerank`, and a valid
`fallback`). BM25 (Okapi, k1 1.2, b 0.75) or TF-IDF cosine of the query against each candidate's text, with term
statistics over the candidates themselves; ties (and every candidate, without a query or text) in first-stage order.

It implements the ranker interface: its inputs are `query.bm25` (the match, computed from the request by
`match_scores`) and `first_stage.score`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from models.ranker import feature_matrix

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern, lower-cased as its analyzer does
StaticModel = Literal["bm25", "tfidf"]


def tokens(text: str | None) -> list[str]:
    return TOKEN.findall(text.lower()) if text else []


def match_scores(query: str | None, texts: list[str | None], model: StaticModel = "bm25", k1: float = 1.2,
                 b: float = 0.75) -> np.ndarray:  # fmt: skip
    """Each text's match with the query (0 without a shared term; NaN for every text without a query)."""
    terms = set(tokens(query))
    n = len(texts)
    if not terms:
        return np.full(n, np.nan)
    docs = [tokens(t) for t in texts]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(terms.intersection(d))
    idf = {t: math.log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    out = np.zeros(n)
    if model == "bm25":
        lengths = np.array([len(d) for d in docs], dtype=float)
        avg = float(lengths.mean()) if n and lengths.mean() > 0 else 1.0
        for i, d in enumerate(docs):
            if not d:
                continue
            counts = Counter(w for w in d if w in terms)
            norm = k1 * (1 - b + b * lengths[i] / avg)
            out[i] = sum(idf[t] * c * (k1 + 1) / (c + norm) for t, c in counts.items())
        return out
    q_norm = math.sqrt(sum(idf[t] ** 2 for t in terms)) or 1.0
    for i, d in enumerate(docs):
        if not d:
            continue
        counts = Counter(d)
        weights = {
            w: (1 + math.log(c)) * idf.get(w, math.log(1.0 + (n + 0.5) / 1.5)) for w, c in counts.items()
        }
        d_norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
        out[i] = sum(weights[t] * idf[t] for t in terms if t in weights) / (d_norm * q_norm)
    return out


@dataclass
class StaticRanker:
    """Query-document match first, first-stage score second."""

    name: str = "rerank"
    model: StaticModel = "bm25"

    @property
    def feature_names(self) -> list[str]:
        return ["query.bm25", "first_stage.score"]

    def score(self, features: pd.DataFrame) -> np.ndarray:
        return self.score_matrix(feature_matrix(features, self.feature_names))

    def score_request(
        self, query: str | None, texts: list[str | None], first_stage: np.ndarray
    ) -> np.ndarray:
        """Scores of one list from the request itself."""
        X = np.column_stack([match_scores(query, texts, self.model), np.asarray(first_stage, dtype=float)])
        return self.score_matrix(X)

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        """The match (missing: 0), ties broken by the first-stage order (missing scores last, in order)."""
        match = np.nan_to_num(X[:, 0], nan=0.0)
        first = X[:, 1]
        n = len(match)
        order = np.lexsort((np.arange(n), np.where(np.isnan(first), np.inf, -np.nan_to_num(first))))
        tiebreak = np.empty(n)
        tiebreak[order] = np.arange(n, 0, -1) / (n + 1)  # in (0, 1): the first-stage best gets the most
        return match + 1e-6 * tiebreak
