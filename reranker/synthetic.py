"""A seeded synthetic world with known true relevance and position-biased clicks.

Users have category preferences, documents a category and a hidden quality, queries ask for a category. The true
relevance grade of (user, document, query) is a fixed function of those. A logging policy ranks candidates by a
noisy first-stage score with per-slot epsilon-greedy exploration and logs the exact probability of each slot's
choice (its propensity). Clicks follow the position-based model: examined with probability (1/(1+pos))**eta, then
clicked with a probability that grows with the true grade.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reranker.exploration import epsilon_greedy_slots

CLICK_PROB = np.array([0.05, 0.20, 0.50, 0.90])  # P(click | examined, grade)
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 7
    n_users: int = 2_000
    n_docs: int = 1_000
    n_categories: int = 12
    queries_per_category: int = 3
    n_candidates: int = 30
    list_size: int = 10
    epsilon: float = 0.2
    eta: float = 1.0
    first_stage_noise: float = 1.0
    days: int = 90
    start: datetime = field(default=START)


@dataclass
class SyntheticWorld:
    config: WorldConfig
    user_pref: np.ndarray  # (n_users, n_categories), rows sum to 1
    user_activity: np.ndarray  # (n_users,), sampling weights
    doc_category: np.ndarray  # (n_docs,)
    doc_quality: np.ndarray  # (n_docs,)
    doc_created: np.ndarray  # (n_docs,) days after start (negative: before)

    @classmethod
    def create(cls, config: WorldConfig) -> SyntheticWorld:
        rng = np.random.default_rng(config.seed)
        pref = rng.dirichlet(np.full(config.n_categories, 0.3), size=config.n_users)
        activity = rng.lognormal(0.0, 1.0, size=config.n_users)
        doc_cat = rng.integers(0, config.n_categories, size=config.n_docs)
        quality = rng.normal(0.0, 1.0, size=config.n_docs)
        created = rng.uniform(-365, config.days, size=config.n_docs)
        return cls(config, pref, activity / activity.sum(), doc_cat, quality, created)

    @property
    def n_queries(self) -> int:
        return self.config.n_categories * self.config.queries_per_category

    def query_category(self, query_idx: np.ndarray) -> np.ndarray:
        return query_idx // self.config.queries_per_category

    def latent(self, users: np.ndarray, docs: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Continuous true utility; arrays broadcast together."""
        cat = self.doc_category[docs]
        affinity = np.log(self.user_pref[users, cat] * self.config.n_categories + 1e-3)
        match = (cat == self.query_category(queries)).astype(float)
        return 0.8 * affinity + 0.8 * self.doc_quality[docs] + 1.5 * match

    def relevance(self, users: np.ndarray, docs: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """The true graded relevance 0..3 of (user, document, query)."""
        return np.digitize(self.latent(users, docs, queries), [0.5, 1.8, 3.0]).astype(np.int8)

    def first_stage_score(
        self, docs: np.ndarray, queries: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """What a non-personalized retriever knows: query match and a noisy view of quality."""
        match = (self.doc_category[docs] == self.query_category(queries)).astype(float)
        return (
            0.8 * self.doc_quality[docs]
            + 1.5 * match
            + rng.normal(0, self.config.first_stage_noise, docs.shape)
        )

    def examination(self, positions: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + positions)) ** self.config.eta

    def sample_requests(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Requests with candidates, first-stage scores and the logged epsilon-greedy list."""
        cfg = self.config
        users = rng.choice(cfg.n_users, size=n, p=self.user_activity)
        # A query in a category the user likes (most of the time).
        cats = np.array([rng.choice(cfg.n_categories, p=self.user_pref[u]) for u in users])
        queries = cats * cfg.queries_per_category + rng.integers(0, cfg.queries_per_category, size=n)
        # Candidates: half from the query's category, half anywhere, without repeats.
        cands = np.empty((n, cfg.n_candidates), dtype=np.int64)
        by_cat = [np.flatnonzero(self.doc_category == c) for c in range(cfg.n_categories)]
        half = cfg.n_candidates // 2
        for i in range(n):
            pool = by_cat[cats[i]]
            same = rng.choice(pool, size=min(half, len(pool)), replace=False)
            rest = rng.choice(cfg.n_docs, size=cfg.n_candidates * 2, replace=False)
            rest = rest[~np.isin(rest, same)][: cfg.n_candidates - len(same)]
            cands[i] = np.concatenate([same, rest])
        scores = self.first_stage_score(cands, queries[:, None], rng)
        shown, propensity = epsilon_greedy_slots(scores, cfg.list_size, cfg.epsilon, rng)
        t = rng.uniform(0, cfg.days * 86400.0, size=n)
        return {
            "users": users,
            "queries": queries,
            "candidates": cands,
            "scores": scores,
            "shown": shown,  # (n, list_size) indexes into candidates
            "propensity": propensity,  # (n, list_size)
            "t": np.sort(t),
        }


def simulate_clicks(
    world: SyntheticWorld, req: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks (n, list_size) under the position-based model, and the true grades of the shown documents."""
    docs = np.take_along_axis(req["candidates"], req["shown"], axis=1)
    grades = world.relevance(req["users"][:, None], docs, req["queries"][:, None])
    positions = np.arange(docs.shape[1])[None, :]
    examined = rng.random(docs.shape) < world.examination(positions)
    clicked = examined & (rng.random(docs.shape) < CLICK_PROB[grades])
    return clicked, grades


def documents_frame(world: SyntheticWorld) -> pd.DataFrame:
    cfg = world.config
    return pd.DataFrame(
        {
            "document_id": [f"d{i}" for i in range(cfg.n_docs)],
            "title": [f"Document {i}" for i in range(cfg.n_docs)],
            "categories": [f"cat{c:02d}" for c in world.doc_category],
            "created_at": [cfg.start + timedelta(days=float(d)) for d in world.doc_created],
        }
    )


def event_chunks(
    world: SyntheticWorld, n_events: int, chunk_requests: int = 20_000
) -> Iterator[pd.DataFrame]:
    """Interaction events (impressions, clicks, purchases), exactly n_events of them; each chunk is in time order
    and spans the whole window (ingestion partitions by date, so chunk order does not matter)."""
    cfg = world.config
    rng = np.random.default_rng(cfg.seed + 1)
    emitted = 0
    req_offset = 0
    while emitted < n_events:
        req = world.sample_requests(rng, chunk_requests)
        clicked, grades = simulate_clicks(world, req, rng)
        purchased = clicked & (rng.random(clicked.shape) < 0.1 * grades)
        frame = _events_frame(world, req, clicked, purchased, req_offset)
        frame = frame.iloc[: n_events - emitted]
        emitted += len(frame)
        req_offset += chunk_requests
        yield frame


def _events_frame(
    world: SyntheticWorld,
    req: dict[str, np.ndarray],
    clicked: np.ndarray,
    purchased: np.ndarray,
    req_offset: int,
) -> pd.DataFrame:
    cfg = world.config
    n, k = req["shown"].shape
    docs = np.take_along_axis(req["candidates"], req["shown"], axis=1)
    scores = np.take_along_axis(req["scores"], req["shown"], axis=1)
    req_idx = np.repeat(np.arange(n) + req_offset, k)
    slot = np.tile(np.arange(k), n)
    base_t = pd.Timestamp(cfg.start) + pd.to_timedelta(np.repeat(req["t"], k), unit="s")
    base = pd.DataFrame(
        {
            "request_id": [f"syn{cfg.seed}-r{r}" for r in req_idx],
            "user_id": np.char.add("u", np.repeat(req["users"], k).astype(str)),
            "document_id": np.char.add("d", docs.ravel().astype(str)),
            "query": np.char.add("q", np.repeat(req["queries"], k).astype(str)),
            "position": slot,
            "propensity": req["propensity"].ravel(),
            "score": scores.ravel(),
            "timestamp": base_t,
            "model_version": "logging-policy",
            "variant": "logging",
        }
    )
    parts = [base.assign(interaction_type="impression")]
    click_mask = clicked.ravel()
    parts.append(
        base[click_mask].assign(
            interaction_type="click", timestamp=base_t[click_mask] + pd.Timedelta(seconds=5)
        )
    )
    buy_mask = purchased.ravel()
    parts.append(
        base[buy_mask].assign(
            interaction_type="purchase", timestamp=base_t[buy_mask] + pd.Timedelta(seconds=60)
        )
    )
    events = pd.concat(parts, ignore_index=True)
    events["event_id"] = (
        events["request_id"] + "-" + events["position"].astype(str) + "-" + events["interaction_type"]
    )
    return events.sort_values(["timestamp", "request_id", "position"], kind="stable").reset_index(drop=True)


def write_dataset(
    world: SyntheticWorld, n_events: int, out_dir: Path, progress: bool = True
) -> dict[str, object]:
    """Write events as Parquet parts (bounded memory), documents and the world's parameters."""
    from tqdm import tqdm

    events_dir = out_dir / "interactions"
    events_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    with tqdm(total=n_events, unit="ev", disable=not progress, desc="synthetic events") as bar:
        for i, chunk in enumerate(event_chunks(world, n_events)):
            tmp = events_dir / f".part-{i:05d}.parquet.tmp"
            chunk.to_parquet(tmp, index=False)
            tmp.replace(events_dir / f"part-{i:05d}.parquet")
            written += len(chunk)
            bar.update(len(chunk))
    documents_frame(world).to_parquet(out_dir / "documents.parquet", index=False)
    meta = {"config": {**asdict(world.config), "start": world.config.start.isoformat()}, "events": written}
    (out_dir / "world.json").write_text(json.dumps(meta, indent=2))
    return meta


def simulate_traffic(
    world: SyntheticWorld,
    n_requests: int,
    rerank: Callable[[dict[str, Any]], dict[str, Any]],
    interact: Callable[[list[dict[str, Any]]], None],
    model_id: str,
    rng: np.random.Generator,
    top_n: int = 10,
    exploration_rate: float = 0.1,
) -> pd.DataFrame:
    """Simulated users calling the stage: each request sends a user's query and its candidates with first-stage
    scores to `rerank` (the stage's JSON contract), examines the returned list with position bias, clicks what it
    truly likes, and posts the clicks to `interact`. One row per request: variant, version, clicks, shown."""
    req = world.sample_requests(rng, n_requests)
    rows = []
    for i in range(n_requests):
        user, query, cands = req["users"][i], req["queries"][i], req["candidates"][i]
        body = {"model_id": model_id, "user_id": f"u{user}", "query": f"q{query}", "top_n": top_n,
                "exploration_rate": exploration_rate,
                "candidates": [{"document_id": f"d{d}", "score": float(s)}
                               for d, s in zip(cands, req["scores"][i], strict=True)]}  # fmt: skip
        response = rerank(body)
        shown = np.array([int(r["document_id"][1:]) for r in response["results"]], dtype=np.int64)
        grades = world.relevance(np.full(len(shown), user), shown, np.full(len(shown), query))
        examined = rng.random(len(shown)) < world.examination(np.arange(len(shown)))
        clicked = examined & (rng.random(len(shown)) < CLICK_PROB[grades])
        now = datetime.now(UTC).isoformat()
        events = [{"event_id": f"{response['request_id']}-{pos}-click", "request_id": response["request_id"],
                   "interaction_type": "click", "user_id": f"u{user}", "document_id": f"d{shown[pos]}",
                   "query": f"q{query}", "position": int(pos), "timestamp": now}
                  for pos in np.flatnonzero(clicked)]  # fmt: skip
        if events:
            interact(events)
        rows.append({"request_id": response["request_id"], "user": int(user), "variant": response["variant"],
                     "model_version": response.get("model_version"), "served_by": response["served_by"],
                     "shown": len(shown), "clicks": int(clicked.sum()),
                     "true_gain": float(CLICK_PROB[grades].dot(world.examination(np.arange(len(shown)))))})  # fmt: skip
    return pd.DataFrame(rows)
