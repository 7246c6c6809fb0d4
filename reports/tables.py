"""Tables of runs: one run as a vertical list (rich); a comparison of groups of runs for the
terminal (a wide table, or stacked ones in a narrow terminal), as Markdown and as CSV.

Every cell and title is escaped: names, folders and errors are shown literally, never as markup.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fedgossip.reports.mechanisms import MechanismReport, mechanism_report, mechanism_reports
from fedgossip.reports.summary import mode_label

Summary = dict[str, Any]


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _status(s: Summary) -> str:
    dead = s.get("dead_nodes") or []
    status = str(s.get("status", "-"))
    return f"{status} (dead: {', '.join(map(str, dead))})" if dead else status


def _target(s: Summary) -> str:
    return f"{s.get('target_accuracy', 0.9):g}"


def _evaluated(rows: Sequence[Summary]) -> str:
    """What "rounds to the target" counts when a run evaluates only every k-th round (and the
    last: `experiment.evaluate_every`) or on a test subset before the last round
    (`task.eval_examples`); nothing when every round is evaluated on the whole test set."""
    every = sorted({row.get("evaluate_every", 1) for row in rows} - {1})
    subset = sorted({row.get("eval_examples", 0) for row in rows} - {0})
    said = [f"evaluated rounds only: every {'/'.join(map(str, every))} rounds and the last"] if every else []
    if subset:
        said.append(f"on {'/'.join(map(str, subset))} test examples before the last round")
    return f" ({'; '.join(said)})" if said else ""


# (label, cell) pairs shared by both layouts; labels with {t} name the target accuracy, {e} say
# which rounds were evaluated.
FIELDS: list[tuple[str, Callable[[Summary], str]]] = [
    ("mode", mode_label),
    ("strategy", lambda s: str(s.get("strategy", ""))),
    ("nodes", lambda s: _fmt(s.get("nodes"))),
    ("rounds", lambda s: _fmt(s.get("rounds_completed"))),
    ("final mean acc", lambda s: _fmt(s.get("final_mean_accuracy"), ".4f")),
    ("final min acc", lambda s: _fmt(s.get("final_min_accuracy"), ".4f")),
    ("rounds to {t}{e}", lambda s: _fmt(s.get("rounds_to_target"))),
    ("seconds to {t}", lambda s: _fmt(s.get("seconds_to_target"), ".1f")),
    ("MB sent", lambda s: _fmt(None if s.get("bytes_sent") is None else s["bytes_sent"] * 1e-6, ",.1f")),
    ("wall time s", lambda s: _fmt(s.get("wall_time_s"), ".1f")),
    ("status", _status),
]


def run_table(summary: Summary, title: str) -> Table:
    """One run, one row per figure (and a mechanism's rows, from its object in the summary)."""
    table = Table(title=escape(title), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, cell in FIELDS[:-1]:
        table.add_row(label.format(t=_target(summary), e=_evaluated([summary])), escape(cell(summary)))
    report = mechanism_report(summary.get("strategy"))
    own = summary.get(report.name) if report is not None else None
    for label, value, spec in report.run_rows if isinstance(own, dict) else ():
        table.add_row(label, escape(_fmt(value(own), spec)))
    if "final_mean_local_accuracy" in summary:  # task.eval local or both
        table.add_row("mean local acc", _fmt(summary["final_mean_local_accuracy"], ".4f"))
        table.add_row("worst local acc", _fmt(summary["final_min_local_accuracy"], ".4f"))
    label, cell = FIELDS[-1]
    table.add_row(label, escape(cell(summary)))
    return table


# The comparison's columns: (label, cell of a row of reports.groups); {t} and {e} as in FIELDS.
COMPARE_FIELDS: list[tuple[str, Callable[[Summary], str]]] = [
    ("strategy", lambda row: str(row["strategy"])),
    ("mode", lambda row: str(row["mode"])),
    ("nodes", lambda row: _fmt(row["nodes"])),
    ("seeds", lambda row: str(row["seeds"])),
    ("final mean acc", lambda row: _stat(row, "final_mean_accuracy", ".4f")),
    ("final min acc", lambda row: _stat(row, "final_min_accuracy", ".4f")),
    ("rounds to {t}{e}", lambda row: _stat(row, "rounds_to_target", ".1f")),
    ("seconds to {t}", lambda row: _stat(row, "seconds_to_target", ".1f")),
    ("MB sent", lambda row: _stat(row, "bytes_sent", ",.1f", scale=1e-6)),
    ("wall time s", lambda row: _stat(row, "wall_time_s", ".1f")),
    ("status", lambda row: str(row["status"])),
]
# shown when a compared run has a scenario
SCENARIO_FIELDS: list[tuple[str, Callable[[Summary], str]]] = [
    ("scenario", lambda row: str(row.get("scenario", "none"))),
    ("honest mean acc", lambda row: _stat(row, "honest_mean_accuracy", ".4f")),
    ("honest min acc", lambda row: _stat(row, "honest_min_accuracy", ".4f")),
    ("attack success", lambda row: _stat(row, "attack_success_rate", ".4f")),
]
# shown when a compared run evaluated its nodes on their own test splits (task.eval local or both)
LOCAL_FIELDS: list[tuple[str, Callable[[Summary], str]]] = [
    ("mean local acc", lambda row: _stat(row, "final_mean_local_accuracy", ".4f")),
    ("worst local acc", lambda row: _stat(row, "final_min_local_accuracy", ".4f")),
]
LEFT = ("run", "method", "strategy", "mode", "status", "scenario")  # and the mechanisms' text columns
UNLIMITED = 100_000  # columns: measuring the wide table as wide as it wants to be


def _stat(row: Summary, key: str, spec: str, scale: float = 1.0) -> str:
    """The cell of figure `key` of a comparison row (`stat_text`)."""
    return stat_text(row[key], row["seeds"], spec, scale)


def stat_text(stat: Summary, seeds: int, spec: str, scale: float = 1.0) -> str:
    """ "mean ± std" of a figure (a `Stat.to_dict()`) over `seeds` seeds; "(k/n)" when only k of
    its n seeds have it (a target reached by some seeds only); "-" when none has it."""
    if stat["mean"] is None:
        return "-"
    text = format(stat["mean"] * scale, spec)
    if stat["std"] is not None:
        text += f" ± {format(stat['std'] * scale, spec.lstrip('+'))}"
    return text + (f" ({stat['n']}/{seeds})" if stat["n"] < seeds else "")


def compare_fields(rows: Sequence[Summary]) -> list[tuple[str, Callable[[Summary], str]]]:
    """The comparison's columns: the scenario's beside the strategy when a run has a scenario, the
    nodes' local accuracies when a run has them (task.eval), a mechanism's
    (`MechanismReport.columns`; fair incentives: selection, psi-noise correlation,
    fairness, equality) when a run has its figures."""
    scenario = any(row.get("scenario", "none") != "none" for row in rows)
    local = any((row.get("final_mean_local_accuracy") or {}).get("n") for row in rows)
    shown = [report for report in mechanism_reports() if _has_figures(report, rows)]
    texts = [column for report in shown for column in report.columns if column[1] in report.labels]
    stats = [column for report in shown for column in report.columns if column[1] not in report.labels]
    return [
        COMPARE_FIELDS[0],
        *(SCENARIO_FIELDS[:1] if scenario else ()),
        *((label, _text_cell(key)) for label, key, _ in texts),
        *COMPARE_FIELDS[1:6],
        *(SCENARIO_FIELDS[1:] if scenario else ()),
        *(LOCAL_FIELDS if local else ()),
        *((label, _stat_cell(key, spec)) for label, key, spec in stats),
        *COMPARE_FIELDS[6:],
    ]


def _has_figures(report: MechanismReport, rows: Sequence[Summary]) -> bool:
    """Whether a compared group has one of `report`'s figures (a text, or a number in some seed)."""
    texts = any(row.get(key) for row in rows for key in report.labels)
    return texts or any((row.get(key) or {}).get("n") for row in rows for key in report.stats)


def _left() -> tuple[str, ...]:
    """The columns aligned left: LEFT and the mechanisms' text columns."""
    reports = mechanism_reports()
    return (*LEFT, *(label for r in reports for label, key, _ in r.columns if key in r.labels))


def _text_cell(key: str) -> Callable[[Summary], str]:
    return lambda row: str(row.get(key) or "-")


def _stat_cell(key: str, spec: str) -> Callable[[Summary], str]:
    return lambda row: _stat(row, key, spec)


def compare_header(rows: Sequence[Summary]) -> list[str]:
    """The column names of the comparison; the target is named when every group has the same."""
    targets = {row["target_accuracy"] for row in rows}
    target = f"{targets.pop():g}" if len(targets) == 1 else "target"
    evaluated = _evaluated(rows)
    return ["run", *(label.format(t=target, e=evaluated) for label, _ in compare_fields(rows))]


def compare_cells(rows: Sequence[Summary]) -> list[list[str]]:
    """The comparison as text cells, one list per group, in `compare_header` order."""
    fields = compare_fields(rows)
    return [[str(row["label"]), *(cell(row) for _, cell in fields)] for row in rows]


def compare_view(rows: Sequence[Summary], console: Console, title: str = "comparison") -> RenderableType:
    """The comparison for `console`: one wide table if it fits the console's width, else one
    small table per group (stacked). Nothing is ever cut: cells fold rather than ellipsize."""
    header, cells = compare_header(rows), compare_cells(rows)
    wide = Table(title=escape(title))
    for name in header:
        wide.add_column(escape(name), justify="left" if name in _left() else "right", no_wrap=True)
    for line in cells:
        wide.add_row(*map(escape, line))
    if Measurement.get(console, console.options.update_width(UNLIMITED), wide).maximum <= console.width:
        return wide
    stacked = []
    for line in cells:
        table = Table(title=escape(line[0]), show_header=False, title_justify="left")
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for name, value in zip(header[1:], line[1:], strict=True):
            table.add_row(escape(name), escape(value))
        stacked.append(table)
    return Group(Text(title, style="italic"), *stacked)


def markdown_table(rows: Sequence[Summary]) -> str:
    """The comparison as a Markdown (GitHub) pipe table."""
    return markdown_pipe_table(compare_header(rows), compare_cells(rows))


def markdown_pipe_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A Markdown (GitHub) pipe table: the `_left` columns left-aligned, the others right-aligned."""

    def line(items: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in items) + " |"

    left = _left()
    rule = ["---" if name in left else "---:" for name in header]
    return "\n".join([line(header), line(rule), *map(line, cells)]) + "\n"


def csv_table(rows: Sequence[Summary]) -> str:
    """The comparison as CSV: one line per group, each figure as mean, std and n (seeds having it)."""
    stats = [key for key, value in rows[0].items() if isinstance(value, dict)] if rows else []
    labels = [key for report in mechanism_reports() for key in report.labels]
    plain = ["label", "strategy", "mode", "nodes", "scenario", *labels, "seeds", "target_accuracy"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    parts = ("mean", "std", "n")
    writer.writerow([*plain, *(f"{key}_{part}" for key in stats for part in parts), "status"])
    for row in rows:
        figures = ["" if row[key][part] is None else row[key][part] for key in stats for part in parts]
        writer.writerow([*("" if row[key] is None else row[key] for key in plain), *figures, row["status"]])
    return out.getvalue()
