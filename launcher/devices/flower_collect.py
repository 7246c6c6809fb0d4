"""Collect a Flower deployment: the ServerApp's events on the SuperLink device (flower/records.jsonl)
become records, scenario events and the outcome through the launcher's own `EventSink`, as in a
launched deployment run. Every record was made on the SuperLink's clock: nothing to align."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console

from fedgossip.config import ExperimentConfig
from fedgossip.launcher.devices.flower_bundle import RECORDS
from fedgossip.launcher.flower.launch import EventSink
from fedgossip.launcher.flower.outcome import FlowerOutcome
from fedgossip.launcher.runs.progress import RoundProgress
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.schema.lines import read_lines

if TYPE_CHECKING:
    from fedgossip.launcher.devices.collect import DeviceFolder


def gather_flower(
    config: ExperimentConfig, devices: list[DeviceFolder], results: ResultsFolder
) -> tuple[FlowerOutcome, dict[str, Any]]:
    """The SuperLink device's records into `results`; the outcome and devices.json's content."""
    superlinks = [device for device in devices if device.role == "superlink"]
    if not superlinks:
        raise ValueError("a Flower deployment's records are on its SuperLink: give the superlink folder")
    superlink = superlinks[0]
    outcome = FlowerOutcome()
    quiet = Console(quiet=True)
    bar = RoundProgress(quiet, config.nodes.count, config.experiment.rounds, config.experiment.name)
    sink = EventSink(results, bar, outcome, 0.0)
    path = superlink.path / RECORDS
    events = read_lines(path) if path.exists() else []
    for event in events:
        sink(event)
    outcome.startup_s = None  # the devices started by hand: no launcher saw them start
    outcome.wall_time_s = float(sink.info.get("serverapp_wall_time_s") or 0.0)
    outcome.flower = {"engine": "devices", **sink.info}
    outcome.conclude(done=sink.done, failed=sink.failed)
    about = {
        "alignment": "none (one clock: the SuperLink's)",
        "devices": {
            device.name: {"folder": str(device.path.resolve()), "node": device.node, "role": device.role}
            for device in devices
        },
    }
    return outcome, about
