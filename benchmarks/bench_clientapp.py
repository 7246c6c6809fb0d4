"""What a Flower ClientApp message costs, with the process's kept learners (`client/flower_learners`)
against a learner built for every message (the ClientApp before the cache: the cache emptied
before each message), side by side in one process.

Each case is a whole in-process federation (`LocalGrid`, no Ray, no SuperLink), run alternately
kept / built per message --repeats times; printed: the median ClientApp time per train and per
evaluate message, the federation's wall, the ratio, and the load average beside each. The replies
of both ways are compared bit for bit (they must be equal).

    python benchmarks/bench_clientapp.py                 # 100 synthetic-MLP clients, and fair-flower
    python benchmarks/bench_clientapp.py --clients 30 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from fedgossip.base import flower_protocol as p
from fedgossip.client import flower_learners
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml, load_config
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid


def simulation_case(clients: int):
    """bench_flower's simulation config (synthetic MLP, IID) on `clients` clients, 3 rounds."""
    return load_config(
        None,
        [
            "experiment.mode=flower",
            "flower.engine=inprocess",
            "strategy.name=average",
            "task.dataset=synthetic",
            "task.model=mlp",
            "task.partition=iid",
            "task.batch_size=32",
            f"task.synthetic_samples={max(2000, 25 * clients)}",
            f"nodes.count={clients}",
            "experiment.rounds=3",
        ],
    )


def federation(config, fresh: bool) -> tuple[dict[str, list[float]], float, list[bytes]]:
    """Seconds of every ClientApp message by type, the federation's wall and the replies' arrays."""
    seconds: dict[str, list[float]] = {}
    replies: list[bytes] = []

    def app(message, context):
        if fresh:
            flower_learners.forget()
        started = time.perf_counter()
        reply = client_app(message, context)
        seconds.setdefault(message.metadata.message_type, []).append(time.perf_counter() - started)
        arrays = reply.content.array_records.get(p.ARRAYS)
        replies.append(b"".join(a.numpy().tobytes() for a in arrays.values()) if arrays else b"")
        return reply

    flower_learners.forget()
    grid = LocalGrid(app, config.nodes.count, {p.CONFIG_TOML: dump_toml(config)})
    started = time.perf_counter()
    run_federation(grid, config, lambda event: None)
    return seconds, time.perf_counter() - started, replies


def bench(name: str, config, repeats: int) -> None:
    """Both ways alternately, `repeats` times each; medians."""
    print(f"\n{name}: {config.nodes.count} clients, {config.experiment.rounds} rounds; load {_load()}")
    runs: dict[bool, list] = {True: [], False: []}
    for repeat in range(repeats):
        for fresh in (repeat % 2 == 0, repeat % 2 == 1):
            runs[fresh].append(federation(config, fresh))
            print(
                f"  {'built per message' if fresh else 'kept':18s} run {repeat + 1}: "
                f"{runs[fresh][-1][1]:.2f} s; load {_load()}",
                flush=True,
            )
    same = all(a[2] == b[2] for a, b in zip(runs[True], runs[False], strict=True))
    print(f"  replies bit-identical: {same}")
    for kind in sorted({k for run in runs[True] for k in run[0]} - {"query"}):
        built = statistics.median(x for run in runs[True] for x in run[0][kind]) * 1000
        kept = statistics.median(x for run in runs[False] for x in run[0][kind]) * 1000
        print(f"  {kind:9s} ms per message: built {built:6.2f}  kept {kept:6.2f}  ({kept / built:.2f}x)")
    walls = [statistics.median(run[1] for run in runs[fresh]) for fresh in (True, False)]
    print(
        f"  federation wall s:     built {walls[0]:6.2f}  kept {walls[1]:6.2f}  ({walls[1] / walls[0]:.2f}x)"
    )


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=4, help="federations of each way")
    args = parser.parse_args()
    bench("simulation config (synthetic MLP)", simulation_case(args.clients), args.repeats)
    bench("examples/fair-flower.toml", load_config("examples/fair-flower.toml"), args.repeats)


if __name__ == "__main__":
    main()
