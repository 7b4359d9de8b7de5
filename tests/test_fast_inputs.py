"""Serving's numpy inputs equal the training-time pandas reference (`model_inputs`) for every model feature."""

import numpy as np
import pandas as pd
import pytest

from models.ranker import feature_matrix
from models.training_set import MODEL_FEATURES, model_inputs
from serving.fast_inputs import assemble
from serving.online_features import DOC_FEATURES, USER_FEATURES


def _request(seed: int, n: int, known_user: bool):
    rng = np.random.default_rng(seed)
    docs = rng.gamma(2.0, 10.0, (n, len(DOC_FEATURES)))
    cat_cols = [j for j, f in enumerate(DOC_FEATURES) if f.startswith("doc_cat_")]
    docs[:, cat_cols] = rng.random((n, len(cat_cols))) < 0.15
    docs[rng.random(docs.shape) < 0.05] = np.nan  # missing values
    docs[:3] = np.nan  # documents the store does not know
    docs[5:8, DOC_FEATURES.index("doc_n_positive")] = 7.0  # ties
    user = rng.random(len(USER_FEATURES)) if known_user else None
    first = rng.normal(size=n)
    first[[4, 9]] = first[2]  # ties in the first-stage score
    first[1] = np.nan
    overrides = [{"cand_covisit": float(rng.random())} if i % 3 else {} for i in range(n)]
    overrides[0]["doc_mean_value"] = 4.5  # a request value overriding a stored one
    overrides[1]["doc_created_days"] = (
        20_000.0  # ... one the derived features read (age, rule score, percentiles)
    )
    overrides[2]["user_n_events"] = 3.0  # a user feature for one candidate
    overrides[3]["rule_score"] = 99.0  # derived features are computed, whatever the request sends
    docs[n - 1, 0] = np.inf  # an infinite stored value
    return docs, user, first, overrides


@pytest.mark.parametrize(("seed", "n", "known_user"), [(0, 100, True), (1, 37, False), (2, 10, True)])
def test_numpy_inputs_equal_the_pandas_reference(seed, n, known_user):
    docs, user, first, overrides = _request(seed, n, known_user)
    now = pd.Timestamp("2026-06-01T12:00:00Z")
    frame = pd.DataFrame(docs, columns=DOC_FEATURES)
    for j, name in enumerate(USER_FEATURES):
        frame[name] = np.nan if user is None else user[j]
    frame["list_id"] = "r"
    frame["event_timestamp"] = now
    frame["first_stage_score"] = first
    extra = pd.DataFrame(overrides).astype(float)
    for col in extra.columns:
        frame[col] = extra[col].to_numpy() if col not in frame else extra[col].fillna(frame[col]).to_numpy()
    reference = feature_matrix(model_inputs(frame), MODEL_FEATURES)
    fast = assemble(docs, user, first, overrides, now.timestamp() / 86400.0, MODEL_FEATURES)
    for j, name in enumerate(MODEL_FEATURES):
        np.testing.assert_allclose(fast[:, j], reference[:, j], rtol=1e-9, atol=1e-9, equal_nan=True,
                                   err_msg=name)  # fmt: skip
