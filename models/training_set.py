"""Training sets: ranking lists joined, point in time, with the feature build's views via Feast, and turned into the
model inputs by the same kernel serving runs (`feature_repo.inputs`)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.inputs import InputPlan, ModelInput, default_inputs
from feature_repo.manifest import Encodings, FeatureManifest
from feature_repo.rows import RowBlock, block_from_frame, list_starts_of
from feature_repo.store import PointInTimeAnswers, on_ray
from feature_repo.text import TextIndex
from reranker import engine

LIST_COLUMNS = ["list_id", "user_id", "document_id", "event_timestamp", "first_stage_score", "label", "position",
                "propensity", "served_by_version", "query", "source", "label_until"]  # fmt: skip
FIT_COLUMNS = ["list_id", "label", "position"]  # what a fit reads (`models.lambdarank.train_lambdarank`)


@dataclass
class TrainingSet:
    frame: pd.DataFrame  # the lists' keys and labels; rows of a list contiguous, in list order
    block: RowBlock  # what the kernel reads, same rows
    inputs: list[ModelInput]
    X: np.ndarray  # the inputs, computed from the block, float32 (what LightGBM fits and scores)
    manifest: FeatureManifest = field(repr=False)

    @property
    def features(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def n_lists(self) -> int:
        return len(self.block.list_starts) - 1

    def digest(self) -> str:
        """Content digest of keys and labels (what MLflow records as the dataset's identity)."""
        keys = self.frame[["list_id", "document_id", "label"]]
        return hashlib.sha256(pd.util.hash_pandas_object(keys, index=False).to_numpy().tobytes()).hexdigest()[
            :16
        ]

    def window(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        ts = pd.to_datetime(self.frame["event_timestamp"], utc=True)
        return ts.min(), ts.max()

    def list_ids(self) -> np.ndarray:
        return self.frame["list_id"].to_numpy()[self.block.list_starts[:-1]]

    def subset(self, list_ids: Any) -> TrainingSet:
        """The given lists, in this set's order."""
        wanted = set(list_ids)
        positions = np.array([i for i, lid in enumerate(self.list_ids()) if lid in wanted], dtype=np.int64)
        return self.take(positions)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The row indices of the lists at `positions` (in that order)."""
        starts, ends = self.block.list_starts[positions], self.block.list_starts[positions + 1]
        return np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)]) if len(positions) else \
            np.zeros(0, np.int64)  # fmt: skip

    def take(self, positions: np.ndarray) -> TrainingSet:
        rows = self.rows(positions)
        return TrainingSet(self.frame.iloc[rows].reset_index(drop=True), self.block.take_lists(positions),
                           self.inputs, self.X[rows], self.manifest)  # fmt: skip

    def fit_part(self, positions: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """The frame and X of the lists at `positions`: what fitting and scoring read, without a copy of the block
        (which at 10M events is as large as X)."""
        rows = self.rows(positions)
        return self.frame.iloc[rows].reset_index(drop=True), self.X[rows]

    def frame_of(self, positions: np.ndarray) -> pd.DataFrame:
        """The keys and labels of the lists at `positions`, in that order, without their X (what evaluating scores
        of them reads; at 10M events the test lists' X is ≈ 0.7 GB)."""
        return self.frame.iloc[self.rows(positions)].reset_index(drop=True)

    def fit_rows(self, positions: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """What a fit of the lists at `positions` reads beside X: their rows' list ids, labels and positions, and
        those rows' indices in X (`train_lambdarank(keys, self.X, ..., rows=rows)`): on Ray no copy of X's rows."""
        rows = self.rows(positions)
        keys = [c for c in FIT_COLUMNS if c in self.frame]
        return self.frame[keys].iloc[rows].reset_index(drop=True), rows

    def columns(self, inputs: list[ModelInput]) -> np.ndarray | None:
        """The positions in X of `inputs` when this set has them all (each input's column is computed on its own,
        so a subset of X is what computing those inputs alone gives), else None."""
        at = {i.name: k for k, i in enumerate(self.inputs)}
        if any(at.get(i.name) is None or self.inputs[at[i.name]] != i for i in inputs):
            return None
        return np.array([at[i.name] for i in inputs], dtype=np.int64)

    def matrix(self, inputs: list[ModelInput], encodings: Encodings | None = None) -> np.ndarray:
        """These rows' values of other inputs (another model's: its card's inputs and encodings), float32."""
        at = self.columns(inputs) if encodings is None else None
        if at is not None:
            return self.X if np.array_equal(at, np.arange(len(self.inputs))) else self.X[:, at]
        return self.block.compute(InputPlan.build(inputs, self.manifest, encodings), np.float32)

    def matrix_of(self, positions: np.ndarray, inputs: list[ModelInput], encodings: Encodings | None = None
                  ) -> np.ndarray:  # fmt: skip
        """The lists at `positions`' values of `inputs` (float32): X's columns when this set has them, else computed
        from those lists' block alone (not a copy of the whole set)."""
        at = self.columns(inputs) if encodings is None else None
        if at is not None:
            return self.X[np.ix_(self.rows(positions), at)]
        return self.block.take_lists(positions).compute(
            InputPlan.build(inputs, self.manifest, encodings), np.float32
        )

    def without_values(self) -> TrainingSet:
        """The same lists and inputs with the block's values dropped (what folds and fits read is X): other inputs
        can no longer be computed from it."""
        return TrainingSet(self.frame, self.block.structure(), self.inputs, self.X, self.manifest)

    def with_inputs(self, inputs: list[ModelInput]) -> TrainingSet:
        """The same rows with another list of inputs (an ablation)."""
        return TrainingSet(self.frame, self.block, inputs, self.matrix(inputs), self.manifest)


# The peak memory of `reranker train` once the lists are built (the training set's build, the family selection,
# the rolling-origin folds and the final fit), measured by sampling the command's process tree's RSS on the
# synthetic shop (local engine, 100,000-row chunks): MEASURED_1M and MEASURED_10M (rows, lists, GB of 10^9 bytes,
# the budget's unit; 1M every 0.5 s, 10M every 0.2 s by `python -m benchmarks.session --size 10000000`). The peak
# is the end of the build: the lists' keys, the block (the documents' and extras' float64 values) and X (float32).
# The block's values are dropped once the test lists' baselines are scored, so the folds and fits hold X, a fold's
# copy of it and LightGBM's bins: below the build's peak while the block is wider than X (taken as the larger of
# the two). ~400 bytes a row of keys; BASE_BYTES and SCALE are fitted to the two peaks.
MEASURED_1M, MEASURED_10M = (566_050, 56_605, 1.82), (5_626_040, 562_604, 7.86)
BASE_BYTES = 1.14e9
SCALE = 0.93
# The listing (the lake read and turned into lists, before the check above can run) peaks at 1.26 GB for 1M events
# and 7.32 GB for 10M: ≈ 673 bytes an event over a 0.59 GB base.
LISTING_BASE_BYTES, LISTING_BYTES_PER_EVENT = 0.59e9, 673


def estimated_peak_bytes(rows: int, lists: int, doc_width: int, extra_width: int, user_width: int,
                         n_inputs: int) -> float:  # fmt: skip
    """Training's peak memory for `rows` candidate rows in `lists` lists (the measured model above), given the
    widths of the layouts (`feature_repo.inputs`) and the number of inputs."""
    per_row = 4 * n_inputs + max(8 * (doc_width + extra_width), 4 * n_inputs) + 400
    return BASE_BYTES + SCALE * rows * per_row + lists * 8 * user_width


class TrainingSetTooLarge(ValueError):
    """Training would not fit the memory budget on this machine (said before the work that would exceed it)."""


def _advice(budget_gb: float) -> str:
    return (f"over the {budget_gb:g} GB budget (RERANKER_TRAINING_MEMORY_GB): train on a machine with that much "
            "memory and raise the budget, or keep a shorter history in the lake "
            "(`reranker flows run retention --days N`)")  # fmt: skip


def check_listing_memory(events: int, budget_gb: float | None) -> float:
    """The listing's estimated peak in GB for a lake of `events` events (checked before reading it);
    `TrainingSetTooLarge` when it is over `budget_gb` (None or 0: no budget)."""
    need = (LISTING_BASE_BYTES + LISTING_BYTES_PER_EVENT * events) / 1e9
    if budget_gb and need > budget_gb:
        raise TrainingSetTooLarge(f"reading the lake's {events:,} events and turning them into lists would need "
                                  f"≈ {need:.1f} GB of memory, " + _advice(budget_gb))  # fmt: skip
    return need


# Training with a local Ray cluster: the build's peak is the local engine's (the cluster is let go of before it);
# the fits run after the block's values are dropped and peak with the driver's keys and X, the workers' shards in
# Ray's object store (read there in place) and LightGBM's bins, beside Ray's own processes (its spill and restore
# workers among them: the shards outgrow a 1 GB store) and the workers' interpreters. Fitted to `reranker train` on
# the Ray engine at 1M events (3.67 GB, `python -m benchmarks.peak` on the 1M session's lake) and 10M (7.41 GB, in
# `python -m benchmarks.session --size 10000000 --memory-cap-gb 8`): 3.25 GB beside 8 bytes an input and 227 more
# a row. PSS summed over the driver, Ray's processes and the workers (the object store's shared pages counted once).
RAY_FIT_BASE_BYTES, RAY_KEY_BYTES = 3.25e9, 227


def ray_fit_bytes(rows: int, n_inputs: int, cluster: engine.RayCluster | None) -> float:
    """The fits' peak on this machine with the local Ray cluster they start (above); 0 for a joined cluster
    (`address`: its workers run on its machines) or none."""
    if cluster is None or cluster.address:
        return 0.0
    return RAY_FIT_BASE_BYTES + rows * (8.0 * n_inputs + RAY_KEY_BYTES)


def check_memory(rows: int, lists: int, manifest: FeatureManifest, budget_gb: float | None,
                 ray: engine.RayCluster | None = None) -> float:  # fmt: skip
    """Training's estimated peak in GB (checked once the lists are built, before the training set's build), on
    this machine: the build's, or the fits' with the local Ray cluster `ray` starts when one does and that is
    higher; `TrainingSetTooLarge` when it is over `budget_gb` (None or 0: no budget)."""
    from feature_repo.inputs import doc_layout, extra_layout, user_layout

    n_inputs = len(default_inputs(manifest))
    build = estimated_peak_bytes(rows, lists, len(doc_layout(manifest)), len(extra_layout(manifest)),
                                 len(user_layout(manifest)), n_inputs)  # fmt: skip
    fits = ray_fit_bytes(rows, n_inputs, ray)
    need = max(build, fits) / 1e9
    if budget_gb and need > budget_gb:
        on_ray = fits > build
        where = " with its local Ray cluster" if on_ray else ""
        instead = ("; or join a Ray cluster of more machines (RERANKER_RAY_ADDRESS), or train on the local engine "
                   "(RERANKER_ENGINE=local), which needs less here") if on_ray else ""  # fmt: skip
        raise TrainingSetTooLarge(
            f"training on {rows:,} rows in {lists:,} lists would need ≈ {need:.1f} GB of memory on this machine"
            f"{where} (≈ {need * 1e6 / rows:.1f} KB a row at {n_inputs} inputs, measured), "
            + _advice(budget_gb)
            + instead
        )
    return need


def build_training_set(store: Any, lists: pd.DataFrame, manifest: FeatureManifest, text: TextIndex | None,
                       inputs: list[ModelInput] | None = None, chunk_rows: int = 100_000,
                       progress: Callable[[int, int], None] | None = None) -> TrainingSet:  # fmt: skip
    """Point-in-time features of each list row; same rows, lists contiguous in their first-appearance order.
    `inputs`: default every input the build supplies. Feast is asked once for all the rows' distinct point-in-time
    questions (`PointInTimeAnswers`); the answers are spread and turned into numbers in chunks of whole lists of
    about `chunk_rows` rows (each row's answer depends on that row alone, so chunks give the same set): memory holds
    the distinct answers and one chunk's spread of them (object columns) beside the numeric block of all the rows,
    written in place (`RowBlock.assemble`). `progress(rows done, rows)`."""
    numbers = pd.factorize(lists["list_id"])[0]  # in order of first appearance
    if not (lists.index.equals(pd.RangeIndex(len(lists))) and bool(np.all(np.diff(numbers) >= 0))):
        # not already contiguous (the listing's lists are: then no copy of the keys, 0.5 GB at 10M events)
        lists = lists.iloc[np.argsort(numbers, kind="stable")].reset_index(drop=True)
    starts = list_starts_of(lists["list_id"])
    bounds = [0]
    for start in starts[1:-1]:
        if start - bounds[-1] >= chunk_rows:
            bounds.append(int(start))
    bounds.append(len(lists))

    def chunks(answers: PointInTimeAnswers) -> Iterator[RowBlock]:
        for a, b in itertools.pairwise(bounds):
            yield block_from_frame(lists.iloc[a:b].reset_index(drop=True), answers.rows(a, b), manifest, text)
            if progress is not None:
                progress(b, len(lists))

    answers = PointInTimeAnswers.ask(store, lists, manifest)
    if on_ray(store):
        # Ray's idle workers keep ≈ 1 GB each after the join (the views they were broadcast) and the build's peak
        # would sit on top of them: let go of the cluster (a local one stops; whoever needs Ray next starts it)
        engine.stop()
    # the answers are dropped with the spent generator, before X is computed (the build's peak)
    block = RowBlock.assemble(starts, chunks(answers))
    del answers
    inputs = inputs if inputs is not None else default_inputs(manifest)
    X = block.compute(InputPlan.build(inputs, manifest), np.float32)
    keep = [c for c in LIST_COLUMNS if c in lists]
    return TrainingSet(lists[keep], block, inputs, X, manifest)
