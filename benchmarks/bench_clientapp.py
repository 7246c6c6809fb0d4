"""What a Flower ClientApp message costs, with the process's kept learners (`client/flower_learners`)
against a learner built for every message (the ClientApp before the cache: the cache emptied
before each message), side by side in one process.

Each case is a whole in-process federation (`LocalGrid`, no Ray, no SuperLink), run alternately
kept / built per message --repeats times; printed: the median ClientApp time per train and per
evaluate message, the federation's wall, the ratio, and the load average beside each. The replies
of both ways are compared bit for bit (they must be equal).

With --command: what one `flwr-clientapp` process costs on the deployment engine, from its exec
(the run's command: `clientapp_shim`) to its first request to the SuperNode (PullTaskInput, here
to a socket that accepts it and answers nothing), and the CPU seconds it used by then: the
SuperNode's fork server's child (digits MLP preload) against a fresh process (the shim execs the
plain command), alternately --repeats times; medians.

    python benchmarks/bench_clientapp.py                 # 100 synthetic-MLP clients, and fair-flower
    python benchmarks/bench_clientapp.py --clients 30 --repeats 5
    python benchmarks/bench_clientapp.py --command --repeats 10
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from fedgossip.base import flower_protocol as p
from fedgossip.base.ports import LOOPBACK
from fedgossip.client import flower_learners
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml, load_config
from fedgossip.launcher.flower import clientapp_shim
from fedgossip.launcher.flower.clientapp_forkserver import clientapp_preload, serving
from fedgossip.launcher.supervision.processes import child_env
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


def command_start(forked: bool, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from the exec of the run's `flwr-clientapp` to its first request, and the CPU
    seconds of the process that runs the ClientApp by then (the forked child, or the fresh one)."""
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(120)
        address = f"{LOOPBACK}:{listener.getsockname()[1]}"
        argv = [sys.executable, "-S", str(Path(clientapp_shim.__file__).resolve())]
        argv += ["--token", "t", "--insecure", "--runtime-api-address", address]
        if not forked:
            env = {k: v for k, v in env.items() if k != clientapp_shim.ADDRESS_ENV}
        started = time.perf_counter()
        shim = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        try:
            connection, _ = listener.accept()
            seconds = time.perf_counter() - started
            runner = psutil.Process(shim.pid)
            runner = next(iter(_forked_children(shim.pid)), runner) if forked else runner
            times = runner.cpu_times()
            connection.close()
        finally:
            shim.send_signal(signal.SIGTERM)
            shim.wait(60)
    return seconds, times.user + times.system


def _forked_children(shim: int) -> list[psutil.Process]:
    """The fork server's child serving `shim` (the one started last)."""
    servers = [p for p in psutil.Process().children() if "clientapp_forkserver" in " ".join(p.cmdline())]
    return sorted((c for s in servers for c in s.children()), key=lambda c: -c.create_time())


def bench_command(repeats: int) -> None:
    """The exec-to-first-request time and CPU of a forked ClientApp and of a fresh one."""
    config = load_config(None, ["experiment.mode=flower", "task.dataset=digits", "task.model=mlp"])
    env = child_env(1)
    children: list = []
    with (
        tempfile.TemporaryDirectory() as logs,
        serving(clientapp_preload(config), children, Path(logs), env) as forks,
    ):
        try:
            env.update(forks)
            address = forks[clientapp_shim.ADDRESS_ENV]
            deadline = time.monotonic() + 120
            while (server := clientapp_shim.connect(address)) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if server is None:
                raise SystemExit("the fork server did not listen within 120 s")
            server.close()
            print(f"\nflwr-clientapp, exec to its first request (digits MLP), {repeats} each; load {_load()}")
            runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for repeat in range(repeats):
                for forked in (repeat % 2 == 0, repeat % 2 == 1):
                    runs[forked].append(command_start(forked, env))
        finally:
            for child in children:
                child.stop()
    for forked, label in ((False, "fresh process"), (True, "fork server child")):
        wall = statistics.median(x[0] for x in runs[forked])
        cpu = statistics.median(x[1] for x in runs[forked])
        print(f"  {label:18s} {wall:6.3f} s to the first request, {cpu:6.3f} CPU-s")
    print(f"  load after: {_load()}")


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=4, help="federations (or commands) of each way")
    parser.add_argument("--command", action="store_true", help="the flwr-clientapp command's start only")
    args = parser.parse_args()
    if args.command:
        bench_command(args.repeats)
        return
    bench("simulation config (synthetic MLP)", simulation_case(args.clients), args.repeats)
    bench("examples/fair-flower.toml", load_config("examples/fair-flower.toml"), args.repeats)


if __name__ == "__main__":
    main()
