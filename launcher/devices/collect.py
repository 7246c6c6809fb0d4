"""`fedgossip collect DIR... --out RESULTS`: the device folders of a deployment (copied back from the
devices after the run) into one results folder, as a launched run writes it: config.toml,
metrics.jsonl, events.jsonl, logs/, nodes/, summary.json and the figures, so `fedgossip report`,
`compare` and `summary` read it as any run. devices.json says where each device's records came
from and the clock offset applied to them.

Clocks. Every device counts `time_s` on its own clock from its own start (its node config's
`run_start` is 0), so no two clocks are ever compared. Devices are started by hand at different
moments, though, and a peer started early waits in round 1 for its neighbours. The gossip records
are therefore aligned on round 1, whose end the sync barrier makes (nearly) simultaneous on every
device: a device's times are shifted so that its round-1 record has the smallest round-1 time of
all devices, that of the device started last, whose time is its own start-up and first round, as
in a launched run where all start together. A device without a round-1 record keeps its own times.
Flower runs need no alignment: the ServerApp on the SuperLink makes every record on one clock.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from fedgossip.config import ExperimentConfig, load_config
from fedgossip.launcher.devices.bundle import NODE_CONFIG
from fedgossip.launcher.devices.folders import MANIFEST, METRICS
from fedgossip.launcher.runs.outcome import Outcome
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.schema.events import PEER_EVENTS, RECORD, SCENARIO, check_event
from fedgossip.schema.lines import read_lines

DEVICES = "devices.json"
LOGS = {"peer": "peer.log", "superlink": "superlink.log", "supernode": "supernode.log"}


@dataclass(frozen=True)
class DeviceFolder:
    """One device's folder as copied back: its manifest (device.json) and node config."""

    path: Path
    name: str
    role: str
    node: int | None
    bundle: str
    config: ExperimentConfig

    @property
    def log(self) -> Path:
        return self.path / LOGS[self.role]

    def events(self) -> list[dict[str, Any]]:
        """What the device recorded (its metrics.jsonl), one event per line; none if it has none."""
        path = self.path / METRICS
        return read_lines(path) if path.exists() else []


def find_devices(dirs: Sequence[Path]) -> list[DeviceFolder]:
    """The device folders among `dirs` (each a device folder, or a folder of them, e.g. a whole
    bundle copied back), checked to be of one bundle; ValueError naming the folder at fault."""
    folders: list[Path] = []
    for given in dirs:
        if (given / MANIFEST).is_file():
            folders.append(given)
        elif given.is_dir():
            inside = sorted(p for p in given.iterdir() if (p / MANIFEST).is_file())
            if not inside:
                raise ValueError(f"{given}: no device folder ({MANIFEST}) in it")
            folders += inside
        else:
            raise ValueError(f"{given}: no such folder")
    devices = [_device(path) for path in folders]
    first = devices[0]
    seen: dict[str, Path] = {}
    for device in devices:
        if device.bundle != first.bundle:
            raise ValueError(f"{device.path}: from another bundle than {first.path} ({MANIFEST}'s bundle)")
        if device.config != first.config:
            raise ValueError(f"{device.path}: its experiment config differs from {first.path}'s")
        if device.name in seen:
            raise ValueError(f"{device.path}: device {device.name} is also {seen[device.name]}")
        seen[device.name] = device.path
    return devices


def _device(path: Path) -> DeviceFolder:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        name, role, node, bundle = (manifest[k] for k in ("name", "role", "node", "bundle"))
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{path / MANIFEST}: not a device manifest written by `fedgossip bundle`") from None
    if role not in LOGS:
        raise ValueError(f"{path / MANIFEST}: unknown role {role!r}")
    config = load_config(path / NODE_CONFIG)
    return DeviceFolder(path, name, role, node, bundle, config.replace(peer=None))


def clock_offsets(records: dict[int, list[dict[str, Any]]]) -> dict[int, float]:
    """Per node, the seconds added to its records' `time_s` (see the module docstring): its round-1
    record is moved to the earliest round-1 time of all nodes; 0 for a node without one."""
    first = {
        node: min(r["time_s"] for r in own if r["round"] == 1)
        for node, own in records.items()
        if any(r["round"] == 1 for r in own)
    }
    earliest = min(first.values(), default=0.0)
    return {node: round(earliest - first[node], 4) if node in first else 0.0 for node in records}


def collect(dirs: Sequence[Path], out: Path, console: Console) -> tuple[dict, str]:
    """Gather the device folders `dirs` into the results folder `out`; its summary and status."""
    from fedgossip.launcher.experiments.run import finish_run

    devices = find_devices(dirs)
    config = devices[0].config
    flower = config.experiment.mode == "flower"
    results = ResultsFolder(out, config)
    try:
        if flower:
            from fedgossip.launcher.devices.flower_collect import gather_flower

            outcome, about = gather_flower(config, devices, results)
        else:
            outcome, about = gather_gossip(config, devices, results)
        for device in devices:
            if device.log.exists():
                shutil.copyfile(device.log, results.logs / f"{device.name}.log")
            shutil.copyfile(device.path / NODE_CONFIG, results.nodes / f"{device.name}.toml")
        results.write_json(DEVICES, about)
        summary = finish_run(config, results, out, outcome, console)
    except BaseException:  # a full disk, Ctrl-C: it holds only copies, and a rerun needs the folder free
        results.close()
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        results.close()
    return summary, outcome.status


def gather_gossip(
    config: ExperimentConfig, devices: list[DeviceFolder], results: ResultsFolder
) -> tuple[Outcome, dict[str, Any]]:
    """The peers' records and scenario events, clocks aligned, into `results`; the outcome as the
    launcher judges a run (dead nodes, rounds without a merge) and devices.json's content."""
    count, rounds = config.nodes.count, config.experiment.rounds
    peers = {device.node: device for device in devices if device.role == "peer"}
    streams = {node: [e for e in map(_peer_event, device.events()) if e] for node, device in peers.items()}
    records = {node: [e["record"] for e in events if e["type"] == RECORD] for node, events in streams.items()}
    offsets = clock_offsets(records)
    rows, scenario = [], []
    outcome = Outcome()
    done_rounds = dict.fromkeys(range(count), 0)
    for node, events in streams.items():
        for event in events:
            if event["type"] == RECORD:
                record = {**event["record"], "time_s": round(event["record"]["time_s"] + offsets[node], 4)}
                rows.append(record)
                done_rounds[node] = max(done_rounds[node], record["round"])
                outcome.count_merge(node, record)
            elif event["type"] == SCENARIO:
                scenario.append({**event, "time_s": round(event["time_s"] + offsets[node], 4)})
            elif event["type"] == "error":
                outcome.errors.append(f"node {node}: {event.get('error')}")
    for record in sorted(rows, key=lambda r: (r["time_s"], r["node"], r["round"])):
        results.append(record)
    for event in sorted(scenario, key=lambda e: e["time_s"]):
        results.event(event)
    for node in range(count):
        finished = any(e["type"] == "done" for e in streams.get(node, []))
        if node not in peers:
            outcome.errors.append(f"node {node}: no device folder collected")
        elif done_rounds[node] < rounds or not finished:
            if not any(e.startswith(f"node {node}:") for e in outcome.errors):
                outcome.errors.append(f"node {node} stopped after round {done_rounds[node]} (see its log)")
        else:
            continue
        outcome.dead_nodes.append(node)
    outcome.wall_time_s = max([r["time_s"] for r in rows] + [e["time_s"] for e in scenario], default=0.0)
    if outcome.dead_nodes:
        outcome.status = "failed" if len(outcome.dead_nodes) == count else "partial"
    outcome.judge_merges(done_rounds, config.gossip.degraded_share)
    about = {
        "alignment": "round 1",
        "devices": {
            device.name: {
                "folder": str(device.path.resolve()),
                "node": node,
                "records": len(records[node]),
                "clock_offset_s": offsets[node],
            }
            for node, device in sorted(peers.items())
        },
    }
    return outcome, about


def _peer_event(line: dict[str, Any]) -> dict[str, Any] | None:
    return check_event(line, PEER_EVENTS)
