"""The must-show figures, asserted: real MovieLens quality, position-bias recovery, OBD off-policy estimates.
Marked heavy (CI runs them with `-m heavy`)."""

import pytest

pytestmark = pytest.mark.heavy


def test_position_aware_training_recovers_most_of_the_gap():
    from models.experiments import position_bias

    result = position_bias(seed=7)
    assert result.ndcg_naive < result.ndcg_position_aware < result.ndcg_oracle
    assert result.recovered >= 0.70, result


def test_obd_estimates_bracket_bts_on_policy_click_rate(tmp_path_factory):
    from models.experiments import obd_ope

    rows = obd_ope(tmp_path_factory.getbasetemp() / "cache", n_boot=300)
    assert [r["campaign"] for r in rows] == ["all", "men", "women"]
    for r in rows:
        assert 0 < r["ctr_random"] < 0.05 and 0 < r["ctr_bts"] < 0.05
        assert r["dr_low"] <= r["ctr_bts"] <= r["dr_high"], r  # the truth is inside the estimate's interval


def test_movielens_learned_reranker_beats_both_baselines(tmp_path):
    """The quickstart, end to end, on the embedded default; the gates require intervals above zero."""
    from typer.testing import CliRunner

    from reranker.cli import app
    from tests.conftest import first_json

    result = CliRunner().invoke(app, ["quickstart", "--json", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output[-2000:]

    out = first_json(result.output)
    assert out["n_lists"] >= 500 and out["alias"] == "champion"
    for baseline in ("first_stage", "rule_based"):
        assert out["differences"][f"learned - {baseline}"]["ndcg@10"]["low"] > 0
