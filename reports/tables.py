"""Terminal tables of run summaries (rich), shared by `run` and `compare`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f}"


def summary_table(summaries: Sequence[dict[str, Any]], title: str = "fedgossip") -> Table:
    """One row per run: final mean/min accuracy, rounds and seconds to target, MB moved, wall time."""
    table = Table(title=title)
    target = summaries[0].get("target_accuracy", 0.9) if summaries else 0.9
    for header in ("run", "mode", "strategy", "nodes", "rounds", "final mean acc", "final min acc",
                   f"rounds to {target:g}", f"s to {target:g}", "MB sent", "wall s", "status"):
        table.add_column(header, justify="left" if header in ("run", "mode", "strategy", "status") else "right")
    for s in summaries:
        mode = s.get("mode", "")
        if s.get("engine"):
            mode = f"{mode}/{s['engine']}"
        table.add_row(
            str(s.get("label", s.get("name", ""))),
            mode,
            str(s.get("strategy", "")),
            _fmt(s.get("nodes")),
            _fmt(s.get("rounds_completed")),
            _fmt(s.get("final_mean_accuracy"), ".4f"),
            _fmt(s.get("final_min_accuracy"), ".4f"),
            _fmt(s.get("rounds_to_target")),
            _fmt(s.get("seconds_to_target"), ".1f"),
            _megabytes(s.get("bytes_sent")),
            _fmt(s.get("wall_time_s"), ".1f"),
            _status(s),
        )
    return table


def _status(summary: dict[str, Any]) -> str:
    status = summary.get("status", "-")
    dead = summary.get("dead_nodes") or []
    return f"{status} (dead: {', '.join(map(str, dead))})" if dead else status
