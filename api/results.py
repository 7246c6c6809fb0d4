"""Results folders read from Python: a run's records as a pandas DataFrame, its summary and
config; several runs or sweeps compared as `fedgossip compare` does, the table as a DataFrame and
the figures as matplotlib figures. pandas is optional: only the DataFrames need it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgossip.api.configs import bad_input
from fedgossip.config import ExperimentConfig
from fedgossip.reports import compare as compare_runs
from fedgossip.reports import csv_table, default_out_dir, read_config, read_records
from fedgossip.reports.summary import build_summary, read_summary
from fedgossip.schema.fields import FIELDS


def pandas() -> Any:
    """The pandas module, or an ImportError saying how to get it."""
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "fedgossip's DataFrames need pandas: pip install 'fedgossip[notebook]' (or pandas)"
        ) from None
    return pandas


def record_columns(records: Sequence[dict[str, Any]]) -> list[str]:
    """The record fields the records hold, in their declaration order (`fedgossip.schema.fields`)."""
    present = {key for record in records for key in record}
    return [field.name for field in FIELDS if field.name in present]


class Results:
    """A run's results folder: `records` (DataFrame), `summary`, `config`, `status`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        read_records(self.path)  # ValueError now if it is no results folder

    def __repr__(self) -> str:
        return f"Results({str(self.path)!r}, status={self.status!r})"

    @property
    def records(self) -> Any:
        """Every valid metrics record as a DataFrame: one row per record, one column per field."""
        records = read_records(self.path)
        return pandas().DataFrame(records, columns=record_columns(records))

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json, or (a run still going, or torn) the summary its records give now."""
        return read_summary(self.path) or build_summary(self.path)

    @property
    def status(self) -> str | None:
        """complete, partial, degraded, failed or interrupted; None while the run goes on."""
        return (read_summary(self.path) or {}).get("status")

    @property
    def config(self) -> ExperimentConfig | None:
        """The resolved config the run was made with (None if it cannot be read)."""
        return read_config(self.path)


@dataclass
class Comparison:
    """Runs compared: `table` (compare.csv as a DataFrame), `rows` (compare.json's groups),
    `figures` (file name -> matplotlib Figure), `files` (written as by `fedgossip compare`)."""

    rows: list[dict[str, Any]]
    figures: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def table(self) -> Any:
        """compare.csv's table: one row per group, each figure as its mean, std and n columns."""
        return pandas().read_csv(io.StringIO(csv_table(self.rows)))


def compare(*dirs: str | Path, out: str | Path | None = None, target: float | None = None) -> Comparison:
    """`fedgossip compare DIR... [--out OUT] [--target X]`: the same groups, rows and files (OUT by
    default as the CLI's), and the figures as matplotlib figures."""
    with bad_input():
        done = compare_runs(dirs, out if out is not None else default_out_dir(dirs), target)
    return Comparison(done.rows, done.figures, done.files)
