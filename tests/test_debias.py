"""The debiased offline estimate: examination propensities recovered from logs by EM, and IPW-DCG that ranks rankers
by their true quality where the naive click metric favours the logging order."""

import numpy as np
import pandas as pd

from models.debias import estimate_propensities, ipw_dcg, logged_keys
from models.metrics import per_list

THETA = 1.0 / (1.0 + np.arange(10))  # the true examination by position


def logged(n_lists: int, seed: int, explore: float = 0.3) -> tuple[pd.DataFrame, np.ndarray]:
    """Lists of 10 of 200 documents under the position-based model: the logging policy orders by a score that is
    mostly noise (a weak first stage), with random swaps (exploration); clicks = examined x relevant."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.02, 0.9, 200)
    rows = []
    for lst in range(n_lists):
        docs = rng.choice(200, 10, replace=False)
        score = 0.3 * gamma[docs] + rng.normal(0, 0.3, 10)
        order = docs[np.argsort(-score)]
        for i in range(10):
            if rng.random() < explore:
                j = rng.integers(0, 10)
                order[[i, j]] = order[[j, i]]
        for pos, doc in enumerate(order):
            click = rng.random() < THETA[pos] * gamma[doc]
            rows.append({"list_id": f"l{lst}", "user_id": f"u{lst % 97}", "document_id": f"d{doc}", "position": pos,
                         "label": float(click), "gamma": gamma[doc]})  # fmt: skip
    return pd.DataFrame(rows), gamma


def test_em_recovers_the_examination_propensities():
    frame, _ = logged(6_000, 0)
    found = estimate_propensities(frame["position"].to_numpy(), frame["label"].to_numpy(), logged_keys(frame))
    np.testing.assert_allclose(found.theta, THETA, rtol=0.15, atol=0.02)
    assert found.of(np.array([0, 9, 50]))[2] == found.theta[-1]  # beyond the last position: the last


def test_ipw_dcg_ranks_rankers_as_the_truth_does_where_clicks_favour_the_logging_order():
    frame, _ = logged(6_000, 1)
    theta = estimate_propensities(frame["position"].to_numpy(), frame["label"].to_numpy(), logged_keys(frame))
    rng = np.random.default_rng(2)
    rankers = {
        "logging": -frame["position"].to_numpy(dtype=float),  # the order the clicks came from
        "good": frame["gamma"].to_numpy() + rng.normal(0, 0.15, len(frame)),  # knows relevance, noisily
        "random": rng.normal(size=len(frame)),
    }
    truth = {
        k: per_list(frame.assign(g=frame["gamma"]), s, (10,), "g")["ndcg@10"].mean()
        for k, s in rankers.items()
    }
    naive = {k: per_list(frame, s, (10,))["ndcg@10"].mean() for k, s in rankers.items()}
    ipw = {k: ipw_dcg(frame, s, theta, (10,))["ipw_dcg@10"].mean() for k, s in rankers.items()}
    assert truth["good"] > truth["logging"] > truth["random"]
    assert naive["logging"] > naive["good"]  # clicks concentrate where the logging policy put items
    assert sorted(ipw, key=ipw.get) == sorted(truth, key=truth.get)


def test_ipw_dcg_counts_every_list_and_ranks_ties_in_row_order():
    frame = pd.DataFrame({"list_id": ["a", "a", "b"], "position": [0, 1, 0], "label": [0.0, 1.0, 0.0],
                          "document_id": ["x", "y", "z"]})  # fmt: skip
    theta = estimate_propensities(
        np.array([0, 1, 0, 1]), np.array([1, 1, 0, 1]), np.array(["x", "y", "x", "y"])
    )
    got = ipw_dcg(frame, np.array([1.0, 1.0, 0.0]), theta, (1, 10))
    assert list(got.index) == ["a", "b"] and got.loc["b", "ipw_dcg@10"] == 0
    assert got.loc["a", "ipw_dcg@1"] == 0  # the tie keeps row order: x first, not clicked
    assert got.loc["a", "ipw_dcg@10"] == 1 / theta.of(np.array([1]))[0] / np.log2(3)
