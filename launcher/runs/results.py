"""The results folder of a run, as the launcher writes it.

config.toml     the resolved config (defaults included): the run can be repeated exactly
metrics.jsonl   one JSON record per node per round, appended and flushed as produced
events.jsonl    the scenario's events (losses, delays, crashes, rejoins, attacks), if it has any
summary.json    written at the end by fedgossip.reports
.claim          while a command writes the folder: its owner (launcher/runs/claim.py); removed at the end
processes.json  the PID of every process the launcher started (Ray engine: each actor's, on its machine)
ray.json        Ray engine: the cluster, the run's namespace, where each actor ran (gossip/ray_engine.py)
network.json    launcher.network = "namespaces": each node's emulated host (launcher/network/hosts.py)
accuracy.png    accuracy per round
logs/           one log file per process
nodes/          the node configs the peers were started with
secrets/        per-link keys of every gossip run; CA, certificates and token of a secured run (mode 0700)
data/           the per-node shards of a Hugging Face dataset, prepared once by the launcher

Every record is one whole line of metrics.jsonl: a write that fails part-way (a full disk) is cut
back to the previous length, so readers never meet a torn line written by this folder; the JSON
files are replaced whole (base/files.py). One command at a time writes the folder: it holds the
folder's claim from the check that the folder is free to the end of the run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedgossip.base.files import write_json
from fedgossip.config import ExperimentConfig, dump_toml
from fedgossip.launcher.runs.claim import CLAIM, FolderClaim, Owner, check_free, left_by
from fedgossip.reports.records import CONFIG, METRICS
from fedgossip.schema.lines import LineWriter

FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # the file cannot grow: the disk (or quota) is full
PROCESSES = "processes.json"
EVENTS = "events.jsonl"
EVENT_KEYS = ("time_s", "round", "node", "kind", "details")


def default_out_dir(config: ExperimentConfig) -> Path:
    """results/<name>-<YYYYmmdd-HHMMSS> in the working directory."""
    return Path("results") / f"{config.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def os_error_text(err: OSError, about: Path | None = None) -> str:
    """'<path>: <reason>' of an OS error, e.g. '/x/logs: Read-only file system' (just the reason
    when the path is `about`, already named by the caller). A copy that failed names both ends
    (`shutil` sets the destination as `filename2`): 'copying a to b: No space left on device'."""
    reason = err.strerror or str(err)
    if err.filename and err.filename2:
        return f"copying {err.filename} to {err.filename2}: {reason}"
    return f"{err.filename}: {reason}" if err.filename and err.filename != str(about) else reason


class ResultsWriteError(OSError):
    """A metrics record could not be written (e.g. the disk is full): the run must stop, failed."""


class ResultsFolder:
    """Creates the folder and appends metrics records, flushed one by one.

    A failed write of a record raises ResultsWriteError once and is remembered in `failure`;
    later records are dropped (the run is stopping), so cleanup code that still forwards records
    cannot fail a second time. Other files that fail to write (processes.json, summary, plot) are
    collected in `warnings`. `discard_unstarted` removes what this run created when no node of it
    recorded anything, so the same command can be rerun.
    """

    def __init__(self, path: str | Path, config: ExperimentConfig) -> None:
        self.path = Path(path).resolve()  # children may run in other working directories
        self.failure: str | None = None
        self.warnings: list[str] = []
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # told of every record written
        self._metrics: LineWriter | None = None
        self._events: LineWriter | None = None
        self._claim: FolderClaim | None = None
        if (self.path / METRICS).exists():
            check_free(self.path)  # a run still going: say whose
            raise ValueError(_holds_a_run(self.path, left_by(self.path)))
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"cannot write the results folder {self.path}: it is a file, not a folder")
        self._created = _missing_folders(self.path)
        self._before = set(_entries(self.path))
        try:
            for sub in ("logs", "nodes"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            self._claim = FolderClaim(self.path)  # FolderInUse: another command has it, leave all as is
            if (self.path / METRICS).exists():  # a run that began (and ended) since the check above
                self._claim.release()
                raise ValueError(_holds_a_run(self.path, self._claim.stale))
            (self.path / CONFIG).write_text(dump_toml(config), encoding="utf-8")
            self._metrics = LineWriter(self.path / METRICS, sync=True)
        except OSError as err:
            self.discard_unstarted()
            reason = os_error_text(err, self.path)
            raise ValueError(f"cannot write the results folder {self.path}: {reason}") from None

    @property
    def stale(self) -> Owner | None:
        """The command that claimed this folder before and died holding it (None: there was none)."""
        return self._claim.stale if self._claim is not None else None

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
        """processes.json: the PID of every process of the run, to inspect or signal them by hand.

        Informational, and also written while stopping: a failed write is a warning, not raised."""
        self.write_json(PROCESSES, pids)

    def write_json(self, name: str, data: Any) -> None:
        """Replace the file `name` of the folder with `data` as JSON, atomically (a failure keeps
        the file as it was and is one of `warnings`)."""
        self.save(name, lambda path: write_json(path, data))

    def append(self, record: dict[str, Any]) -> None:
        """Append one metrics record as one whole line and flush it to disk.

        Raises ResultsWriteError if it cannot (the file is cut back to its previous length)."""
        if self.failure is not None or self._metrics is None:
            return
        try:
            self._metrics.write(record)
        except OSError as err:
            self.failure = _failure(METRICS, err)
            raise ResultsWriteError(err.errno, self.failure, str(self.path / METRICS)) from err
        for listener in self.listeners:
            listener(record)

    def event(self, event: dict[str, Any]) -> None:
        """Append one scenario event to events.jsonl (opened at the first one) as
        {time_s, round, node, kind, details}. Raises ResultsWriteError like `append`."""
        if self.failure is not None:
            return
        try:
            if self._events is None:
                self._events = LineWriter(self.path / EVENTS, sync=True)
            self._events.write({key: event.get(key) for key in EVENT_KEYS})
        except OSError as err:
            self.failure = _failure(EVENTS, err)
            raise ResultsWriteError(err.errno, self.failure, str(self.path / EVENTS)) from err

    def save(self, name: str, write: Callable[[Path], object]) -> None:
        """Write the file `name` of the folder with `write(path)`; an OS error (a full disk) becomes
        one of `warnings` instead of a traceback, and removes the file if it is new (a partial
        plot); a file written before stays (JSON files are replaced atomically: it is whole)."""
        path = self.path / name
        existed = path.exists()
        try:
            write(path)
        except OSError as err:
            if not existed:
                with contextlib.suppress(OSError):
                    path.unlink()
            self.warnings.append(f"could not write {path}: {err.strerror or err}")

    def started(self) -> bool:
        """Whether a node of the run recorded anything (a metrics record, a scenario event): the
        logs of processes that started and recorded nothing (a fork server, nodes of a launch
        that failed) do not count."""
        metrics = self.path / METRICS
        recorded = metrics.exists() and metrics.stat().st_size > 0
        return recorded or (self.path / EVENTS).exists()

    def discard_unstarted(self) -> bool:
        """Remove what this run created (logs included), if no node of it recorded anything; True
        if it did.

        Only entries that were not there before are removed, and only folders this run created
        (and that are then empty) are deleted: a folder given with --out that existed is kept."""
        try:
            if self.started():
                return False
        except OSError:  # cannot tell: keep everything
            return False
        self._close_writers()
        for name in set(_entries(self.path)) - self._before - {CLAIM}:
            entry = self.path / name
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.close()  # the claim last: nobody else meets a half-removed folder
        for folder in reversed(self._created):  # innermost first; stops at a non-empty one
            try:
                folder.rmdir()
            except OSError:
                break
        return True

    def close(self) -> None:
        """Close the record files and release the folder's claim (at the very end of the run);
        again: nothing."""
        self._close_writers()
        if self._claim is not None:
            self._claim.release()

    def _close_writers(self) -> None:
        for writer in (self._metrics, self._events):
            if writer is not None:
                writer.close()


def _holds_a_run(path: Path, stale: Owner | None) -> str:
    """The refusal of a folder that holds a run; `stale`: the command that died writing it."""
    left = f", left unfinished by a command that died ({stale})" if stale else ""
    return f"{path} already holds a run{left}: choose another --out"


def _failure(name: str, err: OSError) -> str:
    """The run's failure message for a write to `name` that failed."""
    reason = err.strerror or str(err)
    if err.errno in FULL:
        return f"failed: disk full ({reason} writing {name})"
    return f"failed: cannot write {name} ({reason})"


def _missing_folders(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, outermost first (what mkdir will create)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def _entries(folder: Path) -> list[str]:
    """The names in `folder`; none if it is missing or not a folder."""
    try:
        return os.listdir(folder)
    except OSError:
        return []
