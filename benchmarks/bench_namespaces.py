"""Emulated hosts (launcher.network = "namespaces", root and iproute2 needed): what they cost.

    python benchmarks/bench_namespaces.py                          # both parts
    python benchmarks/bench_namespaces.py --only hosts --counts 16 64 --repeats 3
    python benchmarks/bench_namespaces.py --only layers --nodes 4 --rounds 20 --loss 0.1

- hosts: seconds to create N hosts (namespaces, veths, bridge, addresses), to shape every
  direction between them (the kernel layer, with a loss and a rate: N x (N - 1) classes) and to
  remove them all (target: create + remove under 3 s for 16 hosts);
- layers: one gossip scenario (scenario.loss, bandwidth_mbps, delay_ms)
  run in emulated hosts with scenario.network_layer = "sender", then "kernel": wall time and CPU
  seconds of the launcher and its processes (user + system, getrusage of the waited children; the
  kernel's own softirq work on the packets is not in it).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedgossip.config import ScenarioSection
from fedgossip.launcher.network.shaping import link_shapes, shape_links
from fedgossip.launcher.supervision.namespaces import EmulatedHosts, unavailable_reason
from fedgossip.launcher.supervision.processes import child_env

TARGET_S = {16: 3.0}  # create + remove


def time_hosts(count: int) -> tuple[float, float, float]:
    """Seconds to create `count` hosts, to shape all their links, to remove them."""
    started = time.perf_counter()
    hosts = EmulatedHosts(count)
    try:
        made = time.perf_counter()
        shape_links(hosts, link_shapes(ScenarioSection(loss=0.01, bandwidth_mbps=100), count))
        shaped = time.perf_counter()
    finally:
        hosts.close()
    removed = time.perf_counter()
    return made - started, shaped - made, removed - shaped


def bench_hosts(counts: list[int], repeats: int) -> None:
    print(f"{'hosts':>6} {'create s':>9} {'shape s':>8} {'remove s':>9} {'create+remove':>14}  target")
    for count in counts:
        runs = [time_hosts(count) for _ in range(repeats)]
        create, shape, remove = (statistics.median(column) for column in zip(*runs, strict=True))
        target = TARGET_S.get(count)
        verdict = "" if target is None else f"< {target:g} s {'PASS' if create + remove < target else 'FAIL'}"
        print(f"{count:>6} {create:>9.3f} {shape:>8.3f} {remove:>9.3f} {create + remove:>14.3f}  {verdict}")


def run_layer(out: Path, settings: list[str]) -> tuple[float, float, dict]:
    """`fedgossip run` with `settings`: its wall seconds, CPU seconds (it and its processes) and summary."""
    argv = [sys.executable, "-m", "fedgossip.launcher.cli", "run", "--out", str(out)]
    for setting in settings:
        argv += ["--set", setting]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=child_env(1))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads((out / "summary.json").read_text())


def bench_layers(nodes: int, rounds: int, loss: float, delay_ms: float, bandwidth: float) -> None:
    scenario = [f"scenario.loss={loss}", f"scenario.bandwidth_mbps={bandwidth}"]
    if delay_ms:  # netem, or the run's delay process where the kernel has none (launcher/network/delays.py)
        scenario.append(f"scenario.delay_ms={delay_ms}")
    base = [
        f"nodes.count={nodes}",
        f"experiment.rounds={rounds}",
        "task.model=linear",
        "launcher.network=namespaces",
        "security.insecure=true",
        *scenario,
    ]
    print(f"scenario: {', '.join(scenario)}; {nodes} peers in emulated hosts, {rounds} rounds")
    print(f"{'layer':>7} {'wall s':>8} {'run s':>8} {'CPU s':>8} {'final acc':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for layer in ("sender", "kernel"):
            wall, cpu, summary = run_layer(Path(tmp) / layer, [*base, f"scenario.network_layer={layer}"])
            accuracy = summary.get("final_mean_accuracy")
            print(f"{layer:>7} {wall:>8.1f} {summary['wall_time_s']:>8.1f} {cpu:>8.1f} {accuracy:>10.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("hosts", "layers"))
    parser.add_argument("--counts", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--loss", type=float, default=0.1)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mbps", type=float, default=50.0)
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"emulated hosts cannot run here: {reason}", file=sys.stderr)
        return 2
    if args.only in (None, "hosts"):
        bench_hosts(args.counts, args.repeats)
    if args.only in (None, "layers"):
        bench_layers(args.nodes, args.rounds, args.loss, args.delay_ms, args.bandwidth_mbps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
