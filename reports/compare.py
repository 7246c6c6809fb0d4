"""`fedgossip compare`: results folders (or sweep folders holding them) grouped by config, seeds
pooled as mean +- std, written as compare.csv, compare.json and two figures.

A DIR is a results folder (it holds metrics.jsonl) or a folder of them (a sweep: every direct
subfolder that holds metrics.jsonl). Another tool's folder with a metrics.jsonl is refused
(`not_a_run`), and so are runs that hold no record at all: nothing to compare. The files go to
`out_dir`; `default_out_dir` picks the sweep folder when one is given alone, else the current folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgossip.base.files import write_atomic, write_json
from fedgossip.reports.groups import Group, group_runs, load_run
from fedgossip.reports.plots import (
    attacker_fraction,
    comparison_figure,
    final_figure,
    robustness_figure,
    save_figure,
)
from fedgossip.reports.records import METRICS, not_a_run
from fedgossip.reports.tables import csv_table

CSV, JSON, ACCURACY_PNG, FINAL_PNG = "compare.csv", "compare.json", "compare.png", "compare-final.png"
ROBUSTNESS_PNG = "compare-robustness.png"  # when the runs differ by their share of attackers


@dataclass
class Comparison:
    """The groups compared, their rows (JSON-ready), the files written and the figures (matplotlib
    Figures by file name)."""

    groups: list[Group]
    rows: list[dict[str, Any]]
    files: list[Path]
    figures: dict[str, Any]


def is_sweep(folder: Path) -> bool:
    """Whether `folder` is a folder of results folders rather than one itself."""
    return not (folder / METRICS).exists() and bool(_runs_under(folder))


def _runs_under(folder: Path) -> list[Path]:
    """The direct subfolders of `folder` that hold a run, by name."""
    try:
        return sorted(sub for sub in folder.iterdir() if (sub / METRICS).is_file())
    except OSError:
        return []


def find_runs(dirs: Sequence[str | Path]) -> list[Path]:
    """The results folders named by `dirs` (a sweep folder stands for all its runs), each once."""
    if not dirs:
        raise ValueError("compare needs at least one results folder")
    found: dict[Path, Path] = {}
    for folder in map(Path, dirs):
        runs = [folder] if (folder / METRICS).exists() else _runs_under(folder)
        if not runs:
            raise ValueError(f"{folder} is not a results folder: no {METRICS} in it or its subfolders")
        for run in runs:
            problem = not_a_run(run)
            if problem:
                raise ValueError(f"{run} is not a fedgossip results folder: {problem}")
            found.setdefault(run.resolve(), run)
    return list(found.values())


def default_out_dir(dirs: Sequence[str | Path]) -> Path:
    """Where compare writes its files by default: the sweep folder if it is the one DIR given."""
    return Path(dirs[0]) if len(dirs) == 1 and is_sweep(Path(dirs[0])) else Path(".")


def compare(dirs: Sequence[str | Path], out_dir: str | Path, target: float | None = None) -> Comparison:
    """Group the runs of `dirs` and write compare.csv, compare.json, compare.png (mean accuracy with
    a band over seeds against rounds and seconds) and compare-final.png into `out_dir`, and
    compare-robustness.png (honest accuracy against the attackers' share) when that share varies.
    `target` replaces each run's target accuracy for the rounds and seconds to reach it."""
    if target is not None and not 0 < target <= 1:
        raise ValueError(f"--target must be in (0, 1]; got {target}")
    runs = [load_run(path, target) for path in find_runs(dirs)]
    if not any(run.curve for run in runs):
        names = ", ".join(str(run.path) for run in runs)
        raise ValueError(f"nothing to compare: no metrics record in {names} (the runs recorded nothing)")
    groups = group_runs(runs)
    rows = [group.row() for group in groups]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CSV, csv_table(rows))  # both whole or as they were (a full disk)
    write_json(out / JSON, {"groups": rows})
    figures = comparison_figures(groups)
    files = [out / CSV, out / JSON, *(save_figure(figure, out / name) for name, figure in figures.items())]
    return Comparison(groups, rows, files, figures)


def comparison_figures(groups: Sequence[Group]) -> dict[str, Any]:
    """The figures of a comparison by file name: compare.png, compare-final.png, and
    compare-robustness.png when the groups differ by their share of attackers."""
    figures = {ACCURACY_PNG: comparison_figure(groups), FINAL_PNG: final_figure(groups)}
    if len({attacker_fraction(g) for g in groups} - {None}) > 1:
        figures[ROBUSTNESS_PNG] = robustness_figure(groups)
    return figures
