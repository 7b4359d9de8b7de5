"""`reranker features`: declare (init, check), build, register with Feast (apply) and materialize the features."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, Steps, emit, existing_path, fail, settings, table

if TYPE_CHECKING:
    from reranker.featureset import FeatureSet
    from reranker.settings import Settings

group = typer.Typer(help="Declare, build, register and materialize the features.", no_args_is_help=True)


def inferred_from_lake(conf: Settings) -> FeatureSet | None:
    """A declaration inferred from the lake's catalog and the request features and contexts its logs carry."""
    import json

    import pandas as pd

    from reranker.featureset import infer_feature_set
    from reranker.lake import read_interactions

    if not conf.layout.documents.exists():
        return None
    logged = read_interactions(conf.layout.interactions, columns=["features_json", "context_json"])
    sample = logged.dropna(how="all").tail(50_000)

    def frame(column: str) -> pd.DataFrame | None:
        cells = [json.loads(v) for v in sample[column].dropna().unique()[:5_000]]
        return pd.DataFrame(cells) if cells else None

    return infer_feature_set(pd.read_parquet(conf.layout.documents), "inferred", frame("features_json"),
                             frame("context_json"))  # fmt: skip


def active_feature_set(conf: Settings, infer: bool = False) -> FeatureSet:
    """The declared feature set, or (with `infer`, when none is declared) one inferred from the lake and written
    where the declaration belongs; else a one-line error that says how to get one."""
    from reranker.featureset import FeatureSetError, load_feature_set

    path = conf.feature_set_path
    if not path.exists() and infer:
        fs = inferred_from_lake(conf)
        if fs is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("# inferred by `reranker features apply` from the lake's catalog and logs: review it\n"
                            + fs.to_yaml())  # fmt: skip
            typer.secho(f"no feature set was declared: inferred one from the lake ({len(fs.documents)} catalog "
                        f"attributes, {len(fs.request)} request fields, {len(fs.context)} context fields) and wrote "
                        f"it to {path}; review it and run `reranker features apply` again after any change",
                        fg=typer.colors.YELLOW, err=True)  # fmt: skip
    if not path.exists():
        fail(f"no feature set at {path}: write one with `reranker features init --catalog YOUR_CATALOG` (or load a "
             "bundled dataset, which ships one), or point RERANKER_FEATURE_SET at yours")  # fmt: skip
    try:
        return load_feature_set(path)
    except FeatureSetError as exc:
        fail("the feature set has problems:\n  " + "\n  ".join(exc.problems))


def build(conf: Settings, steps: Steps | None = None) -> dict[str, Any]:
    from feature_repo.store import FeatureStoreError, build_from_lake

    fs = active_feature_set(conf, infer=True)
    if steps:
        steps.say(f"building the features of {fs.name} ({conf.feature_set_path}) from the lake")
    try:
        return vars(build_from_lake(conf.layout, fs, conf.seed))
    except FeatureStoreError as exc:
        fail(str(exc))


def apply_feast(conf: Settings, steps: Steps | None = None) -> Any:
    """Feast apply of the layout's repo on the configured backends (Redis online store, SQL registry)."""
    from feature_repo.store import apply

    if steps:
        steps.say("registering entities, views and the feature service with Feast")
    return apply(
        conf.layout.feast,
        conf.layout.feature_tables,
        conf.feast_redis,
        conf.feast_registry,
        conf.ray_cluster(),
    )


@group.command("init")
def features_init(
    catalog: Annotated[Path, typer.Option(help="Your document catalog (Parquet, CSV or JSONL).")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write it (default: the active feature set's path).")
    ] = None,
    name: Annotated[str, typer.Option(help="The feature set's name.")] = "my_catalog",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Write a starting feature set from a catalog's columns (kinds guessed from the values): review it, then
    `reranker features check`."""
    existing_path(catalog, "catalog file")
    from reranker.featureset import infer_feature_set
    from reranker.lake import read_catalog

    conf = settings(data_dir)
    target = out or conf.feature_set_path
    if target.exists() and not force:
        fail(f"{target} exists: pass --force to overwrite it, or --out another file")
    try:
        fs = infer_feature_set(read_catalog(catalog), name)
    except (ValueError, OSError) as exc:
        fail(f"{catalog}: {exc}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "# written by `reranker features init`; kinds are guesses: review them\n" + fs.to_yaml()
    )
    typer.echo(f"wrote {target}: {len(fs.documents)} document attributes "
               f"({', '.join(f'{n}: {a.kind.value}' for n, a in fs.documents.items())})")  # fmt: skip
    typer.echo(
        "declare request fields (sent with each candidate) under request: and context fields under context:"
    )


@group.command("check")
def features_check(
    path: Annotated[
        Path | None, typer.Argument(help="The declaration (default: the active feature set).")
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="A catalog to check it against (default: the lake's).")
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a feature set (errors name the line) and check it against a catalog: declared columns exist and
    fit their kinds; undeclared columns are listed. Exit 0 fine, 1 problems."""
    import pandas as pd

    from reranker.featureset import FeatureSetError, check_catalog, load_feature_set
    from reranker.lake import read_catalog

    conf = settings(data_dir)
    path = path or conf.feature_set_path
    try:
        fs = load_feature_set(path)
    except FeatureSetError as exc:
        emit({"ok": False, "errors": exc.problems, "warnings": []}, as_json)
        if not as_json:
            for problem in exc.problems:
                typer.secho(problem, fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    frame = None
    if catalog is not None:
        existing_path(catalog, "catalog file")
        frame = read_catalog(catalog)
    elif conf.layout.documents.exists():
        frame = pd.read_parquet(conf.layout.documents)
    result = check_catalog(fs, frame) if frame is not None else None
    payload: dict[str, Any] = {"ok": result is None or result.ok, "feature_set": fs.name, "version": fs.version,
               "errors": result.errors if result else [], "warnings": result.warnings if result else [],
               "catalog_checked": frame is not None}  # fmt: skip
    emit(payload, as_json)
    if not as_json:
        typer.echo(f"{path}: feature set {fs.name} (version {fs.version}): {len(fs.documents)} document attributes, "
                   f"{len(fs.request)} request fields, {len(fs.context)} context fields, affinities {fs.affinities}")  # fmt: skip
        for error in payload["errors"]:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        for warning in payload["warnings"]:
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        if frame is None:
            typer.echo("no catalog to check against (pass --catalog, or ingest one with --documents)")
    if not payload["ok"]:
        raise typer.Exit(1)


@group.command("build")
def features_build(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Compute the point-in-time feature tables of the feature set from the lake."""
    result = build(settings(data_dir), Steps(as_json))
    emit(result, as_json)
    if not as_json:
        table(f"offline feature tables of {result['feature_set']} ({result['inputs']} model inputs)",
              [{"view": k, "rows": v} for k, v in result["rows"].items()])  # fmt: skip


@group.command("apply")
def features_apply(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Build the tables and register entities, views and the feature service with Feast."""
    from feature_repo.definitions import FEATURE_SERVICE

    conf = settings(data_dir)
    steps = Steps(as_json)
    built = build(conf, steps)
    apply_feast(conf, steps)
    result = {"feature_service": FEATURE_SERVICE, "feature_set": built["feature_set"], "inputs": built["inputs"],
              "tables": built["rows"], "repo": str(conf.layout.feast), "warnings": built["warnings"]}  # fmt: skip
    emit(result, as_json)
    if not as_json:
        typer.echo(f"applied feature service {FEATURE_SERVICE!r} of feature set {built['feature_set']} "
                   f"({built['inputs']} model inputs, {len(built['rows'])} views) in {result['repo']}")  # fmt: skip
        for warning in built["warnings"]:
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)


@group.command("materialize")
def features_materialize(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Load the newest feature values into the online store."""
    from feature_repo.store import FeatureStoreError, materialize, open_store

    conf = settings(data_dir)
    Steps(as_json).say("materializing the newest values into the online store")
    try:
        result = materialize(open_store(conf.layout.feast), conf.layout.feature_tables)
    except (FeatureStoreError, FileNotFoundError) as exc:
        fail(str(exc))
    emit(result, as_json)
    if not as_json:
        typer.echo(f"materialized to the online store in {result['seconds']}s")
