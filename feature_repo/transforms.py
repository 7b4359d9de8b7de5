"""Pure pandas transforms: lake interactions + catalog -> point-in-time snapshot tables for Feast.

A snapshot row of an entity at time t holds features computed only from events strictly before t. Snapshots are
taken at the end of each day the entity was active (t = next midnight) and again when a recent window expires
(t = next midnight + window), so Feast's point-in-time join picks, for a request at time r, the newest snapshot
with t <= r: it never sees an event at or after r's day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reranker.contracts import POSITIVE_RATING, POSITIVE_TYPES

N_CATEGORY_SLOTS = 20
USER_WINDOW_DAYS = 30
DOC_WINDOW_DAYS = 7
PRIOR_STRENGTH = 10.0
CAT_COLS = [f"doc_cat_{i:02d}" for i in range(N_CATEGORY_SLOTS)]
AFF_COLS = [f"user_aff_{i:02d}" for i in range(N_CATEGORY_SLOTS)]

USER_ACTIVITY = ["user_n_events", "user_n_positive", "user_positive_rate", "user_n_events_30d",
                 "user_n_positive_30d", "user_mean_value", "user_tenure_days"]  # fmt: skip
DOC_POPULARITY = ["doc_n_exposures", "doc_n_positive", "doc_n_exposures_7d", "doc_n_positive_7d"]
DOC_CTR = ["doc_ctr_smoothed", "doc_mean_value"]
DOC_METADATA = ["doc_created_days", *CAT_COLS]
# Computed per request from the features above and the request itself (same code in training and serving).
# Within-list percentile ranks: counts grow over time, so a tree's absolute thresholds drift; ranks among the
# request's own candidates do not.
LIST_RANKED = ["doc_n_positive", "doc_n_positive_7d", "doc_n_exposures_7d", "doc_ctr_smoothed", "doc_mean_value",
               "doc_age_days", "user_doc_affinity", "user_doc_affinity_max"]  # fmt: skip
REQUEST_FEATURES = ["first_stage_score", "first_stage_rank", "user_doc_affinity", "user_doc_affinity_max",
                    "doc_age_days", *[f"{c}_list_pct" for c in LIST_RANKED]]  # fmt: skip


@dataclass(frozen=True)
class CategoryVocabulary:
    categories: tuple[str, ...]

    @classmethod
    def from_catalog(cls, catalog: pd.DataFrame) -> CategoryVocabulary:
        counts = catalog["categories"].fillna("").str.split("|").explode().str.strip()
        counts = counts[counts != ""].value_counts()
        ordered = sorted(counts.index, key=lambda c: (-counts[c], c))
        return cls(tuple(ordered[: N_CATEGORY_SLOTS - 1]))

    def multi_hot(self, categories: pd.Series) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.categories)}
        out = np.zeros((len(categories), N_CATEGORY_SLOTS), dtype=np.float64)
        for row, value in enumerate(categories.fillna("")):
            for cat in str(value).split("|"):
                cat = cat.strip()
                if cat:
                    out[row, index.get(cat, N_CATEGORY_SLOTS - 1)] = 1.0
        return out


def positive_flags(kind: pd.Series, value: pd.Series) -> pd.Series:
    """What counts as a positive signal: a click, add to cart or purchase, or a rating of at least 4."""
    return kind.isin([t.value for t in POSITIVE_TYPES]) | (
        (kind == "rating") & (value.astype(float) >= POSITIVE_RATING)
    )


def label_events(events: pd.DataFrame) -> pd.DataFrame:
    """Flags per event: exposure (impression or rating), engaged (click or rating >= 4), positive (engaged or
    conversion), plus the day it belongs to."""
    kind = events["interaction_type"]
    value = events["value"].astype(float) if "value" in events else pd.Series(np.nan, index=events.index)
    rating = kind == "rating"
    out = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str),
            "document_id": events["document_id"].astype(str),
            "timestamp": pd.to_datetime(events["timestamp"], utc=True).dt.as_unit("ns"),
            "exposure": (kind == "impression") | rating,
            "engaged": (kind == "click") | (rating & (value >= POSITIVE_RATING)),
            "conversion": kind.isin(["purchase", "add_to_cart"]),
            "rated": rating & value.notna(),
            "value": value.where(rating, np.nan),
        }
    )
    out["positive"] = positive_flags(kind, value)
    out["value_sum"] = out["value"].fillna(0.0)
    out["value_n"] = out["value"].notna().astype(float)
    out["day"] = out["timestamp"].dt.floor("D")
    return out


def _snapshots(daily: pd.DataFrame, key: str, window_days: int) -> pd.DataFrame:
    """Cumulative and windowed sums of the daily table's numeric columns at each snapshot time."""
    sums = [c for c in daily.columns if c not in (key, "day")]
    daily = daily.sort_values([key, "day"])
    cum = daily[[key, "day"]].copy()
    cum[sums] = daily.groupby(key, sort=False)[sums].cumsum()
    window = pd.Timedelta(days=window_days)
    one = pd.Timedelta(days=1)
    times = pd.concat(
        [daily[[key]].assign(event_timestamp=daily["day"] + one),
         daily[[key]].assign(event_timestamp=daily["day"] + one + window)]
    ).drop_duplicates()  # fmt: skip
    times = times.sort_values("event_timestamp").reset_index(drop=True)
    cum_sorted = cum.sort_values("day")
    at_t = pd.merge_asof(times, cum_sorted, left_on="event_timestamp", right_on="day", by=key,
                         allow_exact_matches=False)  # fmt: skip
    before = pd.merge_asof(times.assign(_w=times["event_timestamp"] - window), cum_sorted, left_on="_w",
                           right_on="day", by=key, allow_exact_matches=False)  # fmt: skip
    out = at_t[[key, "event_timestamp"]].copy()
    for c in sums:
        now = at_t[c].fillna(0.0).to_numpy()
        out[c] = now
        out[f"{c}__w"] = now - before[c].fillna(0.0).to_numpy()
    first = daily.groupby(key)["day"].min()
    out["_first_day"] = out[key].map(first)
    return out


def _global_rate(labelled: pd.DataFrame, times: pd.Series, num: str, den: str) -> np.ndarray:
    """The global ratio num/den over all events before each time (a prior that never looks ahead)."""
    daily = labelled.groupby("day")[[num, den]].sum().sort_index().cumsum().reset_index()
    frame = pd.DataFrame({"t": pd.to_datetime(times, utc=True).dt.as_unit("ns").to_numpy()}).reset_index()
    merged = pd.merge_asof(
        frame.sort_values("t"), daily, left_on="t", right_on="day", allow_exact_matches=False
    )
    merged = merged.sort_values("index")
    rate = merged[num].fillna(0.0) / merged[den].fillna(0.0).clip(lower=1.0)
    return rate.fillna(0.5).to_numpy()


def _daily_snapshots(events: pd.DataFrame, key: str, sums: list[str], window_days: int) -> pd.DataFrame:
    daily = events.groupby([key, "day"], as_index=False)[sums].sum()
    return _snapshots(daily, key, window_days)


def _smoothed(num: pd.Series, den: pd.Series, prior: np.ndarray) -> pd.Series:
    """(num + k * prior) / (den + k): a rate pulled towards the global one when there is little evidence."""
    return (num + PRIOR_STRENGTH * prior) / (den + PRIOR_STRENGTH)


def _mean_value(snap: pd.DataFrame) -> pd.Series:
    return (snap["value_sum"] / snap["value_n"]).where(snap["value_n"] > 0)


def user_tables(labelled: pd.DataFrame, catalog: pd.DataFrame, vocab: CategoryVocabulary) -> pd.DataFrame:
    """One frame of user snapshots with activity and category-affinity features."""
    cats = pd.DataFrame(vocab.multi_hot(catalog["categories"]), columns=AFF_COLS)
    cats["document_id"] = catalog["document_id"].astype(str).to_numpy()
    ev = labelled.merge(cats, on="document_id", how="left").fillna({c: 0.0 for c in AFF_COLS})
    for c in AFF_COLS:
        ev[c] = ev[c] * ev["positive"]
    ev["n_events"] = 1.0
    sums = ["n_events", "positive", "exposure", "value_sum", "value_n", *AFF_COLS]
    snap = _daily_snapshots(ev, "user_id", sums, USER_WINDOW_DAYS)
    prior = _global_rate(labelled, snap["event_timestamp"], "positive", "exposure")
    out = snap[["user_id", "event_timestamp"]].copy()
    out["user_n_events"] = snap["n_events"]
    out["user_n_positive"] = snap["positive"]
    out["user_positive_rate"] = _smoothed(snap["positive"], snap["exposure"], prior)
    out["user_n_events_30d"] = snap["n_events__w"]
    out["user_n_positive_30d"] = snap["positive__w"]
    out["user_mean_value"] = _mean_value(snap)
    out["user_tenure_days"] = (snap["event_timestamp"] - snap["_first_day"]).dt.total_seconds() / 86400.0
    aff = snap[AFF_COLS].to_numpy()
    out[AFF_COLS] = (aff + 1.0 / N_CATEGORY_SLOTS) / (snap["positive"].to_numpy()[:, None] + 1.0)
    return out.reset_index(drop=True)


def document_tables(labelled: pd.DataFrame) -> pd.DataFrame:
    sums = ["exposure", "positive", "engaged", "value_sum", "value_n"]
    snap = _daily_snapshots(labelled, "document_id", sums, DOC_WINDOW_DAYS)
    prior = _global_rate(labelled, snap["event_timestamp"], "engaged", "exposure")
    out = snap[["document_id", "event_timestamp"]].copy()
    out["doc_n_exposures"] = snap["exposure"]
    out["doc_n_positive"] = snap["positive"]
    out["doc_n_exposures_7d"] = snap["exposure__w"]
    out["doc_n_positive_7d"] = snap["positive__w"]
    out["doc_ctr_smoothed"] = _smoothed(snap["engaged"], snap["exposure"], prior)
    out["doc_mean_value"] = _mean_value(snap)
    return out.reset_index(drop=True)


METADATA_TIME = pd.Timestamp("1970-01-02", tz="UTC")


def metadata_table(catalog: pd.DataFrame, vocab: CategoryVocabulary) -> pd.DataFrame:
    """Static catalog features, valid from the start of time (they carry no behaviour, so no leakage)."""
    out = pd.DataFrame({"document_id": catalog["document_id"].astype(str).to_numpy()})
    out["event_timestamp"] = METADATA_TIME
    created = pd.to_datetime(catalog["created_at"], utc=True)
    out["doc_created_days"] = ((created - pd.Timestamp(0, tz="UTC")).dt.total_seconds() / 86400.0).to_numpy()
    out[CAT_COLS] = vocab.multi_hot(catalog["categories"])
    return out


def request_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Features of a (request, document) pair from the retrieved ones; adds REQUEST_FEATURES columns in place.

    Needs: list_id, event_timestamp, first_stage_score, doc_created_days, user_aff_*, doc_cat_*.
    """
    aff = frame[AFF_COLS].to_numpy(dtype=float)
    cat = frame[CAT_COLS].to_numpy(dtype=float)
    n_cat = cat.sum(axis=1)
    weighted = np.nansum(aff * cat, axis=1)
    frame["user_doc_affinity"] = np.where(n_cat > 0, weighted / np.maximum(n_cat, 1), np.nan)
    matched = np.where((cat > 0) & ~np.isnan(aff), aff, -np.inf).max(axis=1)
    frame["user_doc_affinity_max"] = np.where((n_cat > 0) & np.isfinite(matched), matched, np.nan)
    frame.loc[np.isnan(aff).all(axis=1), ["user_doc_affinity", "user_doc_affinity_max"]] = np.nan
    ts_days = (
        pd.to_datetime(frame["event_timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")
    ).dt.total_seconds()
    frame["doc_age_days"] = ts_days.to_numpy() / 86400.0 - frame["doc_created_days"].to_numpy(dtype=float)
    groups = frame.groupby("list_id", sort=False)
    frame["first_stage_rank"] = groups["first_stage_score"].rank(ascending=False, method="first")
    for col in LIST_RANKED:
        frame[f"{col}_list_pct"] = groups[col].rank(pct=True)
    return frame
