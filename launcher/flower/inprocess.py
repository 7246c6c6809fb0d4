"""The "inprocess" Flower engine: Strategy.start() with an in-process Grid in the launcher's own
process (no ports, no Ray); Flower's log goes to logs/inprocess.log, not the console."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fedgossip.config import ExperimentConfig

if TYPE_CHECKING:
    from fedgossip.launcher.flower.launch import EventSink
    from fedgossip.launcher.runs.progress import RoundProgress
    from fedgossip.launcher.runs.results import ResultsFolder


def run_inprocess(
    config: ExperimentConfig, results: ResultsFolder, sink: EventSink, bar: RoundProgress, started: float
) -> None:
    """Run every round in this process; the final model goes to flower/final-model.npz, Flower's
    log to logs/inprocess.log. A failure of the ServerApp marks `sink` failed (with the error in
    the outcome), never raises. (`bar` moves with the records `sink` gets.)"""
    from fedgossip.base import flower_protocol as p
    from fedgossip.client.flower_app import app as client_app
    from fedgossip.config import dump_toml
    from fedgossip.server.federation import run_federation
    from fedgossip.server.local_grid import LocalGrid

    grid = LocalGrid(
        client_app, config.nodes.count, {p.CONFIG_TOML: dump_toml(config)}, id_seed=config.experiment.seed
    )
    flwr_log = logging.getLogger("flwr")
    saved = flwr_log.handlers[:], flwr_log.propagate
    handler = logging.FileHandler(results.logs / "inprocess.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    flwr_log.handlers, flwr_log.propagate = [handler], False  # Flower's log to logs/, not the console
    try:
        arrays = run_federation(grid, config, sink, started)
        if arrays is not None:
            p.save_model(
                results.path / "flower" / "final-model.npz",
                {name: array.numpy() for name, array in arrays.items()},
            )
    except Exception as err:  # already emitted as an "error" event by run_federation
        sink.failed = True
        logging.getLogger("fedgossip.launcher").debug("in-process run failed", exc_info=True)
        if not any(e.startswith("ServerApp:") for e in sink.outcome.errors):
            sink.outcome.errors.append(f"ServerApp: {type(err).__name__}: {err}")
    finally:
        flwr_log.handlers, flwr_log.propagate = saved
        handler.close()
