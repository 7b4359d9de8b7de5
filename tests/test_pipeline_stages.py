"""The pipeline's stages as pure functions: conditions, the definition and its templates, the slot filling under
rules with exploration, MMR and diversity, the static rerank, the readable explanations and segment names."""

import numpy as np
import pandas as pd
import pytest

from models.conditions import ConditionError, parse_condition
from models.diversity import attribute_similarity, intra_list_diversity, mmr_order
from models.pipeline_spec import StageError, StageSpec, resolve
from models.slate import Cap, fill_slots, violations
from models.static_rerank import StaticRanker, match_scores
from reranker.exploration import epsilon_greedy_slots


class Table:
    def __init__(self, **columns):
        self.columns = columns

    def values(self, field):
        return self.columns.get(field, [None] * len(next(iter(self.columns.values()))))


def test_conditions_cover_the_seeds_operators_and_groups():
    t = Table(**{"metadata.category": ["tech", "Tech", "food", None],
                 "metadata.tags": [["a", "b"], ["c"], [], None],
                 "features.in_stock": [1.0, 0.0, True, None],
                 "score": [0.9, 0.5, 0.1, 0.3]})  # fmt: skip

    def ev(spec):
        return parse_condition(spec).evaluate(t)

    assert ev({"field": "metadata.category", "operator": "eq", "value": "tech"}) == [True, True, False, False]
    assert ev({"field": "metadata.category", "operator": "eq", "value": "tech", "case_sensitive": True}) == [
        True, False, False, False]  # fmt: skip
    assert ev({"field": "metadata.category", "operator": "ne", "value": "tech"}) == [False, False, True, True]
    assert ev({"field": "metadata.tags", "operator": "in", "value": ["b", "c"]}) == [True, True, False, False]
    assert ev({"field": "metadata.tags", "operator": "nin", "value": ["b"]}) == [False, True, True, True]
    assert ev({"field": "features.in_stock", "operator": "eq", "value": True}) == [True, False, True, False]
    assert ev({"field": "score", "operator": "gte", "value": 0.5}) == [True, True, False, False]
    assert ev({"field": "score", "operator": "lt", "value": 0.3}) == [False, False, True, False]
    assert ev({"field": "metadata.category", "operator": "exists", "value": True}) == [
        True,
        True,
        True,
        False,
    ]
    assert ev({"field": "metadata.tags", "operator": "exists", "value": False}) == [False, False, True, True]
    assert ev({"field": "metadata.category", "operator": "starts_with", "value": "te"}) == [
        True,
        True,
        False,
        False,
    ]
    assert ev({"AND": [{"field": "score", "operator": "gt", "value": 0.2},
                       {"OR": [{"field": "metadata.category", "operator": "eq", "value": "food"},
                               {"NOT": {"field": "features.in_stock", "operator": "eq", "value": 1}}]}]}) == [
        False, True, False, True]  # fmt: skip
    assert ev(
        [
            {"field": "score", "operator": "gt", "value": 0.2},
            {"field": "metadata.category", "operator": "exists"},
        ]
    ) == [True, True, False, False]


@pytest.mark.parametrize("spec, where", [
    ({"field": "metadata.x", "operator": "regex", "value": "a"}, ".operator"),
    ({"field": "price", "operator": "eq", "value": 1}, ".field"),
    ({"field": "metadata.x", "operator": "in", "value": "a"}, ".value"),
    ({"AND": []}, ".AND"),
    ({"AND": [{"field": "metadata.x"}], "OR": []}, ""),
    ({"field": "metadata.x", "operator": "eq", "value": 1, "boost": 2}, ""),
])  # fmt: skip
def test_malformed_conditions_say_where(spec, where):
    with pytest.raises(ConditionError) as err:
        parse_condition(spec)
    assert err.value.path == where


def test_nesting_is_bounded():
    spec = {"field": "metadata.x", "operator": "exists"}
    for _ in range(12):
        spec = {"NOT": spec}
    with pytest.raises(ConditionError, match="nest"):
        parse_condition(spec)


def stages(*specs):
    return [StageSpec.model_validate(s) for s in specs]


def test_templates_fill_parameters_from_inputs_keeping_their_types():
    got = resolve(stages(
        {"stage_type": "filter", "stage_id": "structured_filter",
         "parameters": {"conditions": {"field": "metadata.category", "operator": "in", "value": "{{INPUT.cats}}"}}},
        {"stage_type": "sort", "stage_id": "learned_rerank",
         "parameters": {"model_id": "m-{{INPUT.tenant}}", "top_n": "{{ INPUT.n }}"}},
    ), {"cats": ["a", "b"], "tenant": "shop", "n": 5, "user_id": "u1", "query": "red shoes"})  # fmt: skip
    assert got[0].conditions[""].value == ["a", "b"]
    learned = got[1].params
    assert learned.model_id == "m-shop" and learned.top_n == 5
    assert learned.user_id == "u1" and learned.query == "red shoes"  # the seed's defaults: {{INPUT.user_id}}


@pytest.mark.parametrize("spec, field", [
    ({"stage_type": "sort", "stage_id": "structured_filter", "parameters": {"conditions": []}}, "stages[0].stage_type"),
    ({"stage_type": "sort", "stage_id": "llm_rerank"}, "stages[0].stage_id"),
    ({"stage_type": "sort", "stage_id": "mmr", "parameters": {"lambda": 1.5}}, "stages[0].parameters.lambda"),
    ({"stage_type": "sort", "stage_id": "learned_rerank", "parameters": {"model_id": "{{INPUT.nope}}"}},
     "stages[0].parameters.model_id"),
    ({"stage_type": "filter", "stage_id": "structured_filter",
      "parameters": {"conditions": {"AND": [{"field": "metadata.a", "operator": "zz"}]}}},
     "stages[0].parameters.conditions.AND[0].operator"),
    ({"stage_type": "sort", "stage_id": "business_rules",
      "parameters": {"boost": [{"when": {"field": "x", "operator": "eq", "value": 1}}]}},
     "stages[0].parameters.boost[0].when.field"),
    ({"stage_type": "sort", "stage_id": "business_rules", "parameters": {"cap": [{"field": "brand", "max": 2}]}},
     "stages[0].parameters.cap[0].field"),
])  # fmt: skip
def test_a_bad_stage_names_its_field(spec, field):
    with pytest.raises(StageError) as err:
        resolve(stages(spec), {})
    assert err.value.field == field


def test_without_rules_the_slots_are_the_stages_epsilon_greedy_draw_for_draw():
    scores = np.random.default_rng(3).normal(size=40)
    order = np.argsort(-scores, kind="stable")
    for seed in range(20):
        ref, ref_p = epsilon_greedy_slots(scores[None, :], 10, 0.3, np.random.default_rng(seed))
        got = fill_slots(order, 10, 0.3, np.random.default_rng(seed))
        np.testing.assert_array_equal(got.shown, ref[0])
        np.testing.assert_allclose(got.propensity, ref_p[0])


def brands_world(n=30, seed=0):
    rng = np.random.default_rng(seed)
    brands = [[b] for b in rng.choice(["acme", "zeta", "omni", "nova"], size=n, p=[0.55, 0.25, 0.1, 0.1])]
    return np.argsort(-rng.normal(size=n), kind="stable"), brands


@pytest.mark.parametrize("epsilon", [0.0, 0.2, 1.0])
def test_pins_and_caps_hold_in_every_slate_even_when_exploring(epsilon):
    order, brands = brands_world()
    pins = {0: int(order[17]), 3: int(order[25])}
    caps = [Cap(brands, limit=2, within=8, name="brand_cap")]
    rng = np.random.default_rng(1)
    for _ in range(300):
        slate = fill_slots(order, 10, epsilon, rng, pins, caps)
        assert violations(slate.shown.tolist(), pins, caps) == []
        assert len(set(slate.shown.tolist())) == len(slate.shown) == 10
        assert slate.propensity[0] == slate.propensity[3] == 1.0


def test_propensities_are_exact_and_sum_to_one_per_slot():
    """Each slot's logged propensity is the policy's own probability: the eligible set's probabilities (greedy
    1 - eps + eps/|E|, the others eps/|E|) sum to 1, and the empirical frequency of the first free slot's choice
    matches them."""
    order, brands = brands_world(n=12)
    caps = [Cap(brands, limit=1, within=5)]
    pins = {0: int(order[5])}
    eps = 0.3
    rng = np.random.default_rng(2)
    counts: dict[int, int] = {}
    logged: dict[int, float] = {}
    runs = 6000
    for _ in range(runs):
        slate = fill_slots(order, 4, eps, rng, pins, caps)
        pick = int(slate.shown[1])
        counts[pick] = counts.get(pick, 0) + 1
        logged[pick] = float(slate.propensity[1])
    assert abs(sum(logged.values()) - 1.0) < 1e-9  # every eligible document was drawn at least once
    for doc, p in logged.items():
        assert abs(counts[doc] / runs - p) < 4 * np.sqrt(p * (1 - p) / runs) + 1e-3


def test_a_cap_that_leaves_no_candidate_ends_the_slate_short_rather_than_break():
    brands = [["acme"]] * 6 + [["zeta"]]
    slate = fill_slots(np.arange(7), 5, 0.0, np.random.default_rng(0), caps=[Cap(brands, limit=2)])
    assert slate.shown.tolist() == [0, 1, 6]
    assert set(slate.capped) == {2, 3, 4, 5}


def test_mmr_trades_relevance_for_diversity_with_lambda():
    genres = [["drama"]] * 6 + [["comedy"]] * 2 + [["horror"]] * 2
    sim = attribute_similarity([genres])
    rel = np.linspace(1, 0, 10)
    assert mmr_order(rel, sim, 1.0).tolist() == list(range(10))  # all relevance: the order itself
    diverse = mmr_order(rel, sim, 0.3, 3).tolist()
    assert diverse == [0, 6, 8]  # one of each genre, the best of each
    assert intra_list_diversity(sim, diverse) > intra_list_diversity(sim, [0, 1, 2])


def test_attribute_similarity_handles_categories_lists_numbers_and_gaps():
    sim = attribute_similarity([["a", "a", "b", None], [[1, 2], [2], [3], [1]], [1.0, 3.0, 1.0, None]])
    assert sim[0, 1] == pytest.approx((1 + 0.5 + 0.0) / 3)
    assert sim[0, 2] == pytest.approx((0 + 0 + 1) / 3)
    assert sim[0, 3] == pytest.approx((0 + 0.5 + 0) / 3)
    assert np.allclose(np.diag(sim), 1)


def test_static_rerank_orders_by_query_match_then_first_stage():
    texts = ["red running shoes", "blue shoes", "red hat", None, "shoes shoes shoes red"]
    m = match_scores("red shoes", texts)
    assert m[3] == 0 and m[0] > m[1] > 0 and m[0] > m[2] > 0
    first = np.array([0.1, 0.2, 0.3, 0.9, 0.0])
    s = StaticRanker().score_request("red shoes", texts, first)
    assert np.argsort(-s)[:2].tolist() in ([0, 4], [4, 0])
    assert np.argsort(-StaticRanker().score_request(None, texts, first)).tolist() == [3, 2, 1, 0, 4]
    tfidf = StaticRanker(model="tfidf").score_request("red shoes", texts, first)
    assert tfidf[3] < min(tfidf[0], tfidf[1], tfidf[2])
    # the ranker interface: its inputs by name
    frame = pd.DataFrame({"query.bm25": m, "first_stage.score": first})
    np.testing.assert_allclose(StaticRanker().score(frame), s)


def test_feature_values_read_as_the_seeds_strings():
    from feature_repo.inputs import ModelInput
    from feature_repo.manifest import AttributeEncoding, Encodings
    from reranker.featureset import FeatureSet
    from serving.explanations import feature_strings, input_labels

    fs = FeatureSet.model_validate({"name": "shop", "documents": {
        "brand": {"kind": "categorical"}, "price": {"kind": "numeric"}, "genres": {"kind": "multi_categorical"},
        "sale": {"kind": "boolean"}}, "request": {"in_stock": {"kind": "boolean"}}})  # fmt: skip
    enc = Encodings(attributes={"brand": AttributeEncoding(kind="categorical", values=["acme", "zeta"], max_values=2),
                                "price": AttributeEncoding(kind="numeric", buckets=[20.0, 50.0, 100.0])})  # fmt: skip
    inputs = [ModelInput(name="metadata.brand", family="metadata", op="code", attribute="brand"),
              ModelInput(name="metadata.price", family="metadata", op="doc", attribute="price"),
              ModelInput(name="metadata.genres#00", family="metadata", op="doc", attribute="genres", slot=0,
                         description="drama"),
              ModelInput(name="metadata.sale", family="metadata", op="doc", attribute="sale"),
              ModelInput(name="request.in_stock", family="request", op="extra"),
              ModelInput(name="engagement.ctr_7d", family="engagement", op="doc"),
              ModelInput(name="first_stage.rank", family="first_stage", op="first_stage_rank")]  # fmt: skip
    labels = input_labels(inputs, fs, enc)
    X = np.array([[0, 12.5, 1, 1, 0, 0.034, 7], [2, 150, 0, 0, 1, np.nan, 1]], dtype=float)
    index = np.tile(np.arange(7), (2, 1))
    strings, detail = feature_strings(X, index, np.zeros((2, 7)), [i.name for i in inputs], labels)
    assert strings[0] == ["brand:acme", "price:<20", "genres:drama", "sale:yes", "in_stock:no",
                          "ctr_7d:0.02-0.05", "first_stage_rank:6-10"]  # fmt: skip
    assert strings[1] == ["brand:other", "price:>=100", "genres:not_drama", "sale:no", "in_stock:yes",
                          "ctr_7d:missing", "first_stage_rank:1"]  # fmt: skip
    assert detail[0][1] == {"name": "metadata.price", "value": "<20", "contribution": 0.0}


def test_segments_are_named_by_what_their_users_prefer_and_the_names_survive_renumbering():
    from feature_repo.manifest import AttributeEncoding, Encodings
    from feature_repo.segments import SegmentModel

    rng = np.random.default_rng(0)
    rows = []
    for taste in ("drama", "comedy", "horror"):
        for _ in range(60):
            share = np.full(4, 0.05)
            share[["drama", "comedy", "horror"].index(taste)] = 0.85
            rows.append({"positives": rng.integers(1, 50), "categories": share + rng.normal(0, 0.02, 4)})
    profiles = pd.DataFrame(rows)
    enc = Encodings(attributes={"categories": AttributeEncoding(kind="multi_categorical",
                                                                values=["drama", "comedy", "horror"],
                                                                max_values=3)})  # fmt: skip
    names = {}
    for seed in (1, 2, 3):
        model = SegmentModel.fit(profiles, ["categories"], n_segments=3, seed=seed, encodings=enc)
        assert sorted(model.names) == ["comedy_fan", "drama_fan", "horror_fan"]
        labels = model.assign(profiles)
        names[seed] = [model.names[c] for c in labels]
    assert names[1] == names[2] == names[3]  # whatever numbers k-means gave the segments


def test_offline_evaluation_prices_a_filter_and_mmr_on_the_same_lists():
    from models.pipeline_eval import evaluate_definitions

    rng = np.random.default_rng(0)
    n_lists, size = 60, 20
    docs = [f"d{i}" for i in range(40)]
    catalog = pd.DataFrame({"document_id": docs, "genre": [["drama", "comedy", "horror", "drama"][i % 4]
                                                           for i in range(40)]})  # fmt: skip
    rows = []
    for lst in range(n_lists):
        picked = rng.choice(40, size, replace=False)
        for pos, d in enumerate(picked):
            rows.append(
                {
                    "list_id": lst,
                    "user_id": f"u{lst % 15}",
                    "document_id": docs[d],
                    "first_stage_score": float(size - pos),
                    "label": float(d % 4 == 0 and rng.random() < 0.7),
                }
            )
    frame = pd.DataFrame(rows)
    starts = np.arange(0, n_lists * size + 1, size)
    learned = frame["label"].to_numpy() + rng.normal(0, 0.3, len(frame))  # a good model
    learned_stage = {
        "stage_type": "sort",
        "stage_id": "learned_rerank",
        "parameters": {"model_id": "m", "top_n": 20},
    }
    defs = {
        "learned": resolve(stages(learned_stage), {}),
        "no drama": resolve(stages({"stage_type": "filter", "stage_id": "structured_filter", "parameters": {
            "conditions": {"field": "metadata.genre", "operator": "ne", "value": "drama"}}}, learned_stage), {}),
        "mmr": resolve(stages(learned_stage, {"stage_type": "sort", "stage_id": "mmr",
                                              "parameters": {"lambda": 0.2, "top_k": 10}}), {}),
        "capped": resolve(stages(learned_stage, {"stage_type": "sort", "stage_id": "business_rules", "parameters": {
            "cap": [{"field": "metadata.genre", "max": 3}]}}), {}),
    }  # fmt: skip
    got = {r.name: r for r in evaluate_definitions(frame, starts, learned, catalog, defs, ["metadata.genre"],
                                                    n_boot=50)}  # fmt: skip
    assert got["learned"].lists == got["mmr"].lists > 0
    assert got["no drama"].ndcg.mean < got["learned"].ndcg.mean  # the relevant documents are dramas
    assert got["mmr"].diversity > got["learned"].diversity and got["mmr"].ndcg.mean < got["learned"].ndcg.mean
    assert all(r.compliance == 1.0 for r in got.values())
    assert got["capped"].mean_shown <= 9 < got["learned"].mean_shown  # three genres, at most three each


def test_the_documented_pipeline_example_runs_through_its_stages():
    """The /pipeline example of the API docs: valid, and its filter keeps the in-stock products it sends."""
    from models.pipeline_run import run_stages
    from serving.api_docs import PIPELINE_EXAMPLE
    from serving.schemas import PipelineRequest
    from serving.stage_pipeline import CandidateFields

    req = PipelineRequest.model_validate(PIPELINE_EXAMPLE)
    first = np.array([c.score for c in req.candidates], dtype=float)
    run = run_stages(resolve(req.stages, dict(req.inputs)), CandidateFields(req.candidates, None), first,
                     lambda params, idx: (-np.arange(len(idx), dtype=float), "learned"))  # fmt: skip
    assert [req.candidates[i].document_id for i in run.order] == ["p42", "p7"]
    assert run.pins == {0: 0} and run.stages[1].candidates_out == 2


def test_a_pin_past_a_short_slate_takes_its_last_slot():
    slate = fill_slots(np.arange(5), 10, 0.0, np.random.default_rng(0), pins={9: 0, 7: 1})
    assert slate.shown.tolist() == [1, 2, 3, 4, 0]  # both pins fall on slot 4: the first keeps it
