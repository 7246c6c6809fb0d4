"""A run started without waiting for it: `start(...)` returns a `RunHandle` to poll, wait on or
stop. The run is the CLI's own: a `fedgossip run` child process (in its own session, stopped if
this process dies) of the resolved config, so it outlives no one and a stop is the CLI's Ctrl-C
path: SIGTERM, every node stopped by its launcher, the records kept."""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgossip.api.configs import ConfigError, Overrides, Source, as_config, bad_input
from fedgossip.api.results import Results
from fedgossip.config import dump_toml
from fedgossip.launcher.runs.results import default_out_dir
from fedgossip.launcher.supervision.processes import Child, child_env, python_module
from fedgossip.reports.records import METRICS
from fedgossip.reports.tracking import Track
from fedgossip.schema.lines import read_lines

STOP_GRACE_S = 30.0
"""Seconds a stopped run has to stop its nodes and write its summary before it is killed (its
watchdog then stops what is left)."""


class RunHandle:
    """A run going on in a child `fedgossip run`: `poll()`, `wait()`, `stop()`, `records_written`."""

    def __init__(self, config_toml: str, out: Path, track: Track | None = None) -> None:
        self.path = out
        self._scratch = Path(tempfile.mkdtemp(prefix="fedgossip-run-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._scratch, True)
        (self._scratch / "config.toml").write_text(config_toml)
        argv = python_module(
            "fedgossip.launcher.cli", "run", str(self._scratch / "config.toml"), "--out", str(out)
        )
        if track is not None:
            argv += track.argv()
        self._child = Child("run", argv, log_path=self._scratch / "launcher.log", env=child_env(1))
        self.pid = self._child.pid
        self.exit_code: int | None = None

    def __repr__(self) -> str:
        state = "running" if self.exit_code is None else f"exit {self.exit_code}"
        return f"RunHandle({str(self.path)!r}, {state})"

    def poll(self) -> int | None:
        """The run's exit status (the CLI's: 0, 1, 2, 3, 130, 143) once it ended, else None."""
        if self.exit_code is None and self._child.poll() is not None:
            self.exit_code = self._child.stop()
        return self.exit_code

    @property
    def records_written(self) -> int:
        """Metrics records written so far (a progress measure: nodes x rounds at the end)."""
        return len(read_lines(self.path / METRICS)) if (self.path / METRICS).exists() else 0

    def output(self) -> str:
        """What the launcher printed so far (its progress, table and errors)."""
        return (self._scratch / "launcher.log").read_text(errors="replace")

    def wait(self, timeout: float | None = None) -> Results:
        """Wait for the end of the run and return its results; TimeoutError after `timeout` seconds
        (the run goes on). A run that recorded nothing raises: ConfigError with the CLI's message
        for bad input (exit 2), else RuntimeError with the launcher's last output."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"the run into {self.path} is still going after {timeout}s")
            time.sleep(0.1)
        return self._results()

    def stop(self, grace: float = STOP_GRACE_S) -> Results | None:
        """Stop the run as Ctrl-C does (every node process stopped, finished rounds kept) and wait
        for its launcher to exit; the results so far (None if the run recorded nothing)."""
        if self.exit_code is None:
            self.exit_code = self._child.stop(grace)
        return Results(self.path) if (self.path / METRICS).exists() else None

    def _results(self) -> Results:
        if (self.path / METRICS).exists():
            return Results(self.path)
        lines = self.output().strip().splitlines()
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        if self.exit_code == 2 and errors:
            raise ConfigError(errors[-1])
        raise RuntimeError(
            f"the run into {self.path} ended with exit {self.exit_code}: " + "\n".join(lines[-5:])
        )


def start(
    source: Source = None,
    overrides: Overrides = (),
    *,
    out: str | Path | None = None,
    track: str | None = None,
    track_uri: str | None = None,
    **sections: Mapping[str, Any],
) -> RunHandle:
    """Start a run and return at once. The config (and tracker) is checked here: ConfigError."""
    config = as_config(source, overrides, **sections)
    with bad_input():
        tracked = None if track is None else Track(track, track_uri)
    folder = (Path(out) if out is not None else default_out_dir(config)).resolve()
    return RunHandle(dump_toml(config), folder, tracked)
