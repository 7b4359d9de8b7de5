"""LightGBM's prediction of a model with numerical splits, compiled (numba) over flat node arrays.

`Booster.predict` pays for a general predictor on every call (≈ 0.25 ms for 100 rows of 150 trees here, most of it
in LightGBM's per-call set-up, and more in a server where the call runs with cold caches); the trees themselves are a
few hundred KB of thresholds. The same traversal over flat arrays, compiled once: the same decisions as LightGBM's
`NumericalDecision` (missing values, zero-as-missing, default directions) and the same sum in tree order.
`CompiledTrees.from_booster` checks itself against `Booster.predict` on probe rows (values at every threshold, NaN,
zero) and returns None for models it does not reproduce (categorical splits, linear trees, transformed outputs);
those are scored by LightGBM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from models.tree_shap import ZERO, dumped_threshold


@dataclass(frozen=True)
class CompiledTrees:
    roots: np.ndarray  # (trees,): the root node, or ~leaf for a one-leaf tree
    feature: np.ndarray  # (nodes,)
    threshold: np.ndarray
    default_left: np.ndarray
    missing: np.ndarray  # 0 None, 1 Zero, 2 NaN
    left: np.ndarray  # child: a node, or ~leaf
    right: np.ndarray
    leaf_value: np.ndarray  # (leaves,)

    @classmethod
    def from_booster(cls, booster: Any) -> CompiledTrees | None:
        """The compiled model, or None when it would not reproduce `booster.predict` (then use LightGBM)."""
        model = booster.dump_model()
        nodes: list[tuple[int, float, bool, int]] = []
        children: list[list[int]] = []
        leaves: list[float] = []

        def walk(node: dict[str, Any]) -> int:
            if "leaf_value" in node:
                leaves.append(float(node["leaf_value"]))
                return ~(len(leaves) - 1)
            if node.get("decision_type", "<=") != "<=":
                raise ValueError("categorical split")
            index = len(nodes)
            nodes.append((int(node["split_feature"]), dumped_threshold(node), bool(node["default_left"]),
                          {"None": 0, "Zero": 1, "NaN": 2}[node.get("missing_type", "None")]))  # fmt: skip
            children.append([0, 0])
            children[index][0] = walk(node["left_child"])
            children[index][1] = walk(node["right_child"])
            return index

        try:
            roots = [walk(tree["tree_structure"]) for tree in model["tree_info"]]
        except ValueError:
            return None
        if not nodes:
            return None
        feature, threshold, default_left, missing = (np.array(col) for col in zip(*nodes, strict=True))
        kids = np.array(children, dtype=np.int64).reshape(-1, 2)
        compiled = cls(np.array(roots, dtype=np.int64), feature.astype(np.int64), threshold.astype(np.float64),
                       default_left.astype(np.bool_), missing.astype(np.int8), kids[:, 0].copy(), kids[:, 1].copy(),
                       np.array(leaves, dtype=np.float64))  # fmt: skip
        probe = compiled._probe_rows(booster.num_feature())
        if not np.allclose(
            compiled.predict(probe), booster.predict(probe, num_threads=1), rtol=1e-12, atol=1e-12
        ):
            return None
        return compiled

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw scores of the rows of X (columns in the model's feature order), as `Booster.predict`."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty(X.shape[0])
        _predict_rows(X, self.roots, self.feature, self.threshold, self.default_left, self.missing, self.left,
                      self.right, self.leaf_value, ZERO, out)  # fmt: skip
        return out

    def _probe_rows(self, n_features: int, rows: int = 512) -> np.ndarray:
        """Rows whose values sit at, just below and just above the model's thresholds, with NaN and zero mixed in:
        every kind of decision is taken somewhere."""
        rng = np.random.default_rng(0)
        X = rng.normal(size=(rows, n_features))
        for f in range(n_features):
            cuts = self.threshold[self.feature == f]  # an infinite one probes with +-inf
            if len(cuts):
                picks = rng.choice(cuts, rows) + rng.choice([-1e-9, 0.0, 1e-9], rows)
                X[:, f] = np.where(rng.random(rows) < 0.8, picks, X[:, f])
        X[rng.random(X.shape) < 0.1] = np.nan
        X[rng.random(X.shape) < 0.05] = 0.0
        with np.errstate(over="ignore"):  # thresholds beyond float32's range probe as +-inf
            return X.astype(np.float32)


@njit(cache=True, nogil=True)
def _predict_rows(X, roots, feature, threshold, default_left, missing, left, right, leaf_value, zero, out):  # type: ignore[no-untyped-def]  # fmt: skip
    # `zero` is an argument, not the imported global: numba's cache would keep a stale copy of another module's
    # constant
    for r in range(X.shape[0]):
        total = 0.0
        for t in range(roots.shape[0]):
            node = roots[t]
            while node >= 0:
                v = X[r, feature[node]]
                kind = missing[node]
                # LightGBM reads |v| <= kZeroThreshold as 0 when it takes the row in, and NaN as 0 unless the
                # split sends NaN its own way
                if (np.isnan(v) and kind != 2) or -zero <= v <= zero:
                    v = 0.0
                if (kind == 2 and np.isnan(v)) or (kind == 1 and v == 0.0):
                    go_left = default_left[node]
                else:
                    go_left = v <= threshold[node]
                node = left[node] if go_left else right[node]
            total += leaf_value[~node]
        out[r] = total
