"""POST /pipeline in process on the trained stage (real Feast online store, real MLflow registry): the seed's three
pipelines as given, rule compliance with exploration on, the static rerank as the fallback, errors by field."""

import numpy as np
import pytest

from models.pipeline_spec import StageError
from models.registry import ModelNotFound
from serving.api_docs import pipeline_examples
from serving.schemas import Fallback, PipelineRequest, RerankRequest, ServedBy
from serving.stage_pipeline import PipelineRunner
from tests.test_serving_pipeline import known_user

pytestmark = pytest.mark.integration


def candidates(events, n=60, discontinued=()):
    docs = list(dict.fromkeys(events["document_id"]))[:n]
    return [{"document_id": d, "content": f"doc {d} title words", "score": float(n - i),
             "features": {"in_stock": float(i % 4 != 0)},
             "metadata": {"in_stock": i % 4 != 0} | ({"discontinued": True} if d in discontinued else {})}
            for i, d in enumerate(docs)]  # fmt: skip


CATEGORIES = ["cat00", "cat01", "cat02", "cat03", "cat04", "cat05"]


def shop_request(events, name, state=None, **inputs):
    cands = candidates(events, discontinued={list(dict.fromkeys(events["document_id"]))[1]})
    query = events["query"].dropna().iloc[0]
    promoted = cands[41]["document_id"]
    if state is not None:  # an in-stock product of the asked categories, far down the first stage's order
        promoted = next(
            c["document_id"]
            for c in cands[::-1]
            if c["features"]["in_stock"]
            and set(state.documents.attribute("categories", state.documents.rows([c["document_id"]]))[0])
            & set(CATEGORIES)
        )
    base = {
        "query": query,
        "user_id": known_user(events),
        "model_id": "serving",
        "categories": CATEGORIES,
        "promoted": promoted,
    }
    return PipelineRequest.model_validate({"inputs": base | inputs, "candidates": cands,
                                           "stages": pipeline_examples()[name]["stages"]})  # fmt: skip


@pytest.fixture(scope="module")
def runner(stage):
    return PipelineRunner(stage[0])


@pytest.mark.parametrize(
    "name", ["personalized_search", "hybrid_personalization", "ecommerce_product_ranking"]
)
def test_the_seeds_three_pipelines_run_as_given(runner, stage, name):
    events = stage[2]
    req = shop_request(events, name, runner.stage.features.state())
    resp, served = runner.run(req)
    assert [s.stage_id for s in resp.stages] == [s.stage_id for s in req.stages]
    assert resp.served_by is ServedBy.learned and resp.model_id == "serving"
    left = resp.stages[-2].candidates_out if name == "ecommerce_product_ranking" else len(req.candidates)
    assert len(resp.results) == min(10 if name != "ecommerce_product_ranking" else 24, left) > 0
    first = resp.results[0].learned_rerank
    assert first.user_segment and first.top_features and ":" in first.top_features[0]
    event = served.event()  # the served list is logged like /rerank's, with its propensities
    assert [i.document_id for i in event.items] == [r.document_id for r in resp.results]
    assert all(0 < i.propensity <= 1 for i in event.items)
    if name == "ecommerce_product_ranking":
        sent = {c.document_id: c for c in req.candidates}
        state = runner.stage.features.state()
        assert resp.results[0].document_id == req.inputs["promoted"] and "promotion" in resp.results[0].rules
        for r in resp.results:  # the filter: in stock, of the asked categories (the catalog's)
            assert sent[r.document_id].features["in_stock"] == 1.0
            row = state.documents.rows([r.document_id])
            assert set(state.documents.attribute("categories", row)[0]) & set(req.inputs["categories"])
        brands = [state.documents.attribute("brand", state.documents.rows([r.document_id]))[0]
                  for r in resp.results[:10]]  # fmt: skip
        assert max(brands.count(b) for b in set(brands)) <= 2
        assert {e.rule for e in resp.rules} >= {"promotion", "discontinued", "brand_cap"}


def test_rules_hold_in_every_response_with_exploration_on(runner, stage):
    events = stage[2]
    state = runner.stage.features.state()
    for _ in range(40):
        req = shop_request(events, "ecommerce_product_ranking", state)
        req.stages[2].parameters["exploration_rate"] = 0.5
        resp, served = runner.run(req)
        ids = [r.document_id for r in resp.results]
        assert ids[0] == req.inputs["promoted"]
        brands = [state.documents.attribute("brand", state.documents.rows([d]))[0] for d in ids[:10]]
        assert max(brands.count(b) for b in set(brands)) <= 2
        sent = {c.document_id: c for c in req.candidates}
        assert all(sent[d].features["in_stock"] == 1.0 for d in ids)
        props = [i.propensity for i in served.event().items]
        assert props[0] == 1.0 and all(0 < p <= 1 for p in props)


def test_a_buried_document_goes_last_and_a_boost_moves_up(runner, stage):
    events = stage[2]
    cands = candidates(events, n=20)
    stages = [{"stage_type": "sort", "stage_id": "learned_rerank",
               "parameters": {"model_id": "serving", "user_id": "{{INPUT.user_id}}", "top_n": 20,
                              "exploration_rate": 0}}]  # fmt: skip
    base, _ = runner.run(PipelineRequest.model_validate({"inputs": {"user_id": known_user(events)},
                                                         "candidates": cands, "stages": stages}))  # fmt: skip
    order = [r.document_id for r in base.results]
    rules = {
        "stage_type": "sort",
        "stage_id": "business_rules",
        "parameters": {
            "bury": [{"when": {"field": "document_id", "operator": "eq", "value": order[0]}}],
            "boost": [
                {"when": {"field": "document_id", "operator": "eq", "value": order[10]}, "positions": 3}
            ],
        },
    }
    got, _ = runner.run(PipelineRequest.model_validate({"inputs": {"user_id": known_user(events)}, "candidates": cands,
                                                        "stages": [*stages, rules]}))  # fmt: skip
    ids = [r.document_id for r in got.results]
    assert ids[-1] == order[0] and "bury[0]" in got.results[-1].rules
    assert ids.index(order[10]) == 6  # 10 -> 7, then one place more as the buried first one left
    assert "boost[0]" in got.results[6].rules


def test_mmr_after_the_learned_stage_diversifies_the_slate(runner, stage):
    from models.diversity import attribute_similarity, intra_list_diversity

    events = stage[2]
    cands = candidates(events, n=60)
    state = runner.stage.features.state()

    def run(lam):
        stages = [{"stage_type": "sort", "stage_id": "learned_rerank",
                   "parameters": {"model_id": "serving", "user_id": known_user(events), "top_n": 40,
                                  "exploration_rate": 0}},
                  {"stage_type": "sort", "stage_id": "mmr",
                   "parameters": {"lambda": lam, "top_k": 10, "fields": ["metadata.brand"]}}]  # fmt: skip
        resp, _ = runner.run(PipelineRequest.model_validate({"candidates": cands, "stages": stages}))
        ids = [r.document_id for r in resp.results]
        brands = state.documents.attribute("brand", state.documents.rows(ids))
        return intra_list_diversity(attribute_similarity([brands]), list(range(len(ids))))

    assert run(0.2) > run(1.0)


def test_the_static_rerank_is_a_fallback_for_cold_start_users(stage):
    pipeline, _, events, _, _ = stage
    docs = list(dict.fromkeys(events["document_id"]))[:10]
    cands = [{"document_id": d, "content": "red shoes" if i == 7 else f"item {i}", "score": 10.0 - i}
             for i, d in enumerate(docs)]  # fmt: skip
    req = RerankRequest.model_validate({"model_id": "serving", "user_id": "never-seen", "query": "red shoes",
                                        "candidates": cands, "fallback": "rerank", "exploration_rate": 0})  # fmt: skip
    resp, _ = pipeline.rerank(req)
    assert resp.served_by is ServedBy.fallback and req.fallback is Fallback.rerank
    assert [r.document_id for r in resp.results][:2] == [docs[7], docs[0]]


def test_bad_pipelines_are_refused_by_field(runner, stage):
    events = stage[2]
    req = shop_request(events, "personalized_search")
    req.stages[1].parameters["model_id"] = "no-such-model"
    with pytest.raises(ModelNotFound):
        runner.run(req)
    req = shop_request(events, "ecommerce_product_ranking")
    del req.inputs["promoted"]
    with pytest.raises(StageError) as err:
        runner.run(req)
    assert err.value.field == "stages[3].parameters.pin[0].document_id"
    req = shop_request(events, "personalized_search")
    req.candidates[3].features["colour"] = 1.0
    from serving.errors import UnknownFeatures

    with pytest.raises(UnknownFeatures) as unknown:
        runner.run(req)
    assert unknown.value.field == "candidates[3].features"
    assert np.isfinite([c.score for c in req.candidates]).all()


def test_a_filter_that_leaves_nothing_answers_empty_and_an_unknown_model_is_still_404(runner, stage):
    events = stage[2]
    stages = [
        {
            "stage_type": "filter",
            "stage_id": "structured_filter",
            "parameters": {"conditions": {"field": "document_id", "operator": "eq", "value": "no-such-doc"}},
        },
        {
            "stage_type": "sort",
            "stage_id": "learned_rerank",
            "parameters": {"model_id": "{{INPUT.model_id}}"},
        },
    ]
    body = {"candidates": candidates(events, n=10), "stages": stages}
    resp, served = runner.run(PipelineRequest.model_validate({**body, "inputs": {"model_id": "serving"}}))
    assert resp.results == [] and resp.stages[1].detail == "no candidates left" and served.event().items == []
    with pytest.raises(ModelNotFound):
        runner.run(PipelineRequest.model_validate({**body, "inputs": {"model_id": "no-such-model"}}))
