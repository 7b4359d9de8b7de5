"""What every command shares: the settings at the entry point, errors as one line and an exit code, tables, JSON,
and progress lines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from reranker.settings import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Overrides RERANKER_DATA_DIR.")]


def settings(data_dir: Path | None) -> Settings:
    from reranker.settings import Settings, apply_runtime_env

    apply_runtime_env()
    found = Settings()
    if data_dir is not None:
        found = found.model_copy(update={"data_dir": data_dir})
    return found


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def emit(payload: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))


def table(title: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    out = Table(title=title)
    for col in rows[0]:
        out.add_column(str(col))
    for row in rows:
        out.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    Console(width=160).print(out)


class Steps:
    """Timed progress lines ("[  12.3s] what happened") to stderr, quiet under --json."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.perf_counter()
        self.laps: dict[str, float] = {}

    def say(self, message: str) -> None:
        if not self.quiet:
            typer.secho(
                f"[{time.perf_counter() - self.started:6.1f}s] {message}", fg=typer.colors.CYAN, err=True
            )

    def done(self, name: str) -> None:
        self.laps[name] = round(time.perf_counter() - self.started - sum(self.laps.values()), 2)
        if not self.quiet:
            typer.secho(
                f"[{time.perf_counter() - self.started:6.1f}s] {name} done", fg=typer.colors.GREEN, err=True
            )


def existing_path(path: Path, what: str) -> Path:
    """The path, or a one-line error before any work starts."""
    if not path.exists():
        fail(f"{path}: no such {what}")
    return path
