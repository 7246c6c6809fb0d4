"""The launcher's progress bar: rounds done and the current mean accuracy over nodes."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RoundProgress:
    """Counts metrics records (nodes x rounds) and shows the mean accuracy of the newest round."""

    def __init__(self, console: Console, nodes: int, rounds: int, label: str) -> None:
        self.nodes = nodes
        self._accuracies: dict[int, list[float]] = defaultdict(list)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(escape(label), total=nodes * rounds, status="starting nodes")

    def __enter__(self) -> RoundProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def status(self, text: str) -> None:
        self._progress.update(self._task, status=text)

    def record(self, record: dict[str, Any]) -> None:
        """Account one node-round record."""
        self._accuracies[record["round"]].append(record["test_accuracy"])
        newest = max(self._accuracies)
        accs = self._accuracies[newest]
        self._progress.update(
            self._task,
            advance=1,
            status=f"round {newest}: mean acc {sum(accs) / len(accs):.3f} ({len(accs)}/{self.nodes} nodes)",
        )
