"""`fedgossip compare`: several results folders in one table and one plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgossip.reports.plots import plot_comparison
from fedgossip.reports.records import SUMMARY, read_records
from fedgossip.reports.summary import build_summary


def load_summary(run_dir: Path) -> dict[str, Any]:
    """A run's summary.json, recomputed from its metrics if missing or torn (a killed launcher, a
    full disk); the recomputed one is not written back (the folder may be read-only)."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        summary = None
    return summary if isinstance(summary, dict) else build_summary(run_dir, {"status": "unknown"})


def compare(run_dirs: Sequence[str | Path], plot_path: str | Path) -> list[dict[str, Any]]:
    """Summaries of `run_dirs` (labelled by folder name) and a comparison plot at `plot_path`."""
    if not run_dirs:
        raise ValueError("compare needs at least one results folder")
    summaries, curves = [], {}
    for run_dir in map(Path, run_dirs):
        summary = {**load_summary(run_dir), "label": run_dir.name}
        summaries.append(summary)
        curves[run_dir.name] = read_records(run_dir)
    plot_comparison(curves, plot_path)
    return summaries
