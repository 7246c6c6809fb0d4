"""The fedgossip Flower ServerApp (component `fedgossip.server.flower_app:app`).

It reads the experiment from the run config (`fedgossip.base.flower_protocol`), runs the federation
(`fedgossip.server.federation.run_federation`) and appends every event, one JSON object per line,
flushed, to the run config's `records-path` (the launcher turns them into metrics.jsonl records).
Without a `records-path` (a bare `flwr run .`), events only go to the ServerApp's log
(`flwr log RUN_ID`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgossip.base import flower_protocol as p
from fedgossip.config.flower_run import experiment_from_run_config
from fedgossip.schema.events import Emit
from fedgossip.schema.lines import LineWriter, encode
from fedgossip.server.federation import run_federation

log = logging.getLogger("fedgossip.serverapp")

app = ServerApp()


def file_emitter(path: str | Path) -> Emit:
    """Append each event as a JSON line to `path`, written at once (and log it). Not fsynced: the
    launcher follows this file (each line is in the page cache for it as soon as written, and
    stays there if this process is killed) and writes every record to its own metrics.jsonl,
    synced; an fsync per line here put 101 of them (0.7-5 ms each on this project's machine)
    between the end of each round of 100 clients and the start of the next (session 16)."""
    writer = LineWriter(path)

    def emit(event: dict[str, Any]) -> None:
        log.info("fedgossip %s", encode(event).decode().rstrip())
        writer.write(event)

    return emit


def log_emitter(event: dict[str, Any]) -> None:
    """Events of a run without a records path: to the ServerApp's log only."""
    print(f"fedgossip {encode(event).decode()}", end="", flush=True)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment of the run config on the SuperLink's nodes."""
    path = str(context.run_config.get(p.RECORDS_PATH, "") or "")
    emit = file_emitter(path) if path else log_emitter
    try:
        config = experiment_from_run_config(context.run_config)
    except ValueError as err:
        emit({"type": "error", "error": f"bad run config: {err}"})
        raise
    run_start = float(context.run_config.get(p.RUN_START, 0.0) or 0.0) or time.time()
    arrays = run_federation(grid, config, emit, run_start)
    model_path = str(context.run_config.get(p.MODEL_PATH, "") or "")
    if model_path and arrays is not None:
        p.save_model(model_path, {name: array.numpy() for name, array in arrays.items()})
