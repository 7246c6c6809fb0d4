"""The launcher's progress bars: a run's rounds done and the current mean accuracy over nodes; a
sweep's runs done and what runs now."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

B = TypeVar("B", bound="_Bar")


class _Bar:
    """A bar with a label, done/total, a status text and the time elapsed; a context manager."""

    def __init__(self, console: Console, label: str, total: int, done: int, status: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(escape(label), total=total, completed=done, status=status)

    def __enter__(self: B) -> B:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def status(self, text: str) -> None:
        self._progress.update(self._task, status=text)


class RoundProgress(_Bar):
    """Counts metrics records (nodes x rounds, or the `total` a churn plan leaves) and shows the mean
    accuracy of the newest evaluated round (`experiment.evaluate_every`)."""

    def __init__(
        self, console: Console, nodes: int, rounds: int, label: str, total: int | None = None
    ) -> None:
        super().__init__(console, label, nodes * rounds if total is None else total, 0, "starting nodes")
        self.nodes = nodes
        self._accuracies: dict[int, list[float]] = defaultdict(list)

    def record(self, record: dict[str, Any]) -> None:
        """Account one node-round record."""
        if record["test_accuracy"] is None:  # a round not evaluated
            self._progress.update(self._task, advance=1)
            return
        self._accuracies[record["round"]].append(record["test_accuracy"])
        newest = max(self._accuracies)
        accs = self._accuracies[newest]
        self._progress.update(
            self._task,
            advance=1,
            status=f"round {newest}: mean acc {sum(accs) / len(accs):.3f} ({len(accs)}/{self.nodes} nodes)",
        )


class RunProgress(_Bar):
    """Counts a sweep's runs (those skipped as already done count as done) and names the running ones."""

    def __init__(self, console: Console, total: int, done: int) -> None:
        super().__init__(console, "sweep", total, done, "")
        self._running: list[str] = []

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
        self.status(escape("running: " + ", ".join(self._running)) if self._running else "")
