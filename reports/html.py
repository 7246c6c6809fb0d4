"""`fedgossip report DIR [DIR...]`: one self-contained HTML page for a run, a sweep or a
comparison. A run: its summary, figures, the mechanism's panel (e.g. fair incentives) and the
scenario's (attackers, losses, crashes) where it has them, the events timeline, its config and
links to its raw files. A sweep or several folders: the comparison (as `fedgossip compare`, whose
files it writes beside the page) and then each run. Figures are inlined PNGs: the page opens
offline, with no script and no request."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from fedgossip.base.files import write_atomic
from fedgossip.reports.compare import compare, find_runs
from fedgossip.reports.html_parts import (
    accuracy_chart,
    comparison_table,
    figure,
    links,
    page,
    summary_table,
    timeline,
)
from fedgossip.reports.mechanisms import mechanism_report
from fedgossip.reports.records import CONFIG, METRICS, read_config, read_records
from fedgossip.reports.scenario import scenario_summary
from fedgossip.reports.summary import build_summary, read_summary
from fedgossip.schema.lines import read_lines

REPORT = "report.html"
EVENTS = "events.jsonl"
FIGURE_ORDER = ("accuracy", "variance", "consensus")  # then the others by name


def default_report_path(dirs: Sequence[str | Path]) -> Path:
    """DIR/report.html for one results or sweep folder, else ./report.html."""
    return Path(dirs[0]) / REPORT if len(dirs) == 1 else Path(REPORT)


def write_html_report(dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the report of `dirs` to `out` (default: `default_report_path`); return its path.
    ValueError (the CLI's exit 2) for a folder that holds no run, as `fedgossip compare` says."""
    folders = [Path(d) for d in dirs]
    target = Path(out) if out is not None else default_report_path(folders)
    if len(folders) == 1 and (folders[0] / METRICS).exists():
        find_runs(folders)  # refuses another tool's folder
        html = run_page(folders[0], target.parent)
    else:
        html = comparison_page(folders, target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, html)
    return target


def run_page(run_dir: Path, page_dir: Path) -> str:
    """The page of one run."""
    summary = read_summary(run_dir) or build_summary(run_dir)
    title = f"{summary.get('name') or run_dir.name}: {summary.get('mode')} mode, {summary.get('strategy')}"
    return page(title, run_sections(run_dir, page_dir, summary))


def run_sections(run_dir: Path, page_dir: Path, summary: dict[str, Any], level: int = 2) -> str:
    """A run's sections: summary, figures, mechanism and scenario panels, events, config, files."""
    h = f"h{level}"
    config = read_config(run_dir)
    report = mechanism_report(summary.get("strategy"))
    own = report.name if report is not None and isinstance(summary.get(report.name), dict) else None
    scenario = scenario_summary(read_records(run_dir), config) if config is not None else {}
    pngs = _figures(run_dir)
    parts = [
        f"<div class='top'><section class='summary'><{h}>summary</{h}>"
        f"{summary_table(summary, skip=[own] if own else [])}</section>"
        f"<section class='figures'><{h}>figures</{h}>{accuracy_chart(read_records(run_dir))}"
        + "".join(figure(png.read_bytes(), png.stem) for png in pngs if png.stem != own)
        + "</section></div>",
    ]
    if own:
        mine = [png for png in pngs if png.stem == own]
        parts.append(
            f"<section class='mechanism'><{h}>{report.title}</{h}>{summary_table(summary[own])}"
            + "".join(figure(png.read_bytes(), png.stem) for png in mine)
            + "</section>"
        )
    if summary.get("scenario") not in (None, "none"):
        panel = {key: summary[key] for key in scenario if key in summary}
        parts.append(f"<section class='scenario'><{h}>scenario</{h}>{summary_table(panel)}</section>")
    events = read_lines(run_dir / EVENTS) if (run_dir / EVENTS).exists() else []
    nodes = config.nodes.count if config is not None else 0
    parts.append(f"<section class='events'><{h}>events</{h}>{timeline(events, nodes)}</section>")
    if (run_dir / CONFIG).exists():
        text = (run_dir / CONFIG).read_text(errors="replace")
        parts.append(
            f"<section class='config'><{h}>config</{h}><details><summary>config.toml</summary>"
            f"<pre>{_escape(text)}</pre></details></section>"
        )
    parts.append(links(run_dir, page_dir))
    return "\n".join(parts)


def comparison_page(folders: Sequence[Path], page_dir: Path) -> str:
    """The page of a sweep or of several folders: the comparison, then every run."""
    done = compare(folders, page_dir)
    title = f"comparison of {len(done.groups)} groups, {sum(len(g.runs) for g in done.groups)} runs"
    parts = [
        "<section class='comparison'><h2>comparison</h2>",
        comparison_table(done.rows),
        *(figure(path.read_bytes(), path.stem) for path in done.files if path.suffix == ".png"),
        "</section>",
    ]
    for group in done.groups:
        for run in group.runs:
            summary = read_summary(run.path) or build_summary(run.path)
            name = _escape(run.path.name)
            parts.append(
                f"<section class='run' data-run='{name}'><h2>run {name}</h2>"
                f"{run_sections(run.path, page_dir, summary, level=3)}</section>"
            )
    return page(title, "\n".join(parts))


def _figures(run_dir: Path) -> list[Path]:
    """The run's PNG figures: accuracy, variance, consensus first, then the others by name."""
    pngs = sorted(run_dir.glob("*.png"))
    rank = {name: index for index, name in enumerate(FIGURE_ORDER)}
    return sorted(pngs, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


def _escape(text: str) -> str:
    return escape(text, quote=True)
