"""`reranker serve` and `reranker schema`: the HTTP stage and the event contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reranker.cli.output import DataDirOpt, fail, settings


def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    data_dir: DataDirOpt = None,
) -> None:
    """Start the rerank stage (BentoML): POST /rerank, /interactions, /metrics, /livez, /readyz, /docs."""
    import os
    import subprocess

    conf = settings(data_dir)
    layout = conf.layout
    if (
        not (layout.feature_tables / "manifest.json").exists()
        or not (layout.feast / "feature_store.yaml").exists()
    ):
        fail("no features to serve yet: run `reranker quickstart` (or ingest + features apply + materialize)")
    from reranker.access import KeyRing, KeyStore
    from reranker.settings import SettingsError

    try:
        conf.request_ids()  # the salt: refused when it is the public example outside dev mode
    except SettingsError as exc:
        fail(str(exc))
    ring = KeyRing(KeyStore(layout.keys))
    ring.refresh()
    if conf.auth and not len(ring):
        fail("no API key yet: `reranker keys create --name NAME --scope rerank --scope interactions` (or "
             "RERANKER_AUTH=false behind a gateway that authenticates)")  # fmt: skip
    from reranker.launch import stage_command, stage_env

    env = stage_env(os.environ, RERANKER_DATA_DIR=str(conf.data_dir.resolve()))
    raise typer.Exit(subprocess.call(stage_command(host, port), env=env))


def schema(
    out: Annotated[Path, typer.Option(help="Where to write the JSON Schema.")] = Path("schemas/events.json"),
) -> None:
    """Write the JSON Schema of the event contracts."""
    from reranker.contracts import write_json_schemas

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_schemas(out)
    typer.echo(f"wrote {out}")
