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

from models.tree_kernels import predict_rows
from models.tree_shap import Node, TooDeep, leaf_paths


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
        nodes: list[Node] = []  # in preorder, as the SHAP tables parse them
        roots: list[int] = []
        leaves: list[float] = []
        children: dict[tuple[int, bool], int] = {}  # (node, left?) -> node, or ~leaf
        try:
            for tree in booster.dump_model()["tree_info"]:
                first = len(nodes)
                for value, path, _ in leaf_paths(tree["tree_structure"], nodes):
                    leaves.append(value)
                    below = [node for node, _ in path[1:]] + [~(len(leaves) - 1)]
                    children.update(zip(path, below, strict=True))
                roots.append(first if len(nodes) > first else ~(len(leaves) - 1))
        except TooDeep:  # categorical splits
            return None
        if not nodes:
            return None
        kids = np.array([[children[n, True], children[n, False]] for n in range(len(nodes))], dtype=np.int64)
        feature, threshold, default_left, missing = (
            np.array(col) for col in list(zip(*nodes, strict=True))[:4]
        )
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
        predict_rows(X, self.roots, self.feature, self.threshold, self.default_left, self.missing, self.left,
                     self.right, self.leaf_value, out)  # fmt: skip
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
