"""The scoring time budget: scores in blocks on the calling thread, abandoned once the deadline has passed."""

from __future__ import annotations

import time

import numpy as np

from serving.pipeline import score_by_deadline


def test_scores_every_row_when_in_time_and_stops_after_the_block_that_crossed_the_deadline():
    X = np.random.default_rng(0).random((600, 4))
    blocks: list[int] = []

    def slow_sum(rows: np.ndarray) -> np.ndarray:
        blocks.append(len(rows))
        time.sleep(0.02)
        return rows.sum(axis=1)

    scores = score_by_deadline(slow_sum, X, time.perf_counter() + 60, block=256)
    assert scores is not None and blocks == [256, 256, 88]
    np.testing.assert_allclose(scores, X.sum(axis=1))

    blocks.clear()
    assert score_by_deadline(slow_sum, X, time.perf_counter() + 0.01, block=256) is None
    assert blocks == [256]  # the later blocks were never scored
    assert score_by_deadline(slow_sum, X, time.perf_counter() - 1) is None and blocks == [256]
