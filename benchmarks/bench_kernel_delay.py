"""The kernel layer's delays against the sender layer's on one gossip scenario in emulated hosts
(root and iproute2 needed; without netem the kernel layer's delays are the delay process's).

    python benchmarks/bench_kernel_delay.py --nodes 4 --rounds 20 --delay-ms 10 --slow-ms 50 --repeats 2

Every link delayed by delay_ms, link 0-1 by slow_ms more; the two layers alternate, `repeats`
times each. Per run: wall seconds, CPU seconds of the launcher and all its processes (getrusage
of the waited children), the delay process's own CPU seconds and released packets (its log), and
for the kernel layer the delay's precision: the median push time (push_s, a request out and a
reply back: two one-way delays) of the slow link minus the others', against 2 x slow_ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_namespaces import run_layer  # this folder is no package: found on sys.path

from fedgossip.launcher.network.queue_delay import STOPPED
from fedgossip.launcher.network.shaping import has_qdisc
from fedgossip.launcher.supervision.namespaces import unavailable_reason

SLOW = {(0, 1), (1, 0)}


def delay_process_cost(out: Path) -> tuple[int, float] | None:
    """(released packets, CPU seconds) of a run's delay process, from its log; None if it had none."""
    log = out / "logs" / "delays.log"
    found = re.search(rf"{STOPPED} packets=(\d+) cpu_s=([\d.]+)", log.read_text()) if log.exists() else None
    return (int(found.group(1)), float(found.group(2))) if found else None


def push_medians(out: Path) -> tuple[float, float]:
    """Median push seconds of the slow link and of the others."""
    slow, fast = [], []
    for line in (out / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "push":
            link = (event["node"], event["details"]["to"])
            (slow if link in SLOW else fast).append(event["details"]["push_s"])
    return statistics.median(slow), statistics.median(fast)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--slow-ms", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"emulated hosts cannot run here: {reason}", file=sys.stderr)
        return 2
    base = [
        f"nodes.count={args.nodes}",
        f"experiment.rounds={args.rounds}",
        "task.model=linear",
        "launcher.network=namespaces",
        "security.insecure=true",
        f"scenario.delay_ms={args.delay_ms}",
        f'scenario.link_delay_ms={{"0-1"={args.slow_ms}}}',
    ]
    path = "netem" if has_qdisc("netem") else "netfilter queues (the delay process)"
    print(
        f"{args.nodes} peers in emulated hosts, {args.rounds} rounds, delay {args.delay_ms:g} ms, link 0-1 "
        f"+{args.slow_ms:g} ms; kernel delays by {path}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'layer':>7} {'wall s':>7} {'run s':>6} {'CPU s':>6} {'delay CPU s':>11} {'packets':>8} "
        f"{'slow-fast push ms':>17} {'expected':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for layer in ("sender", "kernel"):
                out = Path(tmp) / f"{layer}-{repeat}"
                wall, cpu, summary = run_layer(out, [*base, f"scenario.network_layer={layer}"])
                cost = delay_process_cost(out)
                packets, delay_cpu = (str(cost[0]), f"{cost[1]:.2f}") if cost else ("-", "-")
                gap = "-"
                if layer == "kernel":
                    slow, fast = push_medians(out)
                    gap = f"{(slow - fast) * 1000:.1f}"
                print(
                    f"{layer:>7} {wall:>7.1f} {summary['wall_time_s']:>6.1f} {cpu:>6.1f} {delay_cpu:>11} "
                    f"{packets:>8} {gap:>17} {2 * args.slow_ms:>8g}"
                )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
