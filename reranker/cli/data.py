"""`reranker data load`: the bundled datasets, with the feature set each ships."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, emit, fail, settings

group = typer.Typer(
    help="Load the bundled datasets (MovieLens-100K, Open Bandit, synthetic shop).", no_args_is_help=True
)


class Dataset(StrEnum):
    movielens = "movielens"
    obd = "obd"
    synthetic = "synthetic"


@group.command("load")
def data_load(
    dataset: Dataset,
    size: Annotated[
        int, typer.Option(help="Synthetic: number of events (1k .. 10M).", min=1_000, max=10_000_000)
    ] = 100_000,
    seed: Annotated[int, typer.Option(help="Synthetic: world seed.")] = 7,
    campaign: Annotated[str, typer.Option(help="OBD: all, men or women.")] = "all",
    shift_to_now: Annotated[
        bool,
        typer.Option(
            "--shift-to-now",
            help="Replayed logs (MovieLens, OBD): move every timestamp by whole days so the last event "
            "is yesterday; windows and ages then read as they did when it was logged.",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a dataset's interaction events, document catalog and feature set under <data>/raw/<name>/."""
    from reranker.datasets import DatasetError, movielens, obd
    from reranker.datasets import shift_to_now as shift
    from reranker.featureset import BUNDLED, install_feature_set
    from reranker.lake import atomic_write_parquet

    conf = settings(data_dir)
    layout = conf.layout
    name = {"movielens": "movielens", "obd": f"obd-{campaign}", "synthetic": f"synthetic-{size}-s{seed}"}[
        dataset
    ]
    out = layout.raw / name
    moved = None
    try:
        if dataset is Dataset.synthetic:
            from reranker.synthetic import SyntheticWorld, WorldConfig, write_dataset

            start = None
            if shift_to_now:
                import pandas as pd

                start = (pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=90)).to_pydatetime()
            config = (
                WorldConfig.shop(seed=seed) if start is None else WorldConfig.shop(seed=seed, start=start)
            )
            meta = write_dataset(SyntheticWorld.create(config), size, out, progress=not as_json)
            events_path, n = out / "interactions", int(meta["events"])  # type: ignore[call-overload]
        else:
            events, catalog = (
                movielens(layout.cache) if dataset is Dataset.movielens else obd(layout.cache, campaign)
            )
            if shift_to_now:
                events, catalog, moved = shift(events, catalog)
            events_path = out / "interactions" / "events.parquet"
            atomic_write_parquet(events, events_path)
            atomic_write_parquet(catalog, out / "documents.parquet")
            n = len(events)
    except DatasetError as exc:
        fail(str(exc))
    declared = (
        BUNDLED / {"movielens": "movielens.yaml", "obd": "obd.yaml", "synthetic": "synthetic.yaml"}[dataset]
    )
    note = install_feature_set(declared, conf.feature_set_path, out / "featureset.yaml")
    result = {"dataset": name, "events": n, "interactions": str(events_path),
              "documents": str(out / "documents.parquet"), "feature_set": str(conf.feature_set_path),
              "shifted_by": str(moved) if moved is not None else None}  # fmt: skip
    emit(result, as_json)
    if not as_json:
        typer.echo(
            f"{n:,} events -> {events_path}"
            + (f" (timestamps moved by {moved})" if moved is not None else "")
        )
        typer.echo(note)
        typer.echo(f"next: reranker ingest {events_path} --documents {out / 'documents.parquet'}")
