"""The launcher's progress bars: a run's rounds done and the current mean accuracy over nodes; a
sweep's runs done and what runs now."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def _bar(console: Console) -> Progress:
    """A bar with a label, done/total, a status text and the time elapsed."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class RoundProgress:
    """Counts metrics records (nodes x rounds) and shows the mean accuracy of the newest round."""

    def __init__(self, console: Console, nodes: int, rounds: int, label: str) -> None:
        self.nodes = nodes
        self._accuracies: dict[int, list[float]] = defaultdict(list)
        self._progress = _bar(console)
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


class RunProgress:
    """Counts a sweep's runs (those skipped as already done count as done) and names the running ones."""

    def __init__(self, console: Console, total: int, done: int) -> None:
        self._progress = _bar(console)
        self._running: list[str] = []
        self._task = self._progress.add_task("sweep", total=total, completed=done, status="")

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def started(self, name: str) -> None:
        self._running.append(name)
        self._show()

    def finished(self, name: str, line: str) -> None:
        """Account one run that ended; `line` (markup) is printed above the bar."""
        self._running.remove(name)
        self._progress.console.print(line)
        self._progress.advance(self._task)
        self._show()

    def _show(self) -> None:
        self._progress.update(self._task, status=escape("running: " + ", ".join(self._running)))
