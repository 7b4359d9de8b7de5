"""`reranker ingest`: validate interaction logs with Great Expectations and land them (and a catalog)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, emit, existing_path, fail, settings


def ingest(
    path: Annotated[Path, typer.Argument(help="A JSONL, CSV or Parquet file, or a directory of them.")],
    documents: Annotated[
        Path | None,
        typer.Option(help="A document catalog (Parquet, CSV or JSONL) to merge; every column is kept."),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate interaction logs with Great Expectations and land good rows in the lake.

    Exit codes: 0 all good; 1 some rows quarantined (good rows kept); 2 unreadable input (nothing written);
    4 another ingest into the same lake kept its lock longer than an hour (nothing written).
    """
    existing_path(path, "file or directory")
    if documents is not None:
        existing_path(documents, "catalog file")
    from expectations.ingest import IngestBusy, IngestError
    from expectations.ingest import ingest as run_ingest
    from reranker.featureset import FeatureSetError, check_catalog, load_feature_set
    from reranker.lake import read_catalog, upsert_documents

    conf = settings(data_dir)
    layout = conf.layout
    n_docs, catalog_notes = None, []
    if documents is not None:
        try:
            catalog = read_catalog(documents)
            n_docs = upsert_documents(layout.documents, catalog)
        except (ValueError, OSError) as exc:
            fail(f"{documents}: {exc}")
        if conf.feature_set_path.exists():
            try:
                check = check_catalog(load_feature_set(conf.feature_set_path), catalog)
                catalog_notes = [f"error: {e}" for e in check.errors] + [
                    f"warning: {w}" for w in check.warnings
                ]
            except FeatureSetError as exc:
                catalog_notes = [f"warning: the feature set cannot be read: {exc}"]
        else:
            catalog_notes = [f"warning: no feature set declared yet: `reranker features init --catalog {documents}` "
                             f"writes a starting one to {conf.feature_set_path}"]  # fmt: skip
    try:
        summary = run_ingest(path, layout, **conf.ingest_options(), progress=not as_json,
                             say=lambda m: typer.echo(m, err=True))  # fmt: skip
    except IngestError as exc:
        fail(str(exc))
    except IngestBusy as exc:
        fail(str(exc), code=4)
    payload = {**summary.to_dict(), "catalog_documents": n_docs, "catalog": catalog_notes}
    emit(payload, as_json)
    if not as_json:
        typer.echo(f"read {summary.rows_read:,} rows: {summary.added:,} added, {summary.already_present:,} already "
                   f"in the lake, {summary.duplicates:,} repeated within this input, {summary.quarantined:,} "
                   f"quarantined ({summary.seconds:.1f}s)")  # fmt: skip
        for reason, count in summary.reasons.items():
            typer.echo(f"  {count:>8,}  {reason}")
        for warning in summary.warnings:
            typer.echo(f"  warning: {warning}")
        if n_docs is not None:
            typer.echo(f"catalog: {n_docs:,} documents")
        for note in catalog_notes:
            typer.echo(f"  {note}")
        if summary.quarantine_path:
            typer.echo(f"quarantine: {summary.quarantine_path}")
        typer.echo(f"data docs: {summary.data_docs}")
    if summary.rows_read == 0:
        fail(f"{path}: empty input, nothing ingested", code=1)
    if summary.quarantined:
        raise typer.Exit(1)
