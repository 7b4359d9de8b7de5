"""The model inputs: the compiled kernel equals a plain numpy reference; list-depth features are comparable between a
logged list of 10 and a served list of 100; co-visitation and text match equal their definitions; serving's user
vector equals training's; the supply check refuses what a build cannot provide."""

import numpy as np
import pandas as pd
import pytest

from feature_repo.inputs import (
    InputPlan,
    InputsUnavailable,
    available_inputs,
    covisitation,
    encode_users,
    select_inputs,
    supply_problems,
    user_vector,
)
from feature_repo.manifest import Encodings, FeatureManifest
from feature_repo.text import TextIndex
from reranker.featureset import parse_feature_set

DECLARATION = """
name: unit
documents:
  brand: {kind: categorical, max_values: 4}
  price: {kind: numeric, buckets: [10, 20]}
  tags: {kind: multi_categorical, max_values: 3}
  created_at: {kind: timestamp}
  title: {kind: text}
request:
  in_stock: {kind: boolean}
context:
  device: {kind: categorical, values: [mobile, desktop]}
engagement: {windows_days: [7], kinds: [click]}
affinities: [brand, tags, price]
collaborative: {factors: 3}
query: {text: [title], click_stats: true}
"""


def manifest(values_brand=("a", "b", "c"), views=True) -> FeatureManifest:
    fs = parse_feature_set(DECLARATION)
    catalog = pd.DataFrame({"document_id": ["d0", "d1", "d2"], "brand": list(values_brand),
                            "price": [5.0, 15.0, 25.0], "tags": ["x|y", "y", "z"],
                            "created_at": pd.to_datetime(["2026-01-01"] * 3, utc=True), "title": ["a", "b", "c"]})  # fmt: skip
    encodings = Encodings.build(fs, catalog, None, None)
    specs = {"document_engagement": {"entity": "document", "columns": {"exposures": "Float64", "positives": "Float64"}},
             "user_activity": {"entity": "user", "columns": {"events": "Float64", "positives": "Float64"}},
             "document_factors": {"entity": "document", "columns": {}, "epoch_keyed": True},
             "user_factors": {"entity": "user", "columns": {}, "epoch_keyed": True},
             "document_neighbors": {"entity": "document", "columns": {}, "epoch_keyed": True},
             "query_document": {"entity": "query_document", "columns": {}}} if views else {}  # fmt: skip
    return FeatureManifest(feature_set=fs, encodings=encodings, documents=["d0", "d1", "d2"], views=specs)


def random_block(m: FeatureManifest, sizes: list[int], seed: int):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    docs = rng.gamma(2.0, 5.0, (n, len(m.columns[0])))
    cols = m.columns[0]
    docs[:, cols["attr:brand"]] = rng.integers(0, 5, n)  # codes 0..3, 4 = other
    for s in range(4):
        docs[:, cols[f"attr:tags#{s}"]] = rng.random(n) < 0.4
    docs[:, cols["fac:epoch"]] = rng.integers(0, 2, n)
    docs[rng.random(docs.shape) < 0.1] = np.nan
    users = rng.random((len(sizes), len(m.columns[1])))
    users[:, m.columns[1]["fac:epoch"]] = 1.0
    users[-1] = np.nan  # an unknown user
    extras = rng.normal(size=(n, len(m.columns[2])))
    first = rng.normal(size=n)
    first[rng.random(n) < 0.1] = np.nan
    first[2] = first[1]  # a tie
    starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    return docs, users, extras, first, starts, rng.uniform(20_000, 21_000, len(sizes))


def reference(m: FeatureManifest, inputs, docs, users, extras, first, starts, now):
    """Each input by its definition, list by list, in numpy."""
    dc, uc, ec = m.columns
    out = np.full((len(first), len(inputs)), np.nan)
    for lst in range(len(starts) - 1):
        rows = np.arange(starts[lst], starts[lst + 1])
        u = users[lst]
        f = first[rows]
        ok = ~np.isnan(f)
        order = rows[ok][np.argsort(-f[ok], kind="stable")]
        rank = pd.Series(np.nan, index=rows)
        rank[order] = np.arange(1, len(order) + 1)
        for j, spec in enumerate(inputs):
            for r in rows:
                d = docs[r]
                if spec.op == "doc":
                    v = d[dc[spec.source]]
                elif spec.op == "user":
                    v = u[uc[spec.source]]
                elif spec.op == "extra":
                    v = extras[r, ec[spec.source]]
                elif spec.op == "code":
                    v = d[dc[spec.source]]
                    v = v if np.isnan(v) or v < len(m.encodings.attributes["brand"].values) else 4
                elif spec.op == "slot_other":
                    block = d[
                        dc["attr:tags#0"] + len(m.encodings.attributes["tags"].values) : dc["attr:tags#0"] + 4
                    ]
                    v = np.nan if np.isnan(block).all() else np.nanmax(block)
                elif spec.op == "age":
                    v = now[lst] - d[dc[spec.source]]
                elif spec.op == "affinity_code":
                    code = d[dc["attr:brand"]]
                    v = np.nan if np.isnan(code) else u[uc["aff:brand#0"] + int(code)]
                elif spec.op in ("affinity_mean", "affinity_max"):
                    x, a = (
                        d[dc["attr:tags#0"] : dc["attr:tags#0"] + 4],
                        u[uc["aff:tags#0"] : uc["aff:tags#0"] + 4],
                    )
                    ok2 = ~np.isnan(x) & ~np.isnan(a)
                    if (x[ok2] > 0).sum() == 0 or x[ok2].sum() <= 0:
                        v = np.nan
                    elif spec.op == "affinity_mean":
                        v = (x[ok2] * a[ok2]).sum() / x[ok2].sum()
                    else:
                        v = a[ok2 & (x > 0)].max()
                elif spec.op == "affinity_bucket":
                    p = d[dc["attr:price"]]
                    v = (
                        np.nan
                        if np.isnan(p)
                        else u[uc["aff:price#0"] + int(np.searchsorted([10, 20], p, "right"))]
                    )
                elif spec.op == "dot":
                    same = d[dc["fac:epoch"]] == u[uc["fac:epoch"]]
                    v = (
                        float(d[dc["fac:0"] : dc["fac:0"] + 3] @ u[uc["fac:0"] : uc["fac:0"] + 3])
                        if same
                        else np.nan
                    )
                elif spec.op == "first_stage_score":
                    v = first[r]
                elif spec.op == "first_stage_rank":
                    v = rank[r]
                else:
                    v = first[r] - np.nanmax(f) if not np.isnan(first[r]) else np.nan
                out[r, j] = v
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_kernel_equals_the_definition_of_every_input(seed):
    m = manifest()
    inputs = available_inputs(m)
    assert {i.op for i in inputs} >= {"doc", "user", "extra", "code", "slot_other", "age", "affinity_code",
                                      "affinity_mean", "affinity_max", "affinity_bucket", "dot",
                                      "first_stage_rank", "first_stage_gap"}  # fmt: skip
    block = random_block(m, [12, 1, 30, 7], seed)
    got = InputPlan.build(inputs, m).compute(*block)
    want = reference(m, inputs, *block)
    for j, spec in enumerate(inputs):
        np.testing.assert_allclose(got[:, j], want[:, j], equal_nan=True, err_msg=spec.name)


def test_list_depth_features_match_between_a_logged_top_10_and_a_served_100():
    """A logged list shows the first stage's top 10; serving ranks all 100: the top 10's inputs are the same in
    both (first-stage rank and gap to the best are relative to the top, every other input is the document's own)."""
    m = manifest()
    inputs = available_inputs(m)
    docs, users, extras, first, _, now = random_block(m, [100], 3)
    first = np.random.default_rng(4).permutation(100).astype(float)  # no gaps, no ties
    top = np.argsort(-first)[:10]
    plan = InputPlan.build(inputs, m)
    deep = plan.compute(docs, users, extras, first, np.array([0, 100]), now)
    shallow = plan.compute(docs[top], users, extras[top], first[top], np.array([0, 10]), now)
    np.testing.assert_allclose(shallow, deep[top], equal_nan=True)


def test_covisitation_is_the_mean_and_max_similarity_to_the_recent_positives():
    rng = np.random.default_rng(5)
    n_docs = 40
    neighbours = [rng.choice(n_docs, size=rng.integers(0, 8), replace=False) for _ in range(n_docs)]
    sims = [rng.random(len(nb)) for nb in neighbours]
    indptr = np.r_[0, np.cumsum([len(x) for x in neighbours])].astype(np.int64)
    recent = [rng.choice(n_docs, size=5, replace=False), np.array([], dtype=np.int64), rng.choice(n_docs, 3)]
    recent_ptr = np.r_[0, np.cumsum([len(r) for r in recent])].astype(np.int64)
    row_doc = np.r_[rng.integers(0, n_docs, 20), [-1]].astype(np.int64)
    list_of_row = np.repeat([0, 1, 2], [10, 4, 7]).astype(np.int64)
    got = covisitation(row_doc, list_of_row, indptr, np.concatenate(neighbours).astype(np.int64),
                       np.concatenate(sims), recent_ptr, np.concatenate(recent).astype(np.int64), n_docs)  # fmt: skip
    for r, (doc, lst) in enumerate(zip(row_doc, list_of_row, strict=True)):
        mine = set(recent[lst].tolist())
        if not mine or doc < 0:
            assert np.isnan(got[r]).all()
            continue
        hits = [s for nb, s in zip(neighbours[doc], sims[doc], strict=True) if nb in mine]
        assert got[r, 0] == pytest.approx(sum(hits) / len(mine)) and got[r, 1] == pytest.approx(
            max(hits, default=0)
        )


def test_text_match_is_the_cosine_of_sklearns_tfidf_vectors():
    texts = ["Acme rugged boots", "Borealis light lamp", "Cobalt boots and lamp", "", "acme acme kettle"]
    index = TextIndex.build(texts)
    matrix = index.vectorizer.transform(texts)
    for query in ["boots", "acme boots", "lamp lamp kettle", "nothing known", ""]:
        ids, weights = index.vector(query)
        want = (matrix @ index.vectorizer.transform([query]).T).toarray().ravel()
        got = index.match(np.arange(5), np.zeros(5, np.int64), [ids], [weights])
        if not len(ids):
            assert np.isnan(got).all()
        else:
            np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.isnan(index.match(np.array([-1]), np.zeros(1, np.int64), [ids], [weights])).all()


def test_serving_user_vector_equals_the_training_encoding():
    m = manifest()
    values = {"user_activity__events": 12.0, "user_activity__positives": None,
              "user_affinity__brand": np.linspace(0, 1, 5), "user_affinity__tags": [0.1, 0.2, 0.3, 0.4],
              "user_affinity__price": np.array([0.5, 0.25]),  # wrong width: missing, in both paths
              "user_factors__factors": [1.0, 2.0, 3.0], "user_factors__epoch": 4}  # fmt: skip
    raw = pd.DataFrame([{k: v for k, v in values.items() if not isinstance(v, list | np.ndarray)}])
    for key, value in values.items():
        if isinstance(value, list | np.ndarray):
            raw[key] = pd.Series([np.asarray(value)], dtype=object)
    np.testing.assert_array_equal(user_vector(values, m), encode_users(raw, m)[0])


def test_selection_by_name_family_or_attribute():
    inputs = available_inputs(manifest())
    mask, unknown = select_inputs(inputs, ["engagement", "metadata.tags", "affinity.brand", "nope"])
    chosen = {i.name for i, keep in zip(inputs, mask, strict=True) if keep}
    assert unknown == ["nope"]
    assert (
        "engagement.positives" in chosen and "metadata.tags#00" in chosen and "metadata.tags#other" in chosen
    )
    assert "affinity.brand" in chosen and "affinity.tags" not in chosen and "metadata.price" not in chosen


def test_a_build_that_cannot_supply_a_models_inputs_is_refused():
    m = manifest()
    inputs = available_inputs(m)
    grown = manifest(
        values_brand=("a", "b", "e")
    )  # appended vocabularies keep old codes; this one changed them
    assert supply_problems(inputs, m.encodings, m) == []
    extended = m.model_copy(deep=True)
    extended.encodings.attributes["brand"].values.append("new")  # a newer build that only appended a value
    assert supply_problems(inputs, m.encodings, extended) == []
    assert any("vocabulary changed" in p for p in supply_problems(inputs, Encodings(attributes={
        "brand": grown.encodings.attributes["brand"]}), m))  # fmt: skip
    bare = manifest(views=False)
    with pytest.raises(InputsUnavailable, match=r"engagement\.exposures: not supplied"):
        InputPlan.build(inputs, bare, m.encodings)
