"""The explanation summary of returned rows equals its numpy reference: top features by |SHAP| (ties in feature
order, as a stable argsort) and the personalization score."""

from __future__ import annotations

import numpy as np

from serving.explanations import top_inputs


def test_summary_equals_a_stable_argsort_and_the_masked_sum():
    rng = np.random.default_rng(0)
    names = [*(f"user.{i}" for i in range(4)), *(f"metadata.{i}" for i in range(8))]
    personal = np.array([n.startswith("user.") for n in names])
    for trial in range(200):
        contribs = rng.integers(-3, 4, size=(int(rng.integers(1, 12)), len(names))).astype(float) / 4  # ties
        top = int(rng.integers(1, 15))
        got_personal, index, values = top_inputs(contribs, personal, personalized=trial % 2 == 0, top=top)
        order = np.argsort(-np.abs(contribs), axis=1, kind="stable")[:, :top]
        np.testing.assert_array_equal(index, order)
        np.testing.assert_array_equal(values, np.round(np.take_along_axis(contribs, order, axis=1), 6))
        want = contribs[:, personal].sum(axis=1) if trial % 2 == 0 else np.zeros(len(contribs))
        np.testing.assert_allclose(got_personal, want)
