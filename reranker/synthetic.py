"""A seeded synthetic world with known true relevance and position-biased clicks.

Users have category preferences, documents a category and a hidden quality, queries ask for a category. The true
relevance grade of (user, document, query) is a fixed function of those. A logging policy ranks candidates by a
noisy first-stage score with per-slot epsilon-greedy exploration and logs the exact probability of each slot's
choice (its propensity). Clicks follow the position-based model: examined with probability (1/(1+pos))**eta, then
clicked with a probability that grows with the true grade.

A shop (`WorldConfig.shop()`) adds what a real catalog and request carry, and makes it matter: each document has a
brand, a price, an observed quality score and a title of words of its category; users have brand tastes, a budget
and a device; queries are words; each shown candidate is in stock or not. The true utility then also grows with the
user's taste for the brand, falls with the price above the user's budget (more on mobile), rises when the query word
is in the title, and drops for items out of stock. The extra attributes come from their own random streams, so a
world with their weights at zero logs exactly the events it logged before they existed.
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
# words of the shop's categories (three per category, one of them in each title) and of its brands
NOUNS = ["kettle", "teapot", "mug", "boots", "sneakers", "sandals", "lamp", "lantern", "torch", "jacket", "parka",
         "vest", "novel", "atlas", "journal", "drill", "wrench", "saw", "tent", "tarp", "hammock", "blender", "mixer",
         "grinder", "helmet", "gloves", "goggles", "pillow", "duvet", "blanket", "camera", "tripod", "lens", "racket",
         "shuttle", "net", "guitar", "ukulele", "banjo", "watch", "compass", "clock", "backpack", "duffel", "tote",
         "chair", "stool", "bench"]  # fmt: skip
ADJECTIVES = ["classic", "compact", "deluxe", "rugged", "light", "smart", "urban", "vintage", "pro", "eco"]
BRANDS = ["acme", "borealis", "cobalt", "dune", "ember", "fjord", "granite", "halcyon", "ivory", "juniper",
          "kestrel", "lumen", "mosaic", "nimbus", "onyx", "pioneer", "quartz", "redwood", "summit", "tundra",
          "umber", "vertex", "willow", "xenon", "yarrow", "zephyr"]  # fmt: skip
DEVICES = ["mobile", "desktop"]


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
    # the shop's attributes and their weights in the true utility (0: the attribute exists but does not matter)
    n_brands: int = 20
    brand_weight: float = 0.0
    price_weight: float = 0.0
    mobile_price_factor: float = 1.5  # price above budget weighs this much more on mobile
    title_weight: float = 0.0  # the query word in the title
    stock_weight: float = 0.0  # utility lost when out of stock
    in_stock_rate: float = 0.9
    text_queries: bool = False  # queries logged as words ("boots") rather than ids ("q4")

    @classmethod
    def shop(cls, seed: int = 7, **overrides: Any) -> WorldConfig:
        """A shop whose catalog and requests carry what its relevance depends on (see the module docstring)."""
        values: dict[str, Any] = {"seed": seed, "brand_weight": 0.9, "price_weight": 0.9, "title_weight": 0.8,
                                  "stock_weight": 2.0, "text_queries": True, "n_candidates": 50}  # fmt: skip
        return cls(**{**values, **overrides})

    @property
    def is_shop(self) -> bool:
        return bool(self.brand_weight or self.price_weight or self.title_weight or self.stock_weight)


@dataclass
class SyntheticWorld:
    config: WorldConfig
    user_pref: np.ndarray  # (n_users, n_categories), rows sum to 1
    user_activity: np.ndarray  # (n_users,), sampling weights
    doc_category: np.ndarray  # (n_docs,)
    doc_quality: np.ndarray  # (n_docs,)
    doc_created: np.ndarray  # (n_docs,) days after start (negative: before)
    # the shop's attributes (from their own random stream)
    doc_brand: np.ndarray  # (n_docs,)
    doc_price: np.ndarray  # (n_docs,)
    doc_quality_score: np.ndarray  # (n_docs,) the catalog's noisy view of quality
    doc_noun: np.ndarray  # (n_docs,) which of its category's 3 words the title carries
    doc_title: list[str]
    user_brand: np.ndarray  # (n_users, n_brands), rows sum to 1
    user_budget: np.ndarray  # (n_users,)
    user_mobile: np.ndarray  # (n_users,) bool

    @classmethod
    def create(cls, config: WorldConfig) -> SyntheticWorld:
        rng = np.random.default_rng(config.seed)
        pref = rng.dirichlet(np.full(config.n_categories, 0.3), size=config.n_users)
        activity = rng.lognormal(0.0, 1.0, size=config.n_users)
        doc_cat = rng.integers(0, config.n_categories, size=config.n_docs)
        quality = rng.normal(0.0, 1.0, size=config.n_docs)
        created = rng.uniform(-365, config.days, size=config.n_docs)
        shop = np.random.default_rng(
            [config.seed, 1]
        )  # the shop's own stream: the streams above stay as they were
        n_brands = min(config.n_brands, len(BRANDS))
        brand = shop.integers(0, n_brands, size=config.n_docs)
        brand_premium = shop.normal(0.0, 0.35, size=n_brands)
        base_price = shop.lognormal(3.2, 0.5, size=config.n_categories)
        price = np.round(base_price[doc_cat] * np.exp(brand_premium[brand] + 0.25 * quality
                                                      + shop.normal(0, 0.3, config.n_docs)), 2)  # fmt: skip
        quality_score = np.round(np.clip(3.0 + 0.8 * quality + shop.normal(0, 0.4, config.n_docs), 1, 5), 1)
        noun = shop.integers(0, config.queries_per_category, size=config.n_docs)
        adjective = shop.integers(0, len(ADJECTIVES), size=config.n_docs)
        titles = [f"{BRANDS[b].title()} {ADJECTIVES[a]} {_noun(c, w, config)}"
                  for b, a, c, w in zip(brand, adjective, doc_cat, noun, strict=True)]  # fmt: skip
        user_brand = shop.dirichlet(np.full(n_brands, 0.3), size=config.n_users)
        budget = shop.lognormal(3.4, 0.6, size=config.n_users)
        mobile = shop.random(config.n_users) < 0.6
        return cls(config, pref, activity / activity.sum(), doc_cat, quality, created, brand, price, quality_score,
                   noun, titles, user_brand, budget, mobile)  # fmt: skip

    @property
    def n_queries(self) -> int:
        return self.config.n_categories * self.config.queries_per_category

    def query_category(self, query_idx: np.ndarray) -> np.ndarray:
        return query_idx // self.config.queries_per_category

    def query_text(self, query_idx: np.ndarray) -> np.ndarray:
        """What a user types: the query's word (shops with text queries), else its id."""
        cfg = self.config
        if not cfg.text_queries:
            return np.char.add("q", np.asarray(query_idx).astype(str))
        words = np.array([_noun(q // cfg.queries_per_category, q % cfg.queries_per_category, cfg)
                          for q in range(self.n_queries)])  # fmt: skip
        return words[np.asarray(query_idx)]

    def latent(self, users: np.ndarray, docs: np.ndarray, queries: np.ndarray,
               in_stock: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Continuous true utility; arrays broadcast together (`in_stock`: 1 where shown in stock, default all)."""
        cfg = self.config
        cat = self.doc_category[docs]
        affinity = np.log(self.user_pref[users, cat] * cfg.n_categories + 1e-3)
        match = (cat == self.query_category(queries)).astype(float)
        utility = 0.8 * affinity + 0.8 * self.doc_quality[docs] + 1.5 * match
        if cfg.brand_weight:
            brand = self.user_brand[users, self.doc_brand[docs]] * self.user_brand.shape[1]
            utility = utility + cfg.brand_weight * np.log(brand + 1e-2)
        if cfg.price_weight:
            over = np.maximum(0.0, np.log(self.doc_price[docs] / self.user_budget[users]))
            factor = np.where(self.user_mobile[users], cfg.mobile_price_factor, 1.0)
            utility = utility - cfg.price_weight * factor * over
        if cfg.title_weight:
            said = match * (self.doc_noun[docs] == np.asarray(queries) % cfg.queries_per_category)
            utility = utility + cfg.title_weight * said
        if cfg.stock_weight and in_stock is not None:
            utility = utility - cfg.stock_weight * (1.0 - in_stock)
        return utility

    def relevance(self, users: np.ndarray, docs: np.ndarray, queries: np.ndarray,
                  in_stock: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """The true graded relevance 0..3 of (user, document, query[, in stock])."""
        return np.digitize(self.latent(users, docs, queries, in_stock), [0.5, 1.8, 3.0]).astype(np.int8)

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

    def sample_requests(self, rng: np.random.Generator, n: int,
                        extra: np.random.Generator | None = None) -> dict[str, np.ndarray]:  # fmt: skip
        """Requests with candidates, first-stage scores and the logged epsilon-greedy list; `extra` draws what the
        shop adds (whether each candidate is in stock), so that `rng`'s stream is the same with or without it."""
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
        # without `extra`, a stream seeded from rng's state (read, not advanced)
        stock_rng = (
            extra
            if extra is not None
            else np.random.default_rng([cfg.seed, 2, int(rng.bit_generator.state["state"]["state"]) % 2**63])
        )
        in_stock = (stock_rng.random(cands.shape) < cfg.in_stock_rate).astype(float)
        return {
            "users": users,
            "queries": queries,
            "candidates": cands,
            "scores": scores,
            "shown": shown,  # (n, list_size) indexes into candidates
            "propensity": propensity,  # (n, list_size)
            "t": np.sort(t),
            "in_stock": in_stock,  # (n, n_candidates)
        }


def simulate_clicks(
    world: SyntheticWorld, req: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks (n, list_size) under the position-based model, and the true grades of the shown documents."""
    docs = np.take_along_axis(req["candidates"], req["shown"], axis=1)
    stock = np.take_along_axis(req["in_stock"], req["shown"], axis=1)
    grades = world.relevance(req["users"][:, None], docs, req["queries"][:, None], stock)
    positions = np.arange(docs.shape[1])[None, :]
    examined = rng.random(docs.shape) < world.examination(positions)
    clicked = examined & (rng.random(docs.shape) < CLICK_PROB[grades])
    return clicked, grades


def _noun(category: int, word: int, cfg: WorldConfig) -> str:
    return NOUNS[(category * cfg.queries_per_category + word) % len(NOUNS)]


def judged_requests(world: SyntheticWorld, n: int, start: datetime, end: datetime, rng: np.random.Generator
                    ) -> pd.DataFrame:  # fmt: skip
    """Fresh requests between `start` and `end` with every candidate and its true grade (`label`), in the shape of
    logged lists (query, the candidate's request features, the request's context): what a ranker is judged on."""
    req = world.sample_requests(rng, n, np.random.default_rng([world.config.seed, 4]))
    cands = req["candidates"]
    n_req, m = cands.shape
    grades = world.relevance(req["users"][:, None], cands, req["queries"][:, None], req["in_stock"])
    span = (pd.Timestamp(end) - pd.Timestamp(start)).total_seconds()
    times = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.uniform(0, span, n_req)), unit="s")
    users = np.repeat(req["users"], m)
    frame = pd.DataFrame({
        "list_id": np.repeat([f"judged-{i}" for i in range(n_req)], m),
        "user_id": np.char.add("u", users.astype(str)),
        "document_id": np.char.add("d", cands.ravel().astype(str)),
        "event_timestamp": np.repeat(times, m),
        "first_stage_score": req["scores"].ravel(),
        "label": grades.ravel().astype(float),
        "query": world.query_text(np.repeat(req["queries"], m)),
    })  # fmt: skip
    if world.config.is_shop:
        frame["features_json"] = [json.dumps({"in_stock": float(v)}) for v in req["in_stock"].ravel()]
        frame["context_json"] = [json.dumps({"device": DEVICES[0] if mobile else DEVICES[1]})
                                 for mobile in world.user_mobile[users]]  # fmt: skip
    return frame


def true_grades(world: SyntheticWorld, frame: pd.DataFrame) -> np.ndarray:
    """The true grade of logged rows (user_id `u<i>`, document_id `d<j>`, the query as logged, in_stock in
    features_json when the shop logs it)."""
    queries = {str(t): q for q, t in enumerate(world.query_text(np.arange(world.n_queries)))}
    users = frame["user_id"].str[1:].astype(int).to_numpy()
    docs = frame["document_id"].str[1:].astype(int).to_numpy()
    q = frame["query"].map(queries).to_numpy(dtype=np.int64)
    stock = None
    if "features_json" in frame and frame["features_json"].notna().any():
        stock = frame["features_json"].map(lambda v: json.loads(v).get("in_stock", 1.0) if isinstance(v, str)
                                           else 1.0).to_numpy(dtype=float)  # fmt: skip
    return world.relevance(users, docs, q, stock).astype(float)


def documents_frame(world: SyntheticWorld) -> pd.DataFrame:
    """The catalog: a shop's has brand, price, quality and word titles beside categories and creation time."""
    cfg = world.config
    frame = pd.DataFrame(
        {
            "document_id": [f"d{i}" for i in range(cfg.n_docs)],
            "title": world.doc_title if cfg.is_shop else [f"Document {i}" for i in range(cfg.n_docs)],
            "categories": [f"cat{c:02d}" for c in world.doc_category],
            "created_at": [cfg.start + timedelta(days=float(d)) for d in world.doc_created],
        }
    )
    if cfg.is_shop:
        frame["brand"] = [BRANDS[b] for b in world.doc_brand]
        frame["price"] = world.doc_price
        frame["quality"] = world.doc_quality_score
    return frame


def event_chunks(
    world: SyntheticWorld, n_events: int, chunk_requests: int = 20_000
) -> Iterator[pd.DataFrame]:
    """Interaction events (impressions, clicks, purchases), exactly n_events of them; each chunk is in time order
    and spans the whole window (ingestion partitions by date, so chunk order does not matter)."""
    cfg = world.config
    rng = np.random.default_rng(cfg.seed + 1)
    extra = np.random.default_rng([cfg.seed, 3])
    emitted = 0
    req_offset = 0
    while emitted < n_events:
        req = world.sample_requests(rng, chunk_requests, extra)
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
            "query": world.query_text(np.repeat(req["queries"], k)),
            "position": slot,
            "propensity": req["propensity"].ravel(),
            "score": scores.ravel(),
            "timestamp": base_t,
            "model_version": "logging-policy",
            "variant": "logging",
        }
    )
    if cfg.is_shop:  # what the shop's caller sends: each candidate's stock, the user's device
        stock = np.take_along_axis(req["in_stock"], req["shown"], axis=1).ravel()
        base["features"] = [{"in_stock": float(s)} for s in stock]
        devices = np.where(world.user_mobile[np.repeat(req["users"], k)], DEVICES[0], DEVICES[1])
        base["context"] = [{"device": str(d)} for d in devices]
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
    query_text = world.query_text(req["queries"])
    shop = world.config.is_shop
    rows = []
    for i in range(n_requests):
        user, query, cands = req["users"][i], req["queries"][i], req["candidates"][i]
        stock = dict(zip(cands.tolist(), req["in_stock"][i].tolist(), strict=True))
        body: dict[str, Any] = {"model_id": model_id, "user_id": f"u{user}", "query": str(query_text[i]), "top_n": top_n,
                "exploration_rate": exploration_rate,
                "candidates": [{"document_id": f"d{d}", "score": float(s),
                                **({"features": {"in_stock": stock[d]}} if shop else {})}
                               for d, s in zip(cands, req["scores"][i], strict=True)]}  # fmt: skip
        if shop:
            body["context"] = {"device": DEVICES[0] if world.user_mobile[user] else DEVICES[1]}
        response = rerank(body)
        shown = np.array([int(r["document_id"][1:]) for r in response["results"]], dtype=np.int64)
        grades = world.relevance(np.full(len(shown), user), shown, np.full(len(shown), query),
                                 np.array([stock[d] for d in shown.tolist()]))  # fmt: skip
        examined = rng.random(len(shown)) < world.examination(np.arange(len(shown)))
        clicked = examined & (rng.random(len(shown)) < CLICK_PROB[grades])
        now = datetime.now(UTC).isoformat()
        events = [{"event_id": f"{response['request_id']}-{pos}-click", "request_id": response["request_id"],
                   "interaction_type": "click", "user_id": f"u{user}", "document_id": f"d{shown[pos]}",
                   "query": str(query_text[i]), "position": int(pos), "timestamp": now}
                  for pos in np.flatnonzero(clicked)]  # fmt: skip
        if events:
            interact(events)
        rows.append({"request_id": response["request_id"], "user": int(user), "variant": response["variant"],
                     "model_version": response.get("model_version"), "served_by": response["served_by"],
                     "shown": len(shown), "clicks": int(clicked.sum()),
                     "true_gain": float(CLICK_PROB[grades].dot(world.examination(np.arange(len(shown)))))})  # fmt: skip
    return pd.DataFrame(rows)
