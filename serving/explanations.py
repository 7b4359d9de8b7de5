"""Each returned item's explanation in `learned_rerank`: its top features by |SHAP| and its personalization score
(the SHAP of the inputs that depend on the user: user activity, affinities, collaborative signals), from the rows'
SHAP values.

`top_features` reads as the seed's `"feature:value"` strings (`"category:technology"`, `"price:<20"`,
`"genres:drama"`): categorical codes decoded to their values, numeric attributes put in their feature build's bucket
(`<20`, `20-50`, `>=100`), other numbers in a 1-2-5 bucket (`0.02-0.05`); `top_feature_contributions` carries the
full input name, the same value and the SHAP contribution beside them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from feature_repo.inputs import ModelInput
from feature_repo.manifest import Encodings
from reranker.featureset import ContextKind, DocumentKind, FeatureSet


def top_inputs(contribs: np.ndarray, personal: np.ndarray, personalized: bool,
               top: int) -> tuple[list[float], np.ndarray, np.ndarray]:  # fmt: skip
    """Per row of `contribs` (rows x inputs): the personalization score (the sum over the `personal` inputs; 0 when
    not personalized), the `top` input columns by |SHAP|, largest first and ties in input order (as a stable
    argsort), and their contributions rounded to 6 decimals."""
    rows = contribs.shape[0]
    top = min(top, contribs.shape[1])
    index = np.empty((rows, top), dtype=np.int64)
    value = np.empty((rows, top))
    scores = np.zeros(rows)
    _summarize(np.ascontiguousarray(contribs), np.asarray(personal, dtype=np.bool_), personalized, index, value,
               scores)  # fmt: skip
    return scores.tolist(), index, np.round(value, 6)


@dataclass(frozen=True)
class InputLabel:
    """How one model input reads in `top_features`: the name before the colon and how its value is written."""

    label: str
    kind: str  # category | slot | other_slot | flag | bucket | number | rank
    values: tuple[str, ...] = ()  # category: labels by code; slot: the slot's value
    edges: tuple[float, ...] = ()  # bucket: the feature build's edges

    def text(self, value: float) -> str:
        if value is None or math.isnan(value):
            return "missing"
        if self.kind == "category":
            code = int(value)
            return self.values[code] if 0 <= code < len(self.values) else "other"
        if self.kind == "slot":
            return self.values[0] if value >= 0.5 else f"not_{self.values[0]}"
        if self.kind == "other_slot":
            return "other" if value >= 0.5 else "no_other"
        if self.kind == "flag":
            return "yes" if value >= 0.5 else "no"
        if self.kind == "bucket":
            return bucket_text(value, self.edges)
        if self.kind == "rank":
            return rank_range(value)
        return nice_range(value)


def bucket_text(value: float, edges: tuple[float, ...]) -> str:
    """The feature build's bucket of a number: `<20`, `20-50`, `>=100`."""
    if not edges:
        return nice_range(value)
    if value < edges[0]:
        return f"<{_num(edges[0])}"
    for lo, hi in itertools.pairwise(edges):
        if lo <= value < hi:
            return f"{_num(lo)}-{_num(hi)}"
    return f">={_num(edges[-1])}"


def _scale(size: float) -> tuple[float, float]:
    """The 1-2-5 step at or below `size` and the next one up."""
    decade = 10.0 ** math.floor(math.log10(size))
    mantissa = next(m for m in (5.0, 2.0, 1.0) if size >= m * decade * (1 - 1e-12))
    return mantissa * decade, {1.0: 2.0, 2.0: 5.0, 5.0: 10.0}[mantissa] * decade


def nice_range(value: float) -> str:
    """A readable range around a number on the 1-2-5 scale: 17.3 -> `10-20`, 0.034 -> `0.02-0.05`, 0 -> `0`."""
    if value == 0:
        return "0"
    lo, hi = _scale(abs(value))
    return f"{_num(-hi)} to {_num(-lo)}" if value < 0 else f"{_num(lo)}-{_num(hi)}"


def rank_range(value: float) -> str:
    """Ranks and counts: 1, 2, 3 as themselves, then `4-5`, `6-10`, `11-20`, `21-50`, ... (upper ends included)."""
    if value <= 3:
        return str(int(value))
    lo, hi = _scale(value)
    if value == lo:  # a step closes the range below it
        lo, hi = _scale(lo * 0.999)[0], lo
    return f"{int(max(lo, 3)) + 1}-{int(hi)}"


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1e4 and float(x).is_integer() else f"{x:.4g}"


def input_labels(inputs: tuple[ModelInput, ...] | list[ModelInput], fs: FeatureSet,
                 encodings: Encodings) -> list[InputLabel]:  # fmt: skip
    """How each input of a model reads (computed once per served model and feature build)."""
    out = []
    for spec in inputs:
        short = spec.name.split(".", 1)[1] if "." in spec.name else spec.name
        attr = encodings.attributes.get(spec.attribute) if spec.attribute else None
        if spec.family == "metadata" and spec.attribute is not None:
            kind = fs.documents[spec.attribute].kind if spec.attribute in fs.documents else None
            if spec.op == "code" and attr is not None:
                out.append(InputLabel(spec.attribute, "category", (*attr.values, "other")))
            elif spec.op == "doc" and spec.slot is not None:
                out.append(InputLabel(spec.attribute, "slot", (spec.description,)))
            elif spec.op == "slot_other":
                out.append(InputLabel(spec.attribute, "other_slot"))
            elif kind is DocumentKind.boolean:
                out.append(InputLabel(spec.attribute, "flag"))
            elif spec.op == "doc" and attr is not None and attr.buckets:
                out.append(InputLabel(spec.attribute, "bucket", edges=tuple(attr.buckets)))
            else:
                out.append(InputLabel(short, "number"))
        elif spec.family == "affinity":
            out.append(InputLabel(f"{short}_affinity", "number"))
        elif spec.family == "first_stage":
            out.append(InputLabel(f"first_stage_{short}", "rank" if short == "rank" else "number"))
        elif spec.family == "context" and short in fs.context:
            ctx = fs.context[short]
            if ctx.kind is ContextKind.categorical:
                out.append(InputLabel(short, "category", (*encodings.context.get(short, []), "other")))
            elif ctx.kind is ContextKind.boolean:
                out.append(InputLabel(short, "flag"))
            else:
                out.append(InputLabel(short, "rank" if ctx.kind is not ContextKind.numeric else "number"))
        elif spec.family == "request" and short in fs.request and fs.request[short].kind.value == "boolean":
            out.append(InputLabel(short, "flag"))
        else:
            out.append(InputLabel(short, "number"))
    return out


def feature_strings(X: np.ndarray, index: np.ndarray, contributions: np.ndarray, names: list[str],
                    labels: list[InputLabel]) -> tuple[list[list[str]], list[list[dict[str, object]]]]:  # fmt: skip
    """Per row: its top inputs as `"label:value"` strings, and as `{name, value, contribution}`."""
    strings: list[list[str]] = []
    detail: list[list[dict[str, object]]] = []
    for row, (cols, vals) in enumerate(zip(index.tolist(), contributions.tolist(), strict=True)):
        texts = [labels[j].text(float(X[row, j])) for j in cols]
        strings.append([f"{labels[j].label}:{t}" for j, t in zip(cols, texts, strict=True)])
        detail.append([{"name": names[j], "value": t, "contribution": c}
                       for j, t, c in zip(cols, texts, vals, strict=True)])  # fmt: skip
    return strings, detail


def warm_up() -> None:
    """Compile the kernel now (or load it from numba's cache), not in a request."""
    top_inputs(np.zeros((1, 2)), np.array([True, False]), personalized=True, top=1)


@njit(cache=True, nogil=True)
def _summarize(contribs, personal_mask, personalized, index, value, personal):  # type: ignore[no-untyped-def]
    rows, n = contribs.shape
    taken = np.zeros(n, dtype=np.bool_)
    for r in range(rows):
        if personalized:
            total = 0.0
            for j in range(n):
                if personal_mask[j]:
                    total += contribs[r, j]
            personal[r] = total
        taken[:] = False
        for t in range(index.shape[1]):
            best, best_size = -1, -1.0
            for j in range(n):
                size = abs(contribs[r, j])
                if np.isnan(size):  # last, as argsort puts NaN
                    size = -0.5
                if not taken[j] and size > best_size:
                    best, best_size = j, size
            taken[best] = True
            index[r, t] = best
            value[r, t] = contribs[r, best]
