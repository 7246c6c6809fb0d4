"""Experiment tracking: a run's records streamed to MLflow, TensorBoard or Weights & Biases as they
are written (every node's numbers and the round's mean over nodes), its resolved config as
parameters, its summary as final metrics and its figures as artifacts.

Offline by default: an MLflow file store (RESULTS/mlruns), a TensorBoard log folder
(RESULTS/tensorboard), W&B in offline mode (RESULTS/wandb). The tracker's library is imported only
here, on the tracker's own thread, and only when asked for. A tracker never stops or slows the
run: the launcher only queues each record; a tracker that fails (an unwritable place, a bad URI, a
missing library) is reported once, in `warnings`, and its later work is dropped. `fedgossip track
DIR` replays a finished run through the same path.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgossip.config import ExperimentConfig, dump_toml
from fedgossip.reports.records import CONFIG, SUMMARY, read_config, read_records
from fedgossip.reports.summary import build_summary, read_summary
from fedgossip.reports.tracker_backends import BACKENDS, Backend

TRACKERS = tuple(BACKENDS)
CLOSE_TIMEOUT_S = 60.0
"""Seconds the end of a command waits for its tracker to write what it was sent (then warns)."""
_FINISH = object()


@dataclass(frozen=True)
class Track:
    """Where a run is tracked: a tracker's name and its URI or folder (None: in the results folder)."""

    name: str
    uri: str | None = None

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise ValueError(f"--track must be one of {', '.join(TRACKERS)}; got {self.name!r}")

    def argv(self) -> list[str]:
        """The `fedgossip run` options that track a run here."""
        return ["--track", self.name, *(["--track-uri", self.uri] if self.uri else [])]

    def in_sweep(self, sweep: Path, run: str) -> Track:
        """Where the run `run` of the sweep folder `sweep` is tracked: MLflow runs share one store
        (SWEEP/mlruns unless given) so they compare in one experiment; TensorBoard runs get a folder
        each under one log root (SWEEP/tensorboard/RUN unless given: ROOT/RUN); W&B runs stay
        in their own results folders (or the given mode)."""
        if self.name == "mlflow":
            return Track(self.name, self.uri or (sweep / "mlruns").resolve().as_uri())
        if self.name == "tensorboard":
            return Track(self.name, str(Path(self.uri or sweep / "tensorboard") / run))
        return self


def record_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a record under 'node-N/field' ('server/field'): every int or float field but
    node, round and tick (null, booleans, lists and tables are not numbers to plot)."""
    prefix = "server" if record.get("node") == "server" else f"node-{record.get('node')}"
    return {f"{prefix}/{key}": float(value) for key, value in _numbers(record).items()}


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {
        key: value
        for key, value in record.items()
        if key not in ("node", "round", "tick")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    }


def config_params(config: ExperimentConfig) -> dict[str, str]:
    """The resolved config as flat 'section.key' -> text parameters."""
    params: dict[str, str] = {}

    def walk(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                params[f"{prefix}{key}"] = str(value)

    walk(config.to_dict(), "")
    return params


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's top-level numbers as 'summary/key' final metrics."""
    return {f"summary/{key}": float(value) for key, value in _numbers(summary).items()}


class Tracking:
    """One run sent to one tracker from a thread of its own: `record(r)` as records are written,
    `finish(summary, files)` at the end, then `close()`; `warnings` says what went wrong (once)."""

    def __init__(self, track: Track, run_dir: Path, config: ExperimentConfig) -> None:
        self.name = track.name
        self.warnings: list[str] = []
        self._nodes = config.nodes.count
        self._rounds: dict[int, list[dict[str, float]]] = defaultdict(list)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._backend: Backend | None = None
        self._start = (track.uri, run_dir, config)
        self._thread = threading.Thread(target=self._work, name=f"track-{track.name}", daemon=True)
        self._thread.start()

    def record(self, record: dict[str, Any]) -> None:
        """Queue one metrics record (never blocks, never raises)."""
        self._queue.put(dict(record))

    def finish(self, summary: dict[str, Any], files: list[Path]) -> None:
        """Queue the end of the run: its summary and the files to keep as artifacts."""
        self._queue.put((_FINISH, summary, files))

    def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> list[str]:
        """Wait (at most `timeout` s; None: until done) for the tracker to write what it was sent;
        the warnings."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._fail(TimeoutError(f"still writing after {timeout:g}s; the rest is dropped"))
        return self.warnings

    def _work(self) -> None:
        uri, run_dir, config = self._start
        self._guard(lambda: setattr(self, "_backend", BACKENDS[self.name](uri, run_dir, config)))
        self._guard(lambda: self._backend.start(config_params(config), dump_toml(config)))
        while (item := self._queue.get()) is not None:
            if isinstance(item, tuple) and item[0] is _FINISH:
                self._guard(lambda item=item: self._end(item[1], item[2]))
            else:
                self._guard(lambda item=item: self._send(item))

    def _send(self, record: dict[str, Any]) -> None:
        step = int(record.get("round", 0))
        metrics = record_metrics(record)
        if record.get("node") != "server":
            self._rounds[step].append(_numbers(record))
            if len(self._rounds[step]) == self._nodes:
                metrics.update(self._mean(step))
        self._backend.metrics(step, metrics)

    def _mean(self, step: int) -> dict[str, float]:
        """'mean/field': the mean over the nodes that recorded the round (each field over those
        that have it); the round is then done."""
        rows = self._rounds.pop(step)
        having = {
            key: [row[key] for row in rows if key in row] for key in sorted({k for r in rows for k in r})
        }
        return {f"mean/{key}": sum(values) / len(values) for key, values in having.items()}

    def _end(self, summary: dict[str, Any], files: list[Path]) -> None:
        for step in sorted(self._rounds):  # rounds some node never finished (a crash, an interrupt)
            self._backend.metrics(step, self._mean(step))
        self._backend.finish(summary_metrics(summary), str(summary.get("status", "")), files)

    def _guard(self, work) -> None:
        """Do `work` unless the tracker already failed; a failure is reported once."""
        if self.warnings:
            return
        try:
            work()
        except Exception as err:  # any failure of a tracker library: reported, never raised
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        if not self.warnings:
            self.warnings.append(f"tracking ({self.name}) failed, the run goes on without it: {err}")


def run_files(run_dir: Path) -> list[Path]:
    """What a tracker keeps of a finished run: its figures, summary.json and config.toml."""
    return [*sorted(run_dir.glob("*.png")), *(p for p in (run_dir / SUMMARY, run_dir / CONFIG) if p.exists())]


def track_run(track: Track, run_dir: Path) -> list[str]:
    """Send a finished run (its records, summary and figures) to `track` as if live; the warnings."""
    config = read_config(run_dir)
    if config is None:
        raise ValueError(f"{run_dir}: its config.toml cannot be read: cannot track it")
    tracking = Tracking(track, run_dir, config)
    for record in read_records(run_dir):
        tracking.record(record)
    tracking.finish(read_summary(run_dir) or build_summary(run_dir), run_files(run_dir))
    return tracking.close(timeout=None)  # an export has nothing else to do (Ctrl-C stops it)
