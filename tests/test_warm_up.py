"""Warm-up compiles every kernel a request runs, in the signatures a request calls them with: after it, serving a
request compiles nothing (a cold compile takes seconds, far over the 50 ms budget). Checked in a fresh process,
where nothing else has compiled them."""

import subprocess
import sys
import textwrap


def test_a_request_after_warm_up_compiles_nothing():
    script = textwrap.dedent(
        """
        import lightgbm as lgb
        import numpy as np

        from models import tree_kernels
        from models.lambdarank import LambdaRankRanker
        from reranker import exploration
        from serving import explanations, fast_inputs
        from serving.online_features import DOC_FEATURES, USER_FEATURES

        kernels = [tree_kernels.predict_rows, tree_kernels.explain_rows, fast_inputs._derive, fast_inputs._gather,
                   exploration._one_row_slots, explanations._summarize]
        assert all(len(k.signatures) == 0 for k in kernels)
        rng = np.random.default_rng(0)
        names = ["doc_n_positive", "user_doc_affinity_max", "first_stage_rank", "rule_score_list_pct", "user_n_events"]
        X = rng.normal(size=(2000, len(names)))
        booster = lgb.train({"objective": "lambdarank", "num_leaves": 7, "verbose": -1},
                            lgb.Dataset(X, (X[:, 0] > 0).astype(float), group=[20] * 100, feature_name=names), 20)
        ranker = LambdaRankRanker(booster)
        ranker.warm_up()
        fast_inputs.warm_up()
        exploration.warm_up()
        explanations.warm_up()
        compiled = [len(k.signatures) for k in kernels]
        assert all(compiled), compiled
        # a request as the pipeline makes it: stored rows with gaps, a user, request overrides, top rows explained
        docs = rng.gamma(2.0, 10.0, (100, len(DOC_FEATURES)))
        docs[rng.random(docs.shape) < 0.1] = np.nan
        inputs = fast_inputs.assemble(docs, rng.random(len(USER_FEATURES)), rng.normal(size=100),
                                      [{"doc_n_positive": 3.0}] + [{}] * 99, 20_000.0, names)
        scores = ranker.score_matrix(inputs)
        slots, _ = exploration.epsilon_greedy_slots(scores[None, :], 10, 0.1, np.random.default_rng())
        contribs = ranker.contributions(np.ascontiguousarray(inputs[slots[0]], dtype=np.float32))[:, :-1]
        explanations.summarize(contribs, names, personalized=True, top=3)
        assert [len(k.signatures) for k in kernels] == compiled
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
