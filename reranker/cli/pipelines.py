"""`reranker pipeline evaluate`: a pipeline definition (the JSON of POST /pipeline's `stages`) offline, before it is
turned on: NDCG@k, intra-list diversity@k and rule compliance on the training procedure's out-of-sample test lists;
with `--lambdas`, each `mmr` stage swept over those values and the trade-off plotted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, Steps, emit, existing_path, fail, settings, table

group = typer.Typer(help="Pipelines of stages (POST /pipeline), evaluated offline.", no_args_is_help=True)


def _definitions(files: list[Path], inputs: dict[str, Any], lambdas: list[float]) -> dict[str, list[Any]]:
    from models.pipeline_spec import StageError, StageSpec, resolve

    out: dict[str, list[Any]] = {}
    for path in files:
        try:
            raw = json.loads(existing_path(path, "pipeline definition").read_text())
            specs = [StageSpec.model_validate(s) for s in (raw["stages"] if isinstance(raw, dict) else raw)]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            fail(f"{path}: not a pipeline definition ({{\"stages\": [{{stage_type, stage_id, parameters}}, ...]}}): "
                 f"{str(exc).splitlines()[0]}")  # fmt: skip
        variants: list[tuple[str, list[StageSpec]]] = [(path.stem, specs)]
        if lambdas and any(s.stage_id == "mmr" for s in specs):
            variants = [(f"{path.stem} lambda={lam:g}",
                         [s.model_copy(update={"parameters": {**s.parameters, "lambda": lam}}) if s.stage_id == "mmr"
                          else s for s in specs]) for lam in lambdas]  # fmt: skip
        for name, stage_specs in variants:
            try:
                out[name] = resolve(stage_specs, inputs)
            except StageError as exc:
                fail(f"{path}: {exc.field}: {exc}")
    return out


@group.command("evaluate")
def evaluate(
    definitions: Annotated[list[Path], typer.Argument(help="Pipeline definitions (JSON with `stages`).")],
    model_id: Annotated[
        str, typer.Option("--model-id", help="The model id the definitions name.")
    ] = "reranker",
    inputs: Annotated[
        str,
        typer.Option(
            "--inputs", help="JSON object of the {{INPUT.*}} values (user_id and query come from each list)."
        ),
    ] = "{}",
    lambdas: Annotated[
        str,
        typer.Option(
            "--lambdas",
            help="Sweep each mmr stage's lambda over these values, e.g. "
            "1,0.9,0.7,0.5,0.3,0.1; plots NDCG against diversity.",
        ),
    ] = "",
    k: Annotated[int, typer.Option("--k", min=1, max=100)] = 10,
    rounds: Annotated[
        int, typer.Option("--rounds", min=10, help="Boosting rounds of the fold models.")
    ] = 150,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Directory of the JSON and plot; default <data dir>/evaluation/pipelines."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each definition over the same out-of-sample test lists: what its filters, rules and diversity cost in NDCG."""
    from feature_repo.manifest import FeatureManifest
    from feature_repo.rows import list_starts_of
    from feature_repo.store import FeatureStoreError
    from models.diversity import catalog_fields
    from models.pipeline_eval import evaluate_definitions
    from models.plots import diversity_tradeoff
    from models.training import plan_folds, rolling_origin, training_set_for
    from reranker.cli.training import plan, training_inputs
    from reranker.featureset import DocumentKind

    try:
        given = json.loads(inputs)
        sweep = [float(x) for x in lambdas.split(",") if x.strip()]
    except ValueError as exc:
        fail(f"--inputs must be a JSON object and --lambdas numbers separated by commas: {exc}")
    if not isinstance(given, dict):
        fail("--inputs must be a JSON object")
    if any(not 0 <= lam <= 1 for lam in sweep):
        fail("--lambdas: each between 0 and 1")
    defs = _definitions(
        definitions, {"user_id": "offline", "query": None, "model_id": model_id, **given}, sweep
    )
    conf = settings(data_dir)
    steps = Steps(as_json)
    events, store, _, catalog = training_inputs(conf)
    if catalog is None:
        fail("no document catalog in the lake: ingest one with --documents")
    fs = FeatureManifest.read(conf.layout.feature_tables).feature_set
    try:
        the_plan = plan(conf, model_id, rounds)
        data, _, _ = training_set_for(events, store, the_plan, conf.layout.feature_tables, catalog,
                                      progress=not as_json, say=steps.say)  # fmt: skip
        folds = plan_folds(data, the_plan)
        data = data.without_values()
        test = data.frame_of(folds.tested)
        learned, _ = rolling_origin(data, folds, the_plan, steps.say)
    except (ValueError, FeatureStoreError) as exc:
        fail(str(exc))
    steps.done("out-of-sample scores")
    diversity = catalog_fields(fs)
    texts = [fs.documents[n].source(n) for n, a in fs.documents.items() if a.kind is DocumentKind.text]
    separators = {n: a.separator for n, a in fs.documents.items() if a.kind is DocumentKind.multi_categorical}
    results = evaluate_definitions(test, list_starts_of(test["list_id"]), learned, catalog, defs, diversity, texts,
                                   separators, k=k, seed=conf.seed, progress=not as_json)  # fmt: skip
    steps.done("pipelines")
    where = out or conf.layout.root / "evaluation" / "pipelines"
    where.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"k": k, "diversity_fields": diversity, "model_id": model_id,
                               "definitions": [r.to_dict() for r in results]}  # fmt: skip
    if sweep:
        points = [{"lambda": float(r.name.rsplit("=", 1)[1]), "ndcg": r.ndcg.mean, "low": r.ndcg.low,
                   "high": r.ndcg.high, "ild": r.diversity} for r in results if "lambda=" in r.name]  # fmt: skip
        if points:
            payload["plot"] = str(diversity_tradeoff(points, where / "mmr_tradeoff.png", k))
    (where / "pipelines.json").write_text(json.dumps(payload, indent=2))
    emit(payload, as_json)
    if not as_json:
        table(f"pipelines offline: {results[0].lists if results else 0} test lists (out-of-sample scores), k={k}",
              [{"definition": r.name, f"NDCG@{k}": f"{r.ndcg.mean:.4f} [{r.ndcg.low:.4f}, {r.ndcg.high:.4f}]",
                "minus the first (paired)": "-" if r.versus_first is None else
                f"{r.versus_first.mean:+.4f} [{r.versus_first.low:+.4f}, {r.versus_first.high:+.4f}]",
                f"ILD@{k}": r.diversity, "rule compliance": f"{r.compliance:.1%}", "shown": r.mean_shown}
               for r in results])  # fmt: skip
        typer.echo(
            f"written: {where / 'pipelines.json'}" + (f", {payload['plot']}" if "plot" in payload else "")
        )
