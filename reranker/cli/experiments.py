"""`reranker experiment`: studies with a known answer or a strong baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, Steps, emit, settings, table

group = typer.Typer(help="Studies with a known answer (position bias, off-policy estimation, declared features).",
                    no_args_is_help=True)  # fmt: skip


@group.command("position-bias")
def experiment_position_bias(
    seeds: Annotated[int, typer.Option(help="Number of world seeds.", min=1)] = 3,
    requests: Annotated[int, typer.Option(help="Training requests per seed.", min=500)] = 20_000,
    as_json: JsonOpt = False,
) -> None:
    """NDCG@10 on the true relevance: naive click training vs position-aware vs an oracle on true grades."""
    from models.experiments import position_bias

    settings(None)
    results = [position_bias(seed=7 + i, n_train=requests) for i in range(seeds)]
    rows = [{**vars(r), "recovered": r.recovered} for r in results]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "seed"}
    emit({"runs": rows, "mean": mean}, as_json)
    if not as_json:
        table(
            "position bias: NDCG@10 on true relevance (all 30 candidates)", [*rows, {"seed": "mean", **mean}]
        )


@group.command("obd")
def experiment_obd(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Open Bandit Dataset: on-policy click rates, and IPS/SNIPS/DR estimates of BTS from the random log."""
    from models.experiments import obd_ope

    rows = obd_ope(settings(data_dir).layout.cache)
    emit(rows, as_json)
    if not as_json:
        table("OBD: click rate of BTS estimated from the random log", [
            {"campaign": r["campaign"], "random (on-policy)": r["ctr_random"], "BTS (on-policy)": r["ctr_bts"],
             **{n.upper(): f"{r[n]:.5f} [{r[n + '_low']:.5f}, {r[n + '_high']:.5f}] err {r[n + '_rel_error']:.0%}"
                for n in ("ips", "snips", "dr")}} for r in rows])  # fmt: skip


def _iv(iv: dict[str, float], signed: bool = False) -> str:
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"{f.format(iv['mean'])} [{f.format(iv['low'])}, {f.format(iv['high'])}]"


def _families_table(title: str, checks: list[dict[str, Any]]) -> None:
    table(title, [{"family": c["family"], "inputs": c["inputs"], "metric": c["metric"],
                   "without - with": _iv(c["without_minus_with"], True), "dropped": "yes" if c["dropped"] else "no"}
                  for c in checks])  # fmt: skip


def _ablation_table(title: str, rows: list[dict[str, Any]]) -> None:
    table(title, [{"model": r["model"], "ndcg@10": _iv(r["ndcg@10"]),
                   "all - this (paired)": _iv(r["all_minus_this"], True) if r["all_minus_this"] else "-",
                   "family pays": "-" if r["family_pays"] is None else ("yes" if r["family_pays"] else "no")}
                  for r in rows])  # fmt: skip


@group.command("features")
def experiment_features(
    events: Annotated[int, typer.Option(help="Logged events of the synthetic shop.", min=50_000)] = 400_000,
    judged: Annotated[int, typer.Option(help="Fresh requests judged on true relevance.", min=200)] = 3_000,
    seed: Annotated[int, typer.Option(help="World seed.")] = 7,
    work_dir: Annotated[Path | None, typer.Option(help="Keep the study's lake and features here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A shop with its own catalog, text queries and request features: NDCG@10 on the true relevance of the
    first-stage order, the fixed features of earlier releases, the declared features and a plain LightGBM on the
    raw columns; the debiased vs the naive offline metric on logged lists; an ablation by signal family."""
    from models.studies import shop_study

    conf = settings(None)
    steps = Steps(as_json)
    result = shop_study(work_dir, seed=seed, n_events=events, n_judged=judged, threads=conf.train_threads,
                        say=steps.say)  # fmt: skip
    emit(result, as_json)
    if as_json:
        return
    truth = result["true_relevance"]
    table(f"true relevance, NDCG@10 of {truth['lists']} fresh requests (all candidates), 95% CI users resampled",
          [{"ranker": r, "ndcg@10": _iv(iv), "declared - this": _iv(truth["differences"][f"declared - {r}"], True)
            if f"declared - {r}" in truth["differences"] else "-"} for r, iv in truth["metrics"].items()])  # fmt: skip
    logged = result["logged_lists"]
    table(f"held-out logged lists ({logged['lists']}): offline metrics vs the truth",
          [{"ranker": r, **{k: f"{v:.4f}" for k, v in m.items()}} for r, m in logged["rankers"].items()])  # fmt: skip
    for metric, order in logged["orders"].items():
        typer.echo(f"order by {metric}: {' > '.join(order)}")
    _families_table("input families, validated on logged lists before the test period (as `reranker train` does)",
                    result.get("families", []))  # fmt: skip
    _ablation_table(
        "ablation of the declared model's families (NDCG@10 on true relevance)", result["ablation"]
    )
    typer.echo(f"most frequent top features of the declared model's returned items: {result['explanations']}")


@group.command("movielens")
def experiment_movielens(
    quantile: Annotated[float, typer.Option(help="The global cut, as a quantile of event time.")] = 0.8,
    work_dir: Annotated[Path | None, typer.Option(help="Keep the study's features here.")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """MovieLens-100K with a strong first stage (recent popularity + genre match, 100 candidates) at a global
    temporal cut: the learned model against it and the rule-based ranker, and an ablation by signal family."""
    from models.studies import movielens_study

    conf = settings(data_dir)
    steps = Steps(as_json)
    result = movielens_study(conf.layout.cache, work_dir, seed=conf.seed, quantile=quantile,
                             threads=conf.train_threads, say=steps.say)  # fmt: skip
    emit(result, as_json)
    if as_json:
        return
    for metric in ("ndcg@10", "mrr@10", "recall@10"):
        block = result[metric]
        table(f"{metric}: {result['test_lists']} users at the cut {result['cut']} ({result['train_lists']} training "
              "lists)", [{"ranker": r, metric: _iv(iv)} for r, iv in block["metrics"].items()]
              + [{"ranker": p, metric: _iv(iv, True)} for p, iv in block["differences"].items()])  # fmt: skip
    _families_table(
        "input families, validated before the cut (as `reranker train` does)", result.get("families", [])
    )
    _ablation_table("ablation (NDCG@10 at the cut)", result["ablation"])
