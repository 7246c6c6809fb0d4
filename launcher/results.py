"""The results folder of a run, as the launcher writes it.

config.toml     the resolved config (defaults included): the run can be repeated exactly
metrics.jsonl   one JSON record per node per round, appended and flushed as produced
summary.json    written at the end by fedgossip.reports
processes.json  the PID of every process the launcher started
accuracy.png    accuracy per round
logs/           one log file per process
nodes/          the node configs the peers were started with
secrets/        throwaway CA, certificates and token of a secured run (mode 0700)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from fedgossip.config import ExperimentConfig, dump_toml
from fedgossip.reports.records import CONFIG, METRICS


def default_out_dir(config: ExperimentConfig) -> Path:
    """results/<name>-<YYYYmmdd-HHMMSS> in the working directory."""
    return Path("results") / f"{config.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"


class ResultsFolder:
    """Creates the folder and appends metrics records, flushed one by one."""

    def __init__(self, path: str | Path, config: ExperimentConfig) -> None:
        self.path = Path(path).resolve()  # children may run in other working directories
        if (self.path / METRICS).exists():
            raise ValueError(f"{self.path} already holds a run: choose another --out")
        for sub in ("logs", "nodes"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        (self.path / CONFIG).write_text(dump_toml(config))
        self._metrics = open(self.path / METRICS, "a")  # noqa: SIM115 - closed in close()

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def nodes(self) -> Path:
        return self.path / "nodes"

    @property
    def secrets(self) -> Path:
        path = self.path / "secrets"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def write_processes(self, pids: dict[str, int]) -> None:
        """processes.json: the PID of every process of the run, to inspect or signal them by hand."""
        (self.path / "processes.json").write_text(json.dumps(pids, indent=2) + "\n")

    def append(self, record: dict[str, Any]) -> None:
        """Append one metrics record and flush it to disk."""
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        os.fsync(self._metrics.fileno())

    def close(self) -> None:
        self._metrics.close()
