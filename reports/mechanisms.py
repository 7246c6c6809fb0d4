"""What the reports show of a mechanism's runs, and how they find it: a registry mechanism's
`report` part is a `MechanismReport` subclass, found by the run's strategy name through the
registry (`mechanism_report`), so no report compares a mechanism's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedgossip.config import ExperimentConfig
from fedgossip.strategies.mechanisms import mechanism, mechanisms

Records = list[dict[str, Any]]


class MechanismReport(ABC):
    """The reports' part of mechanism `name` (its registry entry's `report` names the subclass).

    `title` ends the title of its plot; `labels` and `stats` are the keys of `figures`, the run's
    figures in a comparison: text shown as it is (a group's first run's) and numbers averaged over
    the seeds. `run_rows` are rows of a run's table: (label, value from its summary object,
    format). `columns` are columns of the comparison: (label, figure key, format), a `labels`
    key's beside the strategy, a `stats` key's after the accuracy figures; shown when a compared
    run has one of its figures.
    """

    title: str
    labels: tuple[str, ...] = ()
    stats: tuple[str, ...] = ()
    run_rows: tuple[tuple[str, Callable[[dict[str, Any]], Any], str], ...] = ()
    columns: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def summary(self, records: Records, config: ExperimentConfig) -> dict[str, Any] | None:
        """summary.json's object under the mechanism's name (None: nothing to summarise)."""

    @abstractmethod
    def figures(self, records: Records, config: ExperimentConfig) -> dict[str, Any]:
        """The run's `labels` and `stats` figures (None each when there is nothing to report)."""

    @abstractmethod
    def plot(self, records: Records, config: ExperimentConfig, path: str | Path, title: str) -> Path:
        """Draw the run's plot (NAME.png) into `path`, titled `title`."""

    def no_figures(self) -> dict[str, Any]:
        """The figures of a run of another strategy: None each."""
        return dict.fromkeys((*self.labels, *self.stats))


def mechanism_report(strategy: object) -> MechanismReport | None:
    """The report of the mechanism registered as `strategy` (a run's strategy.name); None for any
    other strategy."""
    entry = mechanism(strategy)
    return None if entry is None else entry.part("report")(entry.name)


def mechanism_reports() -> list[MechanismReport]:
    """The report of every registered mechanism (the comparison has a place for each one's
    figures, None for runs of other strategies)."""
    return [entry.part("report")(entry.name) for entry in mechanisms()]


def mechanism_figures(records: Records, config: ExperimentConfig | None) -> dict[str, Any]:
    """A run's figures of every registered mechanism: its own mechanism's, None for the others'
    (and for a run whose config cannot be read)."""
    strategy = None if config is None else config.strategy.name
    return {
        key: value
        for report in mechanism_reports()
        for key, value in (
            report.figures(records, config) if report.name == strategy else report.no_figures()
        ).items()
    }
