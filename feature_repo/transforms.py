"""Pure pandas transforms: lake interactions + catalog -> point-in-time snapshot tables, generated from the feature set.

A snapshot row of an entity at time t holds values computed only from events strictly before t. Snapshots are taken
at the end of each day the entity was active (t = next midnight) and again when each recent window expires
(t = next midnight + window), so Feast's point-in-time join picks, for a request at time r, the newest snapshot
with t <= r: it never sees an event at or after r's day.

Tables (each a Feast view, `feature_repo.definitions`): document attributes (the declared catalog columns, raw), document
engagement (counts, windows, shares of all activity, smoothed rates), user activity, user affinities (per declared
attribute, the user's smoothed share of positives per value), user history (recent positives, for co-visitation),
query x document click statistics, and user segments.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pandas as pd

from feature_repo.manifest import Encodings, split_values
from reranker.contracts import POSITIVE_RATING, POSITIVE_TYPES
from reranker.featureset import DocumentKind, Engagement, FeatureSet, UserSignals

PRIOR_STRENGTH = 10.0
METADATA_TIME = pd.Timestamp("1970-01-02", tz="UTC")
ONE_DAY = pd.Timedelta(days=1)


def plural(kind: str) -> str:
    return f"{kind}es" if kind.endswith("h") else f"{kind}s"


def positive_flags(kind: pd.Series, value: pd.Series) -> pd.Series:
    """What counts as a positive signal: a click, add to cart or purchase, or a rating of at least 4."""
    return kind.isin([t.value for t in POSITIVE_TYPES]) | (
        (kind == "rating") & (value.astype(float) >= POSITIVE_RATING)
    )


def label_events(events: pd.DataFrame, kinds: list[str] = ()) -> pd.DataFrame:  # type: ignore[assignment]
    """Flags per event: exposure (impression or rating), positive (click, conversion or rating >= 4), one flag per
    counted interaction kind, the rating value, and the day it belongs to."""
    kind = events["interaction_type"]
    value = events["value"].astype(float) if "value" in events else pd.Series(np.nan, index=events.index)
    rating = kind == "rating"
    out = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str).to_numpy(),
            "document_id": events["document_id"].astype(str).to_numpy(),
            "timestamp": pd.to_datetime(events["timestamp"], utc=True).dt.as_unit("ns").to_numpy(),
            "exposure": ((kind == "impression") | rating).to_numpy(),
            "positive": positive_flags(kind, value).to_numpy(),
            "value": value.where(rating, np.nan).to_numpy(),
        }
    )
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    for k in kinds:
        out[f"k_{k}"] = (kind == k).to_numpy()
    out["value_sum"] = out["value"].fillna(0.0)
    out["value_n"] = out["value"].notna().astype(float)
    out["day"] = out["timestamp"].dt.floor("D")
    if "query" in events:
        out["query"] = events["query"].to_numpy()
    return out


def nanoseconds(times: pd.Series | pd.Index) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds since the epoch."""
    return pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("ns").asi8


def normalize_query(query: object) -> str | None:
    """Lower case, single spaces, at most 200 characters; None for a missing or empty query."""
    if query is None or (isinstance(query, float) and np.isnan(query)):
        return None
    text = " ".join(str(query).lower().split())[:200]
    return text or None


def query_document_key(query: str, document_id: str) -> str:
    """The entity key of a (normalized query, document) pair."""
    return hashlib.blake2b(f"{query}\x1f{document_id}".encode(), digest_size=10).hexdigest()


# ---------------------------------------------------------------- snapshots


def _snapshots(daily: pd.DataFrame, key: str, windows: list[int]) -> pd.DataFrame:
    """Cumulative sums of the daily table's numeric columns at each snapshot time, and per window `w` their sums over
    the `w` days before it (`<col>__<w>`)."""
    sums = [c for c in daily.columns if c not in (key, "day")]
    daily = daily.sort_values([key, "day"])
    cum = daily[[key, "day"]].copy()
    cum[sums] = daily.groupby(key, sort=False)[sums].cumsum()
    times = pd.concat(
        [daily[[key]].assign(event_timestamp=daily["day"] + ONE_DAY)]
        + [
            daily[[key]].assign(event_timestamp=daily["day"] + ONE_DAY + pd.Timedelta(days=w))
            for w in windows
        ]
    ).drop_duplicates()
    times = times.sort_values("event_timestamp").reset_index(drop=True)
    cum_sorted = cum.sort_values("day")
    at_t = pd.merge_asof(times, cum_sorted, left_on="event_timestamp", right_on="day", by=key,
                         allow_exact_matches=False)  # fmt: skip
    out = at_t[[key, "event_timestamp"]].copy()
    for c in sums:
        out[c] = at_t[c].fillna(0.0).to_numpy()
    for w in windows:
        shifted = times.assign(_w=times["event_timestamp"] - pd.Timedelta(days=w))
        before = pd.merge_asof(
            shifted, cum_sorted, left_on="_w", right_on="day", by=key, allow_exact_matches=False
        )
        for c in sums:
            out[f"{c}__{w}"] = out[c].to_numpy() - before[c].fillna(0.0).to_numpy()
    first = daily.groupby(key)["day"].min()
    out["_first_day"] = out[key].map(first)
    return out


def _global_before(labelled: pd.DataFrame, times: pd.Series, columns: list[str], window: int | None = None
                   ) -> pd.DataFrame:  # fmt: skip
    """Global sums of `columns` over all events before each time (within `window` days before it, if given)."""
    daily = labelled.groupby("day")[columns].sum().sort_index().cumsum()
    days = nanoseconds(daily.index)
    t = nanoseconds(times)
    values = np.vstack([np.zeros((1, len(columns))), daily.to_numpy(dtype=float)])

    def at(ts: np.ndarray) -> np.ndarray:
        return values[np.searchsorted(days, ts, side="left")]  # days strictly before ts

    now = at(t)
    if window is not None:
        now = now - at(t - pd.Timedelta(days=window).value)
    return pd.DataFrame(now, columns=columns, index=times.index)


def _smoothed(num: pd.Series | np.ndarray, den: pd.Series | np.ndarray, prior: np.ndarray) -> np.ndarray:
    """(num + k * prior) / (den + k): a rate pulled towards the global one when there is little evidence."""
    return (np.asarray(num, dtype=float) + PRIOR_STRENGTH * prior) / (
        np.asarray(den, dtype=float) + PRIOR_STRENGTH
    )


def _prior(labelled: pd.DataFrame, times: pd.Series, num: str, den: str) -> np.ndarray:
    g = _global_before(labelled, times, [num, den])
    return (g[num] / g[den].clip(lower=1.0)).where(g[den] > 0, 0.5).to_numpy()


def _mean_value(snap: pd.DataFrame) -> np.ndarray:
    return (snap["value_sum"] / snap["value_n"]).where(snap["value_n"] > 0).to_numpy()


# ---------------------------------------------------------------- tables


def engagement_columns(eng: Engagement) -> list[str]:
    cols = ["exposures", "positives", "mean_value"]
    if eng.rates:
        cols.append("positive_rate")
    for w in eng.windows_days:
        cols += [f"exposures_{w}d", f"positives_{w}d", f"positives_{w}d_share"]
    for k in eng.kinds:
        cols += [plural(k), *[f"{plural(k)}_{w}d" for w in eng.windows_days]]
        if eng.rates:
            cols.append(f"{k}_rate")
    return cols


def document_engagement(labelled: pd.DataFrame, eng: Engagement) -> pd.DataFrame:
    """Per document snapshot: exposures, positives and each counted kind, all time and per window; each window's
    positives as a share of all positives in that window (stable as traffic grows); smoothed rates."""
    kinds = [f"k_{k}" for k in eng.kinds]
    sums = ["exposure", "positive", "value_sum", "value_n", *kinds]
    daily = labelled.groupby(["document_id", "day"], as_index=False)[sums].sum()
    snap = _snapshots(daily, "document_id", eng.windows_days)
    out = snap[["document_id", "event_timestamp"]].copy()
    out["exposures"] = snap["exposure"]
    out["positives"] = snap["positive"]
    out["mean_value"] = _mean_value(snap)
    if eng.rates:
        out["positive_rate"] = _smoothed(snap["positive"], snap["exposure"],
                                         _prior(labelled, snap["event_timestamp"], "positive", "exposure"))  # fmt: skip
    for w in eng.windows_days:
        out[f"exposures_{w}d"] = snap[f"exposure__{w}"]
        out[f"positives_{w}d"] = snap[f"positive__{w}"]
        total = _global_before(labelled, snap["event_timestamp"], ["positive"], window=w)[
            "positive"
        ].to_numpy()
        out[f"positives_{w}d_share"] = snap[f"positive__{w}"].to_numpy() / np.maximum(total, 1.0) * 1000.0
    for k in eng.kinds:
        out[plural(k)] = snap[f"k_{k}"]
        for w in eng.windows_days:
            out[f"{plural(k)}_{w}d"] = snap[f"k_{k}__{w}"]
        if eng.rates:
            out[f"{k}_rate"] = _smoothed(snap[f"k_{k}"], snap["exposure"],
                                         _prior(labelled, snap["event_timestamp"], f"k_{k}", "exposure"))  # fmt: skip
    return out.reset_index(drop=True)


def activity_columns(us: UserSignals) -> list[str]:
    w = us.window_days
    return [
        "events",
        "positives",
        "positive_rate",
        f"events_{w}d",
        f"positives_{w}d",
        "mean_value",
        "tenure_days",
    ]


def user_activity(labelled: pd.DataFrame, us: UserSignals) -> pd.DataFrame:
    w = us.window_days
    frame = labelled.assign(n_events=1.0)
    daily = frame.groupby(["user_id", "day"], as_index=False)[["n_events", "positive", "exposure", "value_sum",
                                                               "value_n"]].sum()  # fmt: skip
    snap = _snapshots(daily, "user_id", [w])
    out = snap[["user_id", "event_timestamp"]].copy()
    out["events"] = snap["n_events"]
    out["positives"] = snap["positive"]
    out["positive_rate"] = _smoothed(snap["positive"], snap["exposure"],
                                     _prior(labelled, snap["event_timestamp"], "positive", "exposure"))  # fmt: skip
    out[f"events_{w}d"] = snap[f"n_events__{w}"]
    out[f"positives_{w}d"] = snap[f"positive__{w}"]
    out["mean_value"] = _mean_value(snap)
    out["tenure_days"] = (snap["event_timestamp"] - snap["_first_day"]).dt.total_seconds() / 86400.0
    return out.reset_index(drop=True)


def attribute_slots(catalog: pd.DataFrame, fs: FeatureSet, encodings: Encodings, name: str) -> np.ndarray:
    """(documents x slots) membership of each catalog document in the attribute's affinity slots: its values
    (multi-valued), its value (categorical) or its price bucket (numeric); all-NaN where missing."""
    attr = fs.documents[name]
    enc = encodings.attributes[name]
    column = catalog[attr.source(name)]
    if attr.kind is DocumentKind.multi_categorical:
        return enc.slots_matrix(column, attr.separator)
    codes = enc.codes(column) if attr.kind is DocumentKind.categorical else enc.bucket(
        pd.to_numeric(column, errors="coerce").to_numpy(dtype=float))  # fmt: skip
    out = np.zeros((len(column), enc.slots))
    ok = ~np.isnan(codes)
    out[np.flatnonzero(ok), codes[ok].astype(int)] = 1.0
    out[~ok] = np.nan
    return out


def user_affinities(labelled: pd.DataFrame, catalog: pd.DataFrame, fs: FeatureSet, encodings: Encodings
                    ) -> pd.DataFrame:  # fmt: skip
    """Per user snapshot (end of each day with a positive) and declared affinity attribute: the user's smoothed share
    of positives per slot, (count + 1/slots) / (positives + 1), as one array; and the positives so far."""
    positives = labelled[labelled["positive"]][["user_id", "document_id", "day"]]
    doc_row = pd.Index(catalog["document_id"].astype(str)).get_indexer(positives["document_id"])
    blocks = []
    for name in fs.affinities:
        slots = np.nan_to_num(attribute_slots(catalog, fs, encodings, name))
        taken = np.zeros((len(positives), slots.shape[1]))
        known = doc_row >= 0
        taken[known] = slots[doc_row[known]]
        blocks.append((name, taken))
    width = sum(b.shape[1] for _, b in blocks)
    frame = pd.DataFrame(np.hstack([b for _, b in blocks]) if width else np.zeros((len(positives), 0)),
                         columns=[f"s{i}" for i in range(width)])  # fmt: skip
    frame["user_id"] = positives["user_id"].to_numpy()
    frame["day"] = positives["day"].to_numpy()
    frame["n_pos"] = 1.0
    daily = frame.groupby(["user_id", "day"], as_index=False).sum().sort_values(["user_id", "day"])
    value_cols = [c for c in daily.columns if c not in ("user_id", "day")]
    cum = daily.groupby("user_id", sort=False)[value_cols].cumsum().to_numpy()
    out = pd.DataFrame(
        {"user_id": daily["user_id"].to_numpy(), "event_timestamp": daily["day"].to_numpy() + ONE_DAY}
    )
    n_pos = cum[:, -1]
    out["positives"] = n_pos
    start = 0
    for name, block in blocks:
        width_a = block.shape[1]
        share = (cum[:, start : start + width_a] + 1.0 / width_a) / (n_pos[:, None] + 1.0)
        out[name] = list(share)
        start += width_a
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out.reset_index(drop=True)


def user_history(labelled: pd.DataFrame, doc_index: dict[str, int], n_recent: int) -> pd.DataFrame:
    """Per user snapshot (end of each day with a positive): the document indexes of the user's `n_recent` latest
    positives before it, newest first."""
    pos = labelled[labelled["positive"]][["user_id", "document_id", "timestamp", "day"]]
    pos = pos.assign(doc=pos["document_id"].map(doc_index))
    pos = pos[pos["doc"].notna()].sort_values(["user_id", "timestamp"], kind="stable")
    users = pos["user_id"].to_numpy()
    docs = pos["doc"].to_numpy(dtype=np.int64)
    days = pos["day"].to_numpy()
    rows_user, rows_time, rows_recent = [], [], []
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for a, b in itertools.pairwise(bounds):
        user_days = days[a:b]
        ends = (
            np.flatnonzero(np.r_[user_days[1:] != user_days[:-1], True]) + 1
        )  # last positive of each day + 1
        for end in ends.tolist():
            recent = docs[a + max(0, end - n_recent) : a + end][::-1]
            rows_user.append(users[a])
            rows_time.append(user_days[end - 1])
            rows_recent.append(recent.copy())
    out = pd.DataFrame(
        {"user_id": rows_user, "event_timestamp": pd.to_datetime(rows_time, utc=True) + ONE_DAY}
    )
    out["recent_positives"] = rows_recent
    return out


def query_documents(labelled: pd.DataFrame) -> pd.DataFrame:
    """Per (normalized query, document) snapshot (end of each day it was shown or engaged under that query): its
    impressions, positives and smoothed click rate under that query."""
    if "query" not in labelled:
        return pd.DataFrame(columns=["query_document_key", "event_timestamp", "impressions", "clicks", "ctr",
                                     "query", "document_id"])  # fmt: skip
    frame = labelled[labelled["query"].notna()].copy()
    frame["query"] = frame["query"].map(normalize_query)
    frame = frame[frame["query"].notna()]
    if frame.empty:
        return query_documents(labelled.drop(columns=["query"]))
    frame["impression"] = frame["exposure"].astype(float)
    frame["click"] = frame["positive"].astype(float)
    pairs = frame[["query", "document_id"]].drop_duplicates()
    keys = {(q, d): query_document_key(q, d) for q, d in pairs.itertuples(index=False)}
    frame["query_document_key"] = [
        keys[(q, d)] for q, d in zip(frame["query"], frame["document_id"], strict=True)
    ]
    daily = frame.groupby(["query_document_key", "day"], as_index=False)[["impression", "click"]].sum()
    snap = _snapshots(daily, "query_document_key", [])
    out = snap[["query_document_key", "event_timestamp"]].copy()
    out["impressions"] = snap["impression"]
    out["clicks"] = snap["click"]
    prior = _prior(frame, snap["event_timestamp"], "click", "impression")
    out["ctr"] = _smoothed(snap["click"], snap["impression"], prior)
    names = {v: k for k, v in keys.items()}
    out["query"] = out["query_document_key"].map(lambda k: names[k][0])
    out["document_id"] = out["query_document_key"].map(lambda k: names[k][1])
    return out.reset_index(drop=True)


def timestamp_days(values: pd.Series) -> np.ndarray:
    """Timestamps as days since the Unix epoch (NaN where missing or unreadable)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        ts = pd.to_datetime(values, unit="s", utc=True, errors="coerce")
    else:
        ts = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return ((ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds() / 86400.0).to_numpy(dtype=float)


BOOLEAN_TRUE = {"1", "true", "yes", "t", "y"}


def document_attributes(catalog: pd.DataFrame, fs: FeatureSet) -> pd.DataFrame:
    """The declared catalog attributes, raw (codes are the model's business): numbers and booleans as floats,
    categories as text, multi-valued as lists of text, timestamps as days since the epoch. Valid from the start of
    time (the catalog carries no behaviour, so no leakage)."""
    out = pd.DataFrame({"document_id": catalog["document_id"].astype(str).to_numpy()})
    out["event_timestamp"] = METADATA_TIME
    for name, attr in fs.documents.items():
        column = catalog[attr.source(name)]
        if attr.kind is DocumentKind.numeric:
            out[name] = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        elif attr.kind is DocumentKind.boolean:
            if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
                out[name] = column.astype(float).to_numpy()
            else:
                text = column.astype(str).str.strip().str.lower()
                out[name] = np.where(column.isna(), np.nan, text.isin(BOOLEAN_TRUE).astype(float))
        elif attr.kind is DocumentKind.categorical:
            out[name] = column.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                   else str(v)).to_numpy(dtype=object)  # fmt: skip
        elif attr.kind is DocumentKind.multi_categorical:
            out[name] = [split_values(v, attr.separator) for v in column.tolist()]
        elif attr.kind is DocumentKind.timestamp:
            out[name] = timestamp_days(column)
    return out
