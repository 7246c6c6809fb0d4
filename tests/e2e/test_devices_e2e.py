"""A deployment from bundles, as a user makes it: `fedgossip bundle` for 4 hosts, each device started
with its own start.sh on its own address (mutual TLS between them), node 0 long before the others;
then `fedgossip collect` makes a results folder whose summary equals one recomputed here from the
devices' own metrics files (json and the standard library), clocks aligned on round 1 by hand.

The 4 hosts are 4 network namespaces on a bridge (the emulated hosts of launcher/supervision/
namespaces.py) where the machine can make them (root, iproute2); elsewhere 4 loopback addresses
(127.0.0.2-5), which the namespaced variant makes redundant where it runs (one run per machine)."""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedgossip.base.polling import poll_until
from fedgossip.base.ports import free_ports
from fedgossip.config import load_config
from fedgossip.launcher.cli import app
from fedgossip.launcher.supervision.namespaces import EmulatedHosts, unavailable_reason
from fedgossip.launcher.supervision.processes import Child, child_env
from fedgossip.reports import compare
from tests.support import wait_exit
from tests.support.namespaces import needs_namespaces

NODES, ROUNDS, TARGET = 4, 3, 0.5
SETTINGS = [
    f"nodes.count={NODES}",
    f"experiment.rounds={ROUNDS}",
    "experiment.round_timeout=30",
    f"experiment.target_accuracy={TARGET}",
    "topology.kind=ring",
    "task.model=linear",
]
CAN_NAMESPACE = unavailable_reason() is None
FEDGOSSIP = str(Path(sys.executable).parent / "fedgossip")  # the devices' `fedgossip` command


def cli(*args: str):
    """`fedgossip ARGS` in this process (the devices are the processes that matter here)."""
    return CliRunner().invoke(app, list(args))


@contextlib.contextmanager
def device_hosts(network: str) -> Iterator[tuple[dict[int, str], Callable[[int, list[str]], list[str]]]]:
    """The devices' addresses and how a command runs on device N: in emulated hosts, or on loopback
    addresses of this machine."""
    if network == "namespaces":
        with EmulatedHosts(NODES) as hosts:
            yield dict(enumerate(hosts.addresses)), hosts.command
    else:
        yield {node: f"127.0.0.{node + 2}" for node in range(NODES)}, lambda node, argv: argv


def write_inventory(path: Path, hosts: dict[int, str], network: str) -> Path:
    """HOSTS.toml: node N on hosts[N]; port 7000 on a host of its own, else a free port there."""
    lines = []
    for node, host in hosts.items():
        port = 7000 if network == "namespaces" else free_ports(1, host)[0]
        lines += [f"[nodes.{node}]", f'host = "{host}"', f"port = {port}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def device_events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def expected_summary(bundle: Path) -> dict:
    """The summary's figures straight from the devices' files: each device's times moved so that
    its round-1 record has the earliest round-1 time of all."""
    records = {}
    for node in range(NODES):
        events = device_events(bundle / f"node-{node}")
        records[node] = [e["record"] for e in events if e["type"] == "record"]
    first = {node: next(r["time_s"] for r in own if r["round"] == 1) for node, own in records.items()}
    earliest = min(first.values())
    aligned = [
        {**r, "time_s": round(r["time_s"] + round(earliest - first[node], 4), 4)}
        for node, own in records.items()
        for r in own
    ]
    last = {node: max(own, key=lambda r: r["round"]) for node, own in records.items()}
    final = [r["test_accuracy"] for r in last.values()]
    by_round = {k: [r for r in aligned if r["round"] == k] for k in range(1, ROUNDS + 1)}
    means = {k: statistics.fmean(r["test_accuracy"] for r in rs) for k, rs in by_round.items()}
    reached = next(k for k, mean in means.items() if mean >= TARGET)
    return {
        "status": "complete",
        "dead_nodes": [],
        "rounds_completed": ROUNDS,
        "final_mean_accuracy": statistics.fmean(final),
        "final_min_accuracy": min(final),
        "final_max_accuracy": max(final),
        "final_accuracy_by_node": {str(n): r["test_accuracy"] for n, r in last.items()},
        "bytes_sent": sum(r["bytes_sent"] for r in aligned),
        "bytes_received": sum(r["bytes_received"] for r in aligned),
        "rounds_to_target": reached,
        "seconds_to_target": max(r["time_s"] for r in by_round[reached]),
        "wall_time_s": round(max(r["time_s"] for r in aligned), 3),  # as the launcher rounds it
    }, {f"node-{n}": round(earliest - first[n], 4) for n in range(NODES)}


def started_device(folder: Path, tmp_path: Path, on_host: Callable[[int, list[str]], list[str]]) -> Child:
    """The device's own start script, run on its host as its systemd unit would (its folder, its
    command)."""
    env = {**child_env(1), "FEDGOSSIP": FEDGOSSIP}
    node = int(folder.name.split("-")[1])
    argv = on_host(node, ["/bin/sh", str(folder / "start.sh")])
    return Child(folder.name, argv, log_path=tmp_path / f"{folder.name}.out", env=env)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "network",
    [
        pytest.param("namespaces", marks=needs_namespaces),
        pytest.param(
            "loopback", marks=pytest.mark.skipif(CAN_NAMESPACE, reason="the namespaced variant runs")
        ),
    ],
)
def test_four_bundled_devices_complete_a_run_and_collect_makes_its_results_folder(tmp_path, network):
    bundle, results = tmp_path / "bundle", tmp_path / "results"
    devices: list[Child] = []
    with device_hosts(network) as (hosts, on_host):
        inventory = write_inventory(tmp_path / "hosts.toml", hosts, network)
        made = cli(
            "bundle", "--hosts", str(inventory), "--out", str(bundle), *[f"--set={s}" for s in SETTINGS]
        )
        assert made.exit_code == 0, made.output
        try:
            devices.append(started_device(bundle / "node-0", tmp_path, on_host))
            metrics = bundle / "node-0" / "metrics.jsonl"
            poll_until(
                lambda: metrics.exists() and '"ready"' in metrics.read_text(), 120, 0.1, "node 0 ready"
            )
            devices += [started_device(bundle / f"node-{n}", tmp_path, on_host) for n in range(1, NODES)]
            for device in devices:
                assert wait_exit(device, 180) == 0, device.log_tail(10)
        finally:
            for device in devices:
                device.stop()
    for node in range(NODES):  # every link carried models, over the hosts' addresses under mutual TLS
        events = device_events(bundle / f"node-{node}")
        heard = {n for e in events if e["type"] == "record" for n in e["record"]["neighbours_heard"]}
        assert heard == {(node - 1) % NODES, (node + 1) % NODES}
        assert (
            load_config(bundle / f"node-{node}" / "node.toml").peer.listen.rpartition(":")[0] == hosts[node]
        )
    collected = cli("collect", str(bundle), "--out", str(results))
    assert collected.exit_code == 0, collected.output
    summary = json.loads((results / "summary.json").read_text())
    expected, offsets = expected_summary(bundle)
    for key, value in expected.items():
        got = summary[key]
        same = got == value if not isinstance(value, float) else abs(got - value) <= 1e-9 * max(1, abs(value))
        assert same, (key, got, value)
    about = json.loads((results / "devices.json").read_text())
    assert {name: d["clock_offset_s"] for name, d in about["devices"].items()} == offsets
    assert offsets["node-0"] < -0.5  # node 0 waited in round 1 for the others to start
    for name in ("config.toml", "metrics.jsonl", "accuracy.png", "logs/node-2.log", "nodes/node-2.toml"):
        assert (results / name).exists(), name
    row = compare([results], tmp_path / "compare").rows[0]
    assert row["final_mean_accuracy"]["mean"] == pytest.approx(expected["final_mean_accuracy"])
    again = cli("collect", str(bundle), "--out", str(results))
    assert again.exit_code == 2 and "already holds a run" in " ".join(again.output.split())
    restarted = started_device(bundle / "node-1", tmp_path, lambda node, argv: argv)
    assert wait_exit(restarted, 30) == 2  # a device's folder holds one run: its start script says so
