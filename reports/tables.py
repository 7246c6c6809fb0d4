"""Terminal tables of run summaries (rich): one run as a vertical list, several runs side by side.

Every cell and title is escaped: names, folders and errors are shown literally, never as markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

Summary = dict[str, Any]


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _mode(s: Summary) -> str:
    return f"{s.get('mode', '')}/{s['engine']}" if s.get("engine") else str(s.get("mode", ""))


def _status(s: Summary) -> str:
    dead = s.get("dead_nodes") or []
    status = str(s.get("status", "-"))
    return f"{status} (dead: {', '.join(map(str, dead))})" if dead else status


def _target(s: Summary) -> str:
    return f"{s.get('target_accuracy', 0.9):g}"


# (label, cell) pairs shared by both layouts; labels with {t} name the target accuracy.
FIELDS: list[tuple[str, Callable[[Summary], str]]] = [
    ("mode", _mode),
    ("strategy", lambda s: str(s.get("strategy", ""))),
    ("nodes", lambda s: _fmt(s.get("nodes"))),
    ("rounds", lambda s: _fmt(s.get("rounds_completed"))),
    ("final mean acc", lambda s: _fmt(s.get("final_mean_accuracy"), ".4f")),
    ("final min acc", lambda s: _fmt(s.get("final_min_accuracy"), ".4f")),
    ("rounds to {t}", lambda s: _fmt(s.get("rounds_to_target"))),
    ("seconds to {t}", lambda s: _fmt(s.get("seconds_to_target"), ".1f")),
    ("MB sent", lambda s: _fmt(None if s.get("bytes_sent") is None else s["bytes_sent"] / 1e6, ",.1f")),
    ("wall time s", lambda s: _fmt(s.get("wall_time_s"), ".1f")),
    ("status", _status),
]


def run_table(summary: Summary, title: str) -> Table:
    """One run, one row per figure."""
    table = Table(title=escape(title), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, cell in FIELDS:
        table.add_row(label.format(t=_target(summary)), escape(cell(summary)))
    return table


def summary_table(summaries: Sequence[Summary], title: str = "comparison") -> Table:
    """Several runs, one row each, labelled by their `label` (folder name) or name."""
    table = Table(title=escape(title))
    target = _target(summaries[0]) if summaries else "0.9"
    table.add_column("run")
    for label, _ in FIELDS:
        table.add_column(
            label.format(t=target), justify="left" if label in ("mode", "strategy", "status") else "right"
        )
    for s in summaries:
        label = str(s.get("label", s.get("name", "")))
        table.add_row(escape(label), *(escape(cell(s)) for _, cell in FIELDS))
    return table
