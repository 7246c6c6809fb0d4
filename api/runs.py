"""Run an experiment from Python, blocking: the CLI's own `run` (the same function, the same
results folder and progress display, which rich renders in a notebook too). Ctrl-C (a notebook's
interrupt) stops every process of the run as in a terminal, then raises KeyboardInterrupt; the
caller's signal handlers are put back, so the next cell can be interrupted again."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from fedgossip.api.configs import Overrides, Source, as_config, bad_input
from fedgossip.api.results import Results
from fedgossip.base.signals import SIGNALS
from fedgossip.launcher.experiments.run import execute
from fedgossip.reports.tracking import Track


def run(
    source: Source = None,
    overrides: Overrides = (),
    *,
    out: str | Path | None = None,
    console: Console | None = None,
    track: str | None = None,
    track_uri: str | None = None,
    **sections: Mapping[str, Any],
) -> Results:
    """Run an experiment to its end and return its results. `source`, `overrides` and `sections`
    are those of `make_config`. Raises ConfigError on bad input (the CLI's message) and
    KeyboardInterrupt after stopping the run on Ctrl-C; a run that ends partial, degraded or
    failed returns normally: its `status` says how it ended. `track` ("mlflow", "tensorboard",
    "wandb") streams the run to a tracker as `fedgossip run --track` does (`track_uri`: where)."""
    config = as_config(source, overrides, **sections)
    with restored_signals(), bad_input():
        tracked = None if track is None else Track(track, track_uri)
        folder, summary, _ = execute(config, out, console or Console(emoji=False), tracked)
    if summary.get("status") == "interrupted":
        raise KeyboardInterrupt(f"run interrupted: every node process was stopped; rounds kept in {folder}")
    return Results(folder)


@contextmanager
def restored_signals() -> Iterator[None]:
    """Put SIGINT's and SIGTERM's handlers back after a run (the launcher leaves them ignored once
    a signal stopped it: right for a process that exits, not for a notebook kernel)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the launcher changes no handler outside the main thread
        return
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)
