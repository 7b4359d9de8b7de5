import numpy as np
import pandas as pd

from reranker.exploration import epsilon_greedy_slots
from reranker.synthetic import event_chunks, simulate_clicks


def test_same_seed_same_events(world):
    a = pd.concat(list(event_chunks(world, 3_000, chunk_requests=200)))
    b = pd.concat(list(event_chunks(world, 3_000, chunk_requests=200)))
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 3_000 and a["event_id"].is_unique


def test_logged_propensities_are_the_policys_probabilities():
    """Per slot, the logged propensity is the exact probability of that choice: frequencies agree."""
    rng = np.random.default_rng(0)
    scores = np.tile(np.arange(6, dtype=float)[::-1], (60_000, 1))  # fixed order: candidate 0 is best
    shown, prop = epsilon_greedy_slots(scores, 3, 0.3, rng)
    first = shown[:, 0]
    for cand in range(6):
        freq = (first == cand).mean()
        expected = prop[first == cand, 0][0]
        assert abs(freq - expected) < 0.01


def test_clicks_fall_with_position_and_rise_with_relevance(world):
    rng = np.random.default_rng(3)
    req = world.sample_requests(rng, 4_000)
    clicks, grades = simulate_clicks(world, req, rng)
    by_pos = clicks.mean(axis=0)
    assert by_pos[0] > 2 * by_pos[5]
    assert clicks[grades == 3].mean() > 3 * clicks[grades == 0].mean()
