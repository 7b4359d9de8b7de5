"""The compiled (numba) kernels over a LightGBM model's flat node arrays: scoring (`models.compiled_trees`) and the
SHAP tables' look-up (`models.tree_shap`). In one module, with the one split decision they share: numba's on-disk
cache is invalidated by a change of the kernel's own file only, so a kernel must not call compiled code of another.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold, a float literal (1e-35f) held as a double


@njit(cache=True, nogil=True, inline="always")
def goes_left(v, threshold, missing, default_left):  # type: ignore[no-untyped-def]
    """LightGBM's NumericalDecision. missing: 0 None, 1 Zero, 2 NaN. LightGBM reads |v| <= kZeroThreshold as 0 when
    it takes the row in, and NaN as 0 unless the split routes NaN its own way."""
    nan = np.isnan(v)
    if (nan and missing != 2) or -ZERO <= v <= ZERO:
        v = 0.0
    if (missing == 2 and nan) or (missing == 1 and v == 0.0):
        return default_left
    return v <= threshold


@njit(cache=True, nogil=True)
def predict_rows(X, roots, feature, threshold, default_left, missing, left, right, leaf_value, out):  # type: ignore[no-untyped-def]  # fmt: skip
    """Each row down each tree, the leaves' values summed in tree order (as LightGBM sums them)."""
    for r in range(X.shape[0]):
        total = 0.0
        for t in range(roots.shape[0]):
            node = roots[t]
            while node >= 0:
                go_left = goes_left(X[r, feature[node]], threshold[node], missing[node], default_left[node])
                node = left[node] if go_left else right[node]
            total += leaf_value[~node]
        out[r] = total


@njit(cache=True, nogil=True)
def explain_rows(X, node_feature, node_threshold, node_default_left, node_missing, node_edge, leaf_edge, slot_feature,
                 slot_count, leaf_bits, leaf_offset, shares, out):  # type: ignore[no-untyped-def]  # fmt: skip
    """Every split decided once per row; each node's pattern of followed
    splits from its parent's (one step per node, not one per split of every leaf's path); per leaf one packed row of
    shares added to the slots' features. Rows innermost, without branches on the data."""
    rows, n_nodes = X.shape[0], node_feature.shape[0]
    # node-major decisions, 1 = left; the extra last node is the roots' parent (pattern 0, followed)
    left = np.ones((n_nodes + 1, rows), dtype=np.uint8)  # small: these are rewritten on every request
    for n in range(n_nodes):
        feature, threshold = node_feature[n], node_threshold[n]
        missing, default = node_missing[n], node_default_left[n]
        for r in range(rows):
            left[n, r] = np.uint8(goes_left(X[r, feature], threshold, missing, default))
    # bit k: the row follows the path's split k (k <= 10)
    prefix = np.zeros((n_nodes + 1, rows), dtype=np.int32)
    for n in range(n_nodes):
        parent, side, shift = node_edge[n, 0], node_edge[n, 1], node_edge[n, 2]
        for r in range(rows):
            prefix[n, r] = prefix[parent, r] | ((1 - (np.int32(left[parent, r]) ^ side)) << shift)
    for leaf in range(leaf_edge.shape[0]):
        parent, side, shift = leaf_edge[leaf, 0], leaf_edge[leaf, 1], leaf_edge[leaf, 2]
        depth = slot_count[leaf]
        mask = (1 << leaf_bits[leaf]) - 1
        base = leaf_offset[leaf]
        for r in range(rows):
            pattern = (prefix[parent, r] | ((1 - (np.int32(left[parent, r]) ^ side)) << shift)) & mask
            at = base + pattern * depth
            for s in range(depth):
                out[r, slot_feature[leaf, s]] += shares[at + s]
