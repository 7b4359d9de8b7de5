"""The Great Expectations suite for interaction logs, and one `validate()` returning a typed report.

Row-level expectations report the index of every failing row (result format COMPLETE), so each quarantined row
names the expectation it failed. Table-level failures (a missing column) fail every row of the batch.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from reranker.contracts import REQUIRED_COLUMNS, InteractionType

SUITE = "interactions"
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")


@dataclass
class ValidationReport:
    rows: int
    failed_rows: dict[int, list[str]] = field(default_factory=dict)  # frame index -> failed expectations
    table_failures: list[str] = field(default_factory=list)
    expectations: dict[str, bool] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.failed_rows and not self.table_failures


def _describe(config: Any) -> str:
    kwargs = {
        k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format") and v is not None
    }
    column = kwargs.pop("column", None)
    detail = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("value_set",))
    if "value_set" in kwargs:
        detail = (detail + ", " if detail else "") + f"value_set={sorted(kwargs['value_set'])}"
    head = f"{config.type}({column}" + (f", {detail}" if detail else "") + ")"
    return head if column else f"{config.type}({detail})"


def build_suite(now: datetime, future_skew_seconds: int) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    latest = pd.Timestamp(now) + pd.Timedelta(seconds=future_skew_seconds)
    suite = gx.ExpectationSuite(name=SUITE)
    for col in REQUIRED_COLUMNS:
        suite.add_expectation(gxe.ExpectColumnToExist(column=col))
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=col))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="event_id"))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeInSet(
            column="interaction_type", value_set=[t.value for t in InteractionType]
        )
    )
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="position", min_value=0, max_value=10_000))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column="propensity", min_value=0, max_value=1, strict_min=True)
    )
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=EARLIEST, max_value=latest)
    )
    return suite


def file_context(gx_dir: Path) -> Any:
    """The file-backed GX context under the data dir (progress bars off)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    gx_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def dataframe_checkpoint(context: Any, suite: Any, name: str, result_format: str = "COMPLETE") -> Any:
    """A checkpoint validating one in-memory dataframe against `suite` (asset, batch definition, validation
    definition and checkpoint named after it, created or updated)."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas("lake")
    names = [a.name for a in source.assets]
    asset = source.get_asset(suite.name) if suite.name in names else source.add_dataframe_asset(suite.name)
    batch_def = (
        asset.batch_definitions[0]
        if asset.batch_definitions
        else asset.add_batch_definition_whole_dataframe("whole_batch")
    )
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(data=batch_def, suite=suite, name=name)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[],
            result_format={"result_format": result_format},
        )
    )


def data_docs(context: Any) -> Path:
    """Build the Data Docs (self-contained, readable offline); the index page's path."""
    from expectations import data_docs as site

    return site.build(context)


def escaped(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with HTML's special characters escaped in its text columns: GX writes failing values into the Data
    Docs pages as they are, so a value such as `<img onerror=...>` would run in the reader's browser. Escaping is
    one-to-one, so uniqueness, nulls and value sets validate as before; the row index is kept."""
    out = frame
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        special = values.map(lambda v: isinstance(v, str) and any(c in v for c in "<>&\"'"))
        if special.any():
            if out is frame:
                out = frame.copy()
            out.loc[special, column] = values[special].map(html.escape)
    return out


class InteractionValidator:
    """A file-backed GX context under the data dir; `validate` runs the checkpoint on one dataframe batch."""

    def __init__(self, gx_dir: Path, now: datetime, future_skew_seconds: int) -> None:
        self.context = file_context(gx_dir)
        self.checkpoint = dataframe_checkpoint(
            self.context, build_suite(now, future_skew_seconds), f"{SUITE}_ingest"
        )

    def validate(self, frame: pd.DataFrame, batch: str = "batch") -> ValidationReport:
        """`batch` names the run in the Data Docs (the file and chunk it came from)."""
        from great_expectations.core.run_identifier import RunIdentifier

        result = self.checkpoint.run(batch_parameters={"dataframe": escaped(frame)},
                                     run_id=RunIdentifier(run_name=batch[:200]))  # fmt: skip
        report = ValidationReport(rows=len(frame))
        for run in result.run_results.values():
            for res in run.results:
                name = _describe(res.expectation_config)
                report.expectations[name] = bool(res.success)
                if res.success:
                    continue
                indexes = (res.result or {}).get("unexpected_index_list")
                if indexes is None:
                    report.table_failures.append(name)
                    continue
                for idx in indexes:
                    report.failed_rows.setdefault(int(idx), []).append(name)
        return report

    def build_docs(self) -> Path:
        return data_docs(self.context)
