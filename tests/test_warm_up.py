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

        from feature_repo import inputs, text
        from models import tree_kernels
        from models.lambdarank import LambdaRankRanker
        from reranker import exploration
        from serving import explanations

        kernels = [tree_kernels.predict_rows, tree_kernels.explain_rows, inputs._compute, inputs._covisit,
                   text._match, exploration._one_row_slots, explanations._summarize]
        assert all(len(k.signatures) == 0 for k in kernels)
        rng = np.random.default_rng(0)
        names = ["first_stage.rank", "affinity.brand", "metadata.price", "collaborative.covisit_max"]
        X = rng.normal(size=(2000, len(names)))
        booster = lgb.train({"objective": "lambdarank", "num_leaves": 7, "verbose": -1},
                            lgb.Dataset(X, (X[:, 0] > 0).astype(float), group=[20] * 100, feature_name=names), 20)
        ranker = LambdaRankRanker(booster)
        ranker.warm_up()
        inputs.warm_up()
        text.warm_up()
        exploration.warm_up()
        explanations.warm_up()
        compiled = [len(k.signatures) for k in kernels]
        assert all(compiled), compiled
        # a request as the pipeline makes it: a plan over doc, user and extra columns, co-visitation, text match
        op = np.array([inputs.FS_RANK, inputs.AFF_BUCKET, inputs.DOC, inputs.EXTRA], np.int64)
        a, b, c = np.array([0, 0, 1, 0]), np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0])
        docs = rng.gamma(2.0, 10.0, (100, 2))
        docs[rng.random(docs.shape) < 0.1] = np.nan
        extra = inputs.covisitation(np.arange(100) - 1, np.zeros(100, np.int64), np.arange(101, dtype=np.int64) // 2,
                                    np.arange(50, dtype=np.int64), rng.random(50), np.array([0, 3]),
                                    np.array([1, 5, 9]), 100)
        index = text.TextIndex.build([f"doc {i} word{i % 7}" for i in range(100)])
        extra[:, 1] = index.match(np.arange(100), np.zeros(100, np.int64), [index.vector("word3")[0]],
                                  [index.vector("word3")[1]])
        plan_X = np.empty((100, 4))
        inputs._compute(plan_X, docs, rng.random((1, 6)), extra, rng.normal(size=100), np.array([0, 100]),
                        np.array([20_000.0]), op, a, b, c, np.array([10.0, 20.0, np.nan]))
        scores = ranker.score_matrix(plan_X)
        slots, _ = exploration.epsilon_greedy_slots(scores[None, :], 10, 0.1, np.random.default_rng())
        contribs = ranker.contributions(np.ascontiguousarray(plan_X[slots[0]], dtype=np.float32))[:, :-1]
        explanations.top_inputs(contribs, np.array([False, True, False, True]), personalized=True, top=3)
        assert [len(k.signatures) for k in kernels] == compiled, [len(k.signatures) for k in kernels]
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
