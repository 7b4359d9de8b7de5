"""Ranking lists to train and evaluate on: (list_id, user_id, document_id, event_timestamp, first_stage_score,
label[, position, propensity]).

Two sources:
- **Logged lists** (served lists with impressions): one list per request_id; label 2 for a purchase/add to cart,
  1 for a click, 0 otherwise; position and propensity as logged; first-stage score = the logged score.
- **Retrieval lists** (ratings, no impressions; MovieLens): a rolling-origin temporal protocol. At each cut time T
  (every few days, at midnight), a retriever built only from events before T proposes the top-N documents the
  user has not interacted with before T. Labels come from the horizon [T, T + H): 2 for a rating of 5, 1 for 4, 0
  otherwise. A user is eligible at T with enough history before T and a positive in the horizon. Features are
  retrieved as of T (point in time), so nothing from T onwards reaches a list's features or candidates.
  Two retrievers: `covisit_popularity` (half the most co-visited with the user's positives, half the most popular)
  and `popularity_genre` (recent popularity + the user's genre match: a stronger first stage, harder to beat).
- **A global temporal cut** (`global_cut`): training lists from cuts whose horizon closes before the cut at a
  quantile of time, and one test list per eligible user at that cut, labelled by everything after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reranker.lake import LEARNING_COLUMNS


@dataclass(frozen=True)
class RetrievalProtocol:
    n_candidates: int = 100
    horizon_days: int = 21
    min_history: int = 5
    cut_every_days: int = 3
    popularity_window_days: int = 30
    first_cut_quantile: float = 0.15
    test_from_quantile: float = 0.55  # test lists: cuts at or after this quantile of event time
    retriever: str = "covisit_popularity"  # or "popularity_genre"

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"unknown retriever {self.retriever!r} (known: {RETRIEVERS})")


RETRIEVERS = ("covisit_popularity", "popularity_genre")


def has_logged_lists(events: pd.DataFrame) -> bool:
    imp = events[events["interaction_type"] == "impression"]
    return len(imp) > 0 and imp["request_id"].notna().mean() > 0.5


def _pairs_in(lists: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Which (list_id, document_id) rows of `lists` are among `pairs` (request_id, document_id): a left join on
    the two keys (no per-row key strings)."""
    marked = pairs.drop_duplicates().rename(columns={"request_id": "list_id"}).assign(_in=True)
    joined = lists[["list_id", "document_id"]].merge(marked, on=["list_id", "document_id"], how="left")
    return joined["_in"].notna().to_numpy()


def logged_lists(events: pd.DataFrame) -> pd.DataFrame:
    served = events["request_id"].notna()
    imp = events.loc[(events["interaction_type"] == "impression") & served,
                     [c for c in LEARNING_COLUMNS if c in events and c not in ("interaction_type", "value")]]  # fmt: skip
    imp = imp.drop_duplicates(["request_id", "document_id"])
    kinds = events.loc[served, ["request_id", "document_id", "interaction_type"]]
    clicked = kinds.loc[kinds["interaction_type"] == "click", ["request_id", "document_id"]]
    bought = kinds.loc[
        kinds["interaction_type"].isin(["purchase", "add_to_cart"]), ["request_id", "document_id"]
    ]
    del kinds
    lists = pd.DataFrame(
        {
            "list_id": imp["request_id"].to_numpy(),
            "user_id": imp["user_id"].to_numpy(),
            "document_id": imp["document_id"].to_numpy(),
            "event_timestamp": pd.to_datetime(imp["timestamp"], utc=True).to_numpy(),
            "first_stage_score": imp["score"].to_numpy(dtype=float),
            "position": imp["position"].to_numpy(),
            "propensity": imp["propensity"].to_numpy(dtype=float),
            "served_by_version": imp["model_version"].to_numpy(dtype=object),
            "query": imp["query"].to_numpy(dtype=object) if "query" in imp else None,
            "features_json": imp["features_json"].to_numpy(dtype=object) if "features_json" in imp else None,
            "context_json": imp["context_json"].to_numpy(dtype=object) if "context_json" in imp else None,
        }
    )
    del imp
    lists["label"] = 0.0
    lists.loc[_pairs_in(lists, clicked), "label"] = 1.0
    lists.loc[_pairs_in(lists, bought), "label"] = 2.0
    # no first-stage score logged: keep the served order
    lists["first_stage_score"] = lists["first_stage_score"].fillna(-lists["position"].astype(float))
    lists["event_timestamp"] = pd.to_datetime(lists["event_timestamp"], utc=True)
    return lists.sort_values(["event_timestamp", "list_id", "position"], kind="stable").reset_index(drop=True)


def cut_times(events: pd.DataFrame, protocol: RetrievalProtocol) -> list[pd.Timestamp]:
    ts = pd.to_datetime(events["timestamp"], utc=True)
    first = ts.quantile(protocol.first_cut_quantile).ceil("D")
    last = ts.max().floor("D") - pd.Timedelta(days=protocol.horizon_days)
    return list(pd.date_range(first, last, freq=f"{protocol.cut_every_days}D"))


def _covisit_scores(
    past_pos: pd.DataFrame, users: np.ndarray
) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
    """Item-item cosine co-visitation of positives before the cut; per eligible user, the sum of similarities
    of each item to the user's positives (users x items) and the item index."""
    from scipy import sparse

    items = pd.Index(past_pos["document_id"].unique())
    all_users = pd.Index(past_pos["user_id"].unique())
    X = sparse.csr_matrix(
        (
            np.ones(len(past_pos)),
            (all_users.get_indexer(past_pos["user_id"]), items.get_indexer(past_pos["document_id"])),
        ),
        shape=(len(all_users), len(items)),
    )
    X.data[:] = 1.0
    co = (X.T @ X).toarray()
    norms = np.sqrt(np.diag(co)).clip(min=1.0)
    sim = co / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    rows = X[all_users.get_indexer(users)]
    profile = np.asarray(rows.sum(axis=1)).ravel().clip(min=1.0)
    return np.asarray(rows @ sim) / np.sqrt(profile)[:, None], {d: i for i, d in enumerate(items)}, profile


def _pick_candidates(
    covisit: np.ndarray, popularity: np.ndarray, unseen: np.ndarray, n: int
) -> list[np.ndarray]:
    """Per user (row): up to n/2 unseen items by co-visitation, then unseen items by popularity, n in all.

    Stable sorts with the seen items keyed last keep ties in item order."""
    half = n // 2
    by_cv = np.argsort(np.where(unseen, -covisit, np.inf), axis=1, kind="stable")[:, :half]
    cv_ok = np.take_along_axis(unseen, by_cv, axis=1)
    rest = unseen.copy()
    np.put_along_axis(rest, by_cv, False, axis=1)
    by_pop = np.argsort(np.where(rest, -popularity[None, :], np.inf), axis=1, kind="stable")[:, :n]
    pop_ok = np.take_along_axis(rest, by_pop, axis=1)
    return [np.concatenate([by_cv[r][cv_ok[r]], by_pop[r][pop_ok[r]]])[:n] for r in range(len(unseen))]


def _genre_match(
    past_pos: pd.DataFrame, users: np.ndarray, docs: np.ndarray, genres: pd.Series
) -> np.ndarray:
    """(users x documents): the user's share of positives per genre before the cut, averaged over each document's
    genres (`genres`: document_id -> '|'-separated genres)."""
    cells = genres.reindex(docs).fillna("").astype(str).str.split("|")
    vocab = sorted({g for cell in cells for g in cell if g})
    index = {g: i for i, g in enumerate(vocab)}
    doc_g = np.zeros((len(docs), max(len(vocab), 1)))
    for row, cell in enumerate(cells):
        for g in cell:
            if g:
                doc_g[row, index[g]] = 1.0
    doc_g /= doc_g.sum(axis=1, keepdims=True).clip(min=1.0)
    of_user = pd.Index(users).get_indexer(past_pos["user_id"])
    of_doc = pd.Index(docs).get_indexer(past_pos["document_id"])
    ok = (of_user >= 0) & (of_doc >= 0)
    user_g = np.zeros((len(users), doc_g.shape[1]))
    np.add.at(user_g, of_user[ok], doc_g[of_doc[ok]])
    user_g /= user_g.sum(axis=1, keepdims=True).clip(min=1e-9)
    return user_g @ doc_g.T


def retrieval_lists(
    events: pd.DataFrame, protocol: RetrievalProtocol, progress: bool = False, catalog: pd.DataFrame | None = None,
    cuts: list[pd.Timestamp] | None = None, horizon_end: pd.Timestamp | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The first stage, per cut (every `protocol` cut, or the given `cuts`): from events before the cut, the
    `protocol.retriever`'s top-N documents the user has not seen, with its score (each part normalized by its
    best in the list). `horizon_end`: label everything from the cut to then (default: the protocol's horizon).
    `popularity_genre` needs the catalog's `categories`."""
    from tqdm import tqdm

    ev = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str).to_numpy(),
            "document_id": events["document_id"].astype(str).to_numpy(),
            "timestamp": pd.to_datetime(events["timestamp"], utc=True).to_numpy(),
            "value": events["value"].astype(float).to_numpy(),
        }
    )
    ev["timestamp"] = pd.to_datetime(ev["timestamp"], utc=True)
    genres = None
    if protocol.retriever == "popularity_genre":
        if catalog is None or "categories" not in catalog:
            raise ValueError("the popularity_genre retriever needs a catalog with categories")
        genres = catalog.assign(document_id=catalog["document_id"].astype(str)).set_index("document_id")[
            "categories"
        ]
        genres = genres.map(lambda v: "|".join(v) if isinstance(v, list | tuple | np.ndarray) else v)
    horizon = pd.Timedelta(days=protocol.horizon_days)
    window = pd.Timedelta(days=protocol.popularity_window_days)
    frames = []
    for cut in tqdm(cuts if cuts is not None else cut_times(events, protocol), desc="cut times",
                    disable=not progress):  # fmt: skip
        until = horizon_end if horizon_end is not None else cut + horizon
        past = ev[ev["timestamp"] < cut]
        future = ev[(ev["timestamp"] >= cut) & (ev["timestamp"] < until)]
        history = past.groupby("user_id").size()
        positives = future[future["value"] >= 4].groupby("user_id").size()
        eligible = history.index[history >= protocol.min_history].intersection(positives.index).to_numpy()
        past_pos = past[past["value"] >= 4]
        if len(eligible) == 0 or past_pos.empty:
            continue
        recent = past_pos[past_pos["timestamp"] >= cut - window]
        pop = (np.log1p(recent.groupby("document_id").size())
               .add(0.5 * np.log1p(past_pos.groupby("document_id").size()), fill_value=0.0))  # fmt: skip
        covisit, item_index, _ = _covisit_scores(past_pos, eligible)
        docs_all = np.array(list(item_index))
        pop_all = pop.reindex(docs_all, fill_value=0.0).to_numpy()
        unseen = np.ones(covisit.shape, dtype=bool)
        rows = pd.Index(eligible).get_indexer(past["user_id"])
        cols = pd.Index(docs_all).get_indexer(past["document_id"])
        hit = (rows >= 0) & (cols >= 0)
        unseen[rows[hit], cols[hit]] = False
        if genres is not None:  # recent popularity + genre match, one ranked list
            recent_pop = (
                np.log1p(recent.groupby("document_id").size()).reindex(docs_all, fill_value=0.0).to_numpy()
            )
            match = _genre_match(past_pos, eligible, docs_all, genres)
            combined = recent_pop[None, :] / max(recent_pop.max(), 1e-9) + match / match.max(
                axis=1, keepdims=True).clip(min=1e-9)  # fmt: skip
            order = np.argsort(np.where(unseen, -combined, np.inf), axis=1, kind="stable")[
                :, : protocol.n_candidates
            ]
            ok = np.take_along_axis(unseen, order, axis=1)
            picks = [order[r][ok[r]] for r in range(len(eligible))]
        else:
            picks = _pick_candidates(covisit, pop_all, unseen, protocol.n_candidates)
        sizes = np.array([len(p) for p in picks])
        user_row = np.repeat(np.arange(len(eligible)), sizes)
        item = np.concatenate(picks).astype(int)
        if genres is not None:
            score = combined[user_row, item]
        else:
            cand_cv, cand_pop = covisit[user_row, item], pop_all[item]
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            cv_max = np.maximum(np.maximum.reduceat(cand_cv, starts), 1e-9) if len(item) else cand_cv
            pop_max = np.maximum(np.maximum.reduceat(cand_pop, starts), 1e-9) if len(item) else cand_pop
            score = cand_cv / np.repeat(cv_max, sizes) + cand_pop / np.repeat(pop_max, sizes)
        users = eligible[user_row]
        block = pd.DataFrame({"list_id": users + f"@{cut.date()}", "user_id": users, "document_id": docs_all[item],
                              "event_timestamp": cut, "first_stage_score": score})  # fmt: skip
        grade = future.drop_duplicates(["user_id", "document_id"]).set_index(["user_id", "document_id"])[
            "value"
        ]
        values = grade.reindex(pd.MultiIndex.from_frame(block[["user_id", "document_id"]])).to_numpy()
        block["label"] = np.select([values >= 5, values >= 4], [2.0, 1.0], 0.0)
        frames.append(block)
    columns = ["list_id", "user_id", "document_id", "event_timestamp", "first_stage_score", "label"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def global_cut(events: pd.DataFrame, protocol: RetrievalProtocol, quantile: float = 0.8,
               catalog: pd.DataFrame | None = None, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(training lists, test lists) of one global temporal cut at the `quantile` of event time: training lists
    from the protocol's cuts whose label horizon closes before it, and one test list per eligible user at the cut
    itself, labelled by everything after it."""
    ts = pd.to_datetime(events["timestamp"], utc=True)
    cut = ts.quantile(quantile).ceil("D")
    horizon = pd.Timedelta(days=protocol.horizon_days)
    train_cuts = [c for c in cut_times(events, protocol) if c + horizon <= cut]
    train = retrieval_lists(events, protocol, progress, catalog, cuts=train_cuts)
    test = retrieval_lists(
        events, protocol, False, catalog, cuts=[cut], horizon_end=ts.max() + pd.Timedelta(seconds=1)
    )
    return train, test


def relevant_lists(lists: pd.DataFrame) -> pd.DataFrame:
    """Lists with at least one positive: the only ones LambdaRank and the metrics can learn from."""
    has = lists.groupby("list_id", sort=False)["label"].transform("max") > 0
    return lists[has].reset_index(drop=True)


def split_by_time(
    lists: pd.DataFrame, test_from: pd.Timestamp, horizon_days: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train lists are those whose labels were fully observed before test_from; test lists start at test_from."""
    ts = pd.to_datetime(lists["event_timestamp"], utc=True)
    train = lists[ts + pd.Timedelta(days=horizon_days) <= test_from]
    test = lists[ts >= test_from]
    return train.reset_index(drop=True), test.reset_index(drop=True)
