"""Flower mode benchmarks.

0. Aggregation alone: `aggregate_train` of our `average` and of Flower's stock `FedAvg` on the same
   reply Messages (8 clients; the digits MLP and a --params model), best time of several tries
   (robust to load from other processes) and peak traced memory; the deployment numbers below are
   dominated by Flower's fixed poll delays.
1. Deployment engine (SuperLink + SuperNodes on loopback): our `average` strategy (aggregation by
   `fedgossip.strategies.weighted_average`) against Flower's stock `FedAvg` aggregation on the same
   config and seed. Reported per strategy: mean round time, wall time, the ServerApp's peak RSS
   (where aggregation runs) and the peak total RSS of every process of the run (sampled), then
   the time ratio ours/stock (target <= 1.05) and how far apart the final global models are.
   Runs alternate (stock, ours, stock, ours, ...) so load drifts hit both alike.
   With --clientapp-forks instead: stock FedAvg with the SuperNodes' ClientApp fork servers against
   every ClientApp process started afresh, on 2 and --nodes SuperNodes (time to round 1, median
   round time, wall, CPU seconds of the whole run, final models compared), alternately.
2. Simulation engine (Flower's Ray backend), --clients virtual clients (default 100; 1000 takes
   minutes on 2 cores), side by side in one run: time from launch to the end of round 1 and the
   median round time of our engine, of a bare `run_simulation` app (bare_simulation.py: stock
   FedAvg, no training) and of our in-process engine (our training and evaluation without Ray).
   The previous path (SuperLink + `flwr run` + SuperExec) was timed beside them by the
   --old-path option of commit 271d732, before that path was removed.

    python benchmarks/bench_flower.py                     # both parts, 100 simulated clients
    python benchmarks/bench_flower.py --clients 1000 --skip-deployment
    python benchmarks/bench_flower.py --repeats 3 --skip-simulation --skip-aggregation
    python benchmarks/bench_flower.py --skip-aggregation --skip-deployment --baseline /tmp/base
        # with /tmp/base/fedgossip holding an older commit (git archive C | tar -x -C /tmp/base/fedgossip)
    python benchmarks/bench_flower.py --clientapp-forks --repeats 3 --skip-simulation --skip-aggregation

Every run is a `fedgossip run` subprocess into --out (default: a temporary folder); each stops
every process it started. This tree and --baseline's are byte-compiled first, as installed
packages are (`bytecode.py`).
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bytecode import compile_trees

from fedgossip.base.flower_protocol import RUN_START, load_model
from fedgossip.launcher.flower.processes import FORKS_ENV
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.launcher.supervision.proctree import descendants, stop_leaves_first
from fedgossip.reports import read_records

DEPLOYMENT = [
    "experiment.mode=flower",
    "flower.engine=deployment",
    "task.dataset=digits",
    "task.model=mlp",
    "experiment.seed=0",
    "flower.fraction_evaluate=0.0",
]
SIMULATION = [
    "experiment.mode=flower",
    "flower.engine=simulation",
    "strategy.name=average",
    "task.dataset=synthetic",
    "task.model=mlp",
    "task.partition=iid",
    "task.batch_size=32",
    "flower.fraction_evaluate=0.0",
    "flower.round_timeout=1800",
    "flower.startup_timeout=600",
]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeMemory(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every `interval` seconds, and
    the CPU seconds of each (the last sample of each process: what it used after that is missed)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self.cpu: dict[int, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            pids = [self.pid, *(p.pid for p in descendants([self.pid]))]
            self.peak = max(self.peak, sum(rss_mb(pid) for pid in pids))
            for pid in pids:
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu_s(pid))

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the tree, as sampled."""
        return sum(self.cpu.values())


def fedgossip_run(
    out: Path,
    overrides: list[str],
    timeout: float,
    source: Path | None = None,
    argv: list[str] | None = None,
    env: dict | None = None,
) -> dict:
    """One `fedgossip run` in a subprocess (of the fedgossip package in `source`, if given: a folder
    holding a `fedgossip` package, first on PYTHONPATH; or `argv`, with `env` added to its
    environment); its summary, the sampled peak memory and the CPU seconds of it and every process
    it waited for."""
    if argv is None:
        argv = [sys.executable, "-m", "fedgossip.launcher.cli", "run", "--out", str(out)]
        for item in overrides:
            argv += ["--set", item]
    env = child_env(1, env)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source.resolve()), env["PYTHONPATH"]])
    started = time.time()
    cpu = _children_cpu_s()
    with open(out.with_suffix(".log"), "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        memory = TreeMemory(process.pid)
        memory.start()
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(30)
            raise RuntimeError(f"{out.name}: no result within {timeout:.0f}s") from None
        finally:
            memory.stopped.set()
            memory.join()
    cpu = _children_cpu_s() - cpu
    summary = json.loads((out / "summary.json").read_text())
    if code != 0 or summary.get("status") != "complete":
        raise RuntimeError(f"{out.name}: exit {code}, {summary.get('status')}: {summary.get('errors')}")
    server = sorted((r["round"], r["time_s"]) for r in read_records(out) if r.get("node") == "server")
    rounds = [b[1] - a[1] for a, b in itertools.pairwise(server)]
    flower = summary.get("flower", {})
    return {
        "launched": started,
        "wall_s": time.time() - started,
        "startup_s": summary.get("startup_s"),
        "round_s": rounds,
        "mean_round_s": statistics.mean(rounds),
        "median_round_s": statistics.median(rounds),
        "serverapp_peak_rss_mb": flower.get("serverapp_peak_rss_mb"),
        "tree_peak_rss_mb": round(memory.peak, 1),
        "final_accuracy": summary.get("final_mean_accuracy"),
        "cpu_s": cpu,
        "model": out / "flower" / "final-model.npz",
    }


def bench_deployment(root: Path, nodes: int, rounds: int, repeats: int) -> None:
    config = [*DEPLOYMENT, f"nodes.count={nodes}", f"experiment.rounds={rounds}"]
    results: dict[str, list[dict]] = {"fedavg": [], "average": []}
    for repeat in range(repeats):
        for name in ("fedavg", "average"):
            out = root / f"deploy-{name}-{repeat}"
            results[name].append(
                fedgossip_run(out, [*config, f"strategy.name={name}"], timeout=120 + 120 * rounds)
            )
            print(
                f"  {name:8s} run {repeat + 1}: round {results[name][-1]['mean_round_s']:.2f}s "
                f"(rounds {', '.join(f'{x:.1f}' for x in results[name][-1]['round_s'])}), "
                f"wall {results[name][-1]['wall_s']:.1f}s",
                flush=True,
            )
    print(f"\nDeployment engine: {nodes} SuperNodes, digits MLP, {rounds} rounds, {repeats} run(s) each")
    print(
        f"{'strategy':24s} {'round s':>8s} {'median':>8s} {'wall s':>8s} {'ServerApp MB':>13s} "
        f"{'all procs MB':>13s} {'accuracy':>9s}"
    )
    label = {"fedavg": "Flower FedAvg (stock)", "average": "fedgossip average"}
    means, server_peaks = {}, {}
    for name, runs in results.items():
        means[name] = statistics.mean(r["mean_round_s"] for r in runs)
        median = statistics.median(x for r in runs for x in r["round_s"])
        wall = statistics.mean(r["wall_s"] for r in runs)
        server_peaks[name] = max(r["serverapp_peak_rss_mb"] for r in runs)
        tree_peak = max(r["tree_peak_rss_mb"] for r in runs)
        accuracy = runs[-1]["final_accuracy"]
        print(
            f"{label[name]:24s} {means[name]:8.2f} {median:8.2f} {wall:8.1f} "
            f"{server_peaks[name]:13.1f} {tree_peak:13.1f} {accuracy:9.4f}"
        )
    ratio = means["average"] / means["fedavg"]
    memory_ratio = server_peaks["average"] / server_peaks["fedavg"]
    print(
        f"round time ratio ours/stock: {ratio:.3f} (target <= 1.05); "
        f"ServerApp peak memory ratio {memory_ratio:.3f}"
    )
    ours, stock = load_model(results["average"][0]["model"]), load_model(results["fedavg"][0]["model"])
    assert list(ours) == list(stock)
    diff = max(float(np.max(np.abs(ours[k] - stock[k]))) for k in ours)
    scale = max(float(np.max(np.abs(stock[k]))) for k in stock)
    verdict = "identical" if all(np.array_equal(ours[k], stock[k]) for k in ours) else "not bit-identical"
    print(
        f"final global models: {verdict}; max |ours - stock| = {diff:.3g} "
        f"(largest weight {scale:.3g}; ours sums in float64, Flower in float32)"
    )


def bench_clientapp_forks(root: Path, nodes: int, rounds: int, repeats: int) -> None:
    """Stock FedAvg on the deployment engine with the SuperNodes' ClientApp fork servers against
    every ClientApp started afresh (FEDGOSSIP_CLIENTAPP_FORKS=off: the shim execs the plain
    command), alternately; time to round 1, median round time, wall and CPU seconds, medians."""
    config = [*DEPLOYMENT, f"nodes.count={nodes}", f"experiment.rounds={rounds}", "strategy.name=fedavg"]
    _adopt_orphans()
    ways = {"fresh processes": {FORKS_ENV: "off"}, "fork servers": {}}
    results: dict[str, list[dict]] = {way: [] for way in ways}
    print(f"\nClientApp fork servers: {nodes} SuperNodes, {rounds} rounds; load {_load()}", flush=True)
    for repeat in range(repeats):
        for way in list(ways)[repeat % 2 :] + list(ways)[: repeat % 2]:
            out = root / f"forks-{nodes}-{'off' if ways[way] else 'on'}-{repeat}"
            result = fedgossip_run(out, config, 120 + 120 * rounds, env=ways[way])
            result["to_round_1_s"], result["round_s"] = _rounds_of(out, result["launched"])
            results[way].append(result)
            cpu = f"cpu {result['cpu_s']:.1f}s"
            print(f"  {way:16s} run {repeat + 1}: {_brief(result)}, {cpu}; load {_load()}", flush=True)
    print(f"{'ClientApps (medians)':22s} {'to round 1 s':>13s} {'round s':>8s} {'wall s':>7s} {'CPU s':>7s}")
    for way, runs in results.items():
        first = statistics.median(r["to_round_1_s"] for r in runs)
        median = statistics.median(x for r in runs for x in r["round_s"])
        wall, cpu = (statistics.median(r[key] for r in runs) for key in ("wall_s", "cpu_s"))
        print(f"{way:22s} {first:13.2f} {median:8.2f} {wall:7.1f} {cpu:7.1f}")
    same = [np.array_equal(a, b) for r, f in zip(*results.values(), strict=True) for a, b in _models(r, f)]
    print(f"final global models bit-identical: {all(same)}")


def _models(one: dict, other: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    first, second = load_model(one["model"]), load_model(other["model"])
    assert list(first) == list(second)
    return [(first[k], second[k]) for k in first]


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's descendants that ended so far: with this process
    their subreaper (`_adopt_orphans`), every one whose parent did not wait for it is reaped here."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.1)  # one still ending
        except ChildProcessError:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _adopt_orphans() -> None:
    """Become the subreaper of the runs' processes (Linux), so that the CPU time of those whose
    parent never waits for them (SuperExec's ClientApps, the SuperNodes' SuperExecs) is counted."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _replies(clients: int, shapes: list[tuple[int, ...]], seed: int = 0) -> list:
    from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    rng = np.random.default_rng(seed)
    replies = []
    for client in range(clients):
        arrays = ArrayRecord(
            {f"t{i}": Array(rng.standard_normal(shape, dtype=np.float32)) for i, shape in enumerate(shapes)}
        )
        metrics = MetricRecord({"train_loss": 1.0, "num-examples": int(rng.integers(50, 500))})
        metadata = Metadata(
            run_id=1, message_id=f"r{client}", src_node_id=client + 2, dst_node_id=1,
            reply_to_message_id=f"m{client}", group_id="", created_at=time.time(), ttl=3600.0,
            message_type="train",
        )  # fmt: skip
        replies.append(Message(metadata=metadata, content=RecordDict({"arrays": arrays, "metrics": metrics})))
    return replies


def bench_aggregation(params: int, clients: int = 8, repeats: int = 7) -> None:
    import logging
    import tracemalloc

    from flwr.serverapp.strategy import FedAvg

    from fedgossip.server.flower_strategies import Average

    logging.getLogger("flwr").setLevel(logging.WARNING)
    models = {
        "digits MLP (4.6k params)": [(64, 64), (64,), (64, 64), (64,), (10, 64), (10,)],
        f"{params / 1e6:.0f}M params": [(params // 1000, 1000), (1000,)],
    }
    print(f"\nAggregation alone: aggregate_train of {clients} replies, best of {repeats}")
    print(
        f"{'model':26s} {'stock FedAvg s':>15s} {'ours s':>9s} {'ratio':>6s} {'stock MB':>9s} {'ours MB':>8s}"
    )
    for label, shapes in models.items():
        replies = _replies(clients, shapes)
        times: dict[str, list[float]] = {"stock": [], "ours": []}
        peaks: dict[str, float] = {}
        results = {}
        for _ in range(repeats):
            for name, strategy in (("stock", FedAvg()), ("ours", Average())):
                tracemalloc.start()
                started = time.perf_counter()
                results[name], _ = strategy.aggregate_train(1, replies)
                times[name].append(time.perf_counter() - started)
                peaks[name] = max(peaks.get(name, 0.0), tracemalloc.get_traced_memory()[1] / 2**20)
                tracemalloc.stop()
        stock, ours = (min(times[k]) for k in ("stock", "ours"))
        diff = max(
            float(np.max(np.abs(results["ours"][k].numpy() - results["stock"][k].numpy())))
            for k in results["stock"]
        )
        print(
            f"{label:26s} {stock:15.4f} {ours:9.4f} {ours / stock:6.2f} {peaks['stock']:9.1f} "
            f"{peaks['ours']:8.1f}   max |ours - stock| {diff:.2g}"
        )


def _rounds_of(out: Path, launched: float) -> tuple[float | None, list[float]]:
    """Seconds from the launch to the end of round 1 (the server record of round 1; the run start
    from flower/run-config.toml, so only for the engines that write it) and the round times."""
    server = sorted((r["round"], r["time_s"]) for r in read_records(out) if r.get("node") == "server")
    rounds = [b[1] - a[1] for a, b in itertools.pairwise(server) if a[0] >= 1]
    run_config = out / "flower" / "run-config.toml"
    if not run_config.exists():
        return None, rounds
    run_start = tomllib.loads(run_config.read_text())[RUN_START]
    return run_start + dict(server)[1] - launched, rounds


def bare_run(out: Path, clients: int, rounds: int, timeout: float) -> dict:
    """benchmarks/bare_simulation.py in a subprocess: time to round 1 and the round times."""
    argv = [sys.executable, str(Path(__file__).with_name("bare_simulation.py")), str(out), str(clients)]
    launched = time.time()
    with open(out.with_suffix(".log"), "w") as log:
        process = subprocess.Popen(
            [*argv, str(rounds)], stdout=log, stderr=subprocess.STDOUT, env=child_env(1)
        )
        usage = TreeMemory(process.pid)
        usage.start()
        try:
            code = process.wait(timeout)
        finally:
            usage.stopped.set()
            usage.join()
            stop_leaves_first([*descendants([process.pid])], 5.0)
            if process.poll() is None:
                process.kill()
                process.wait(10)
    if code != 0:
        raise RuntimeError(f"bare app: exit {code}, see {out.with_suffix('.log')}")
    ended = dict(json.loads(out.read_text())["rounds"])
    times = [ended[r] for r in sorted(ended) if r >= 1]
    return {
        "to_round_1_s": ended[1] - launched,
        "round_s": [b - a for a, b in itertools.pairwise(times)],
        "wall_s": time.time() - launched,
        "cpu_s": usage.cpu_s,
    }


FOLDERS = {
    "bare run_simulation app": "bare",
    "ours (simulation engine)": "ours",
    "ours in process (no Ray)": "inprocess",
    "ours, --baseline's code": "baseline",
}


def bench_simulation(
    root: Path, clients: int, rounds: int, repeats: int, baseline: Path | None = None
) -> None:
    """Time to round 1 and per-round time of 100 (--clients) virtual clients, side by side: our
    simulation engine, a bare `run_simulation` app (no training) and our in-process engine (our
    training and evaluation, no Ray: what our rounds cost without the runtime), and with
    `baseline` our simulation engine of another fedgossip source (before/after a change). The
    paths take turns, in a rotated order each repeat, so that a change of load hits them alike;
    medians over the repeats."""
    config = [
        *SIMULATION,
        f"nodes.count={clients}",
        f"experiment.rounds={rounds}",
        f"task.synthetic_samples={max(2000, 25 * clients)}",
    ]
    timeout = 900 + 600 * rounds * max(1, clients // 500)

    def ours(out: Path, engine: str = "simulation", source: Path | None = None) -> dict:
        result = fedgossip_run(out, [*config, f"flower.engine={engine}"], timeout, source)
        result["to_round_1_s"], result["round_s"] = _rounds_of(out, result["launched"])
        return result

    paths = {
        "bare run_simulation app": lambda out: bare_run(out.with_suffix(".json"), clients, rounds, timeout),
        "ours (simulation engine)": ours,
        "ours in process (no Ray)": lambda out: ours(out, engine="inprocess"),
    }
    if baseline is not None:
        paths["ours, --baseline's code"] = lambda out: ours(out, source=baseline)
    print(
        f"\nSimulation, {clients} virtual clients, {rounds} rounds, {repeats} repeat(s); "
        f"load before: {_load()}",
        flush=True,
    )
    results: dict[str, list[dict]] = {name: [] for name in paths}
    names = list(paths)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            results[name].append(paths[name](root / f"{FOLDERS[name]}-{repeat}"))
            print(f"  {name} run {repeat + 1}: {_brief(results[name][-1])}; load {_load()}", flush=True)
    bare = results["bare run_simulation app"]
    print(
        f"{'path (medians)':28s} {'to round 1 s':>13s} {'x bare':>7s} {'round s':>8s} {'x bare':>7s} "
        f"{'wall s':>7s} {'CPU s':>7s}"
    )
    for name, runs in results.items():
        first = [r["to_round_1_s"] for r in runs if r.get("to_round_1_s")]
        median = statistics.median(x for r in runs for x in r["round_s"])
        ratios = [r["to_round_1_s"] / b["to_round_1_s"] for r, b in zip(runs, bare, strict=True) if first]
        shown = (
            f"{statistics.median(first):13.2f} {statistics.median(ratios):7.2f}"
            if first
            else f"{'-':>13s} {'':7s}"
        )
        bare_round = statistics.median(x for r in bare for x in r["round_s"])
        wall = statistics.median(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        print(f"{name:28s} {shown} {median:8.3f} {median / bare_round:7.2f} {wall:7.1f} {cpu:7.1f}")
    print(
        "  (x bare: the median of the ratios of each repeat's runs; target: ours <= 1.3x the bare "
        "app's time to round 1; CPU s: every process of the run, sampled every 0.25 s)"
    )


def _brief(result: dict) -> str:
    """One run's time to round 1 and round times, for the progress lines."""
    first = result.get("to_round_1_s")
    rounds = ", ".join(f"{x:.2f}" for x in result["round_s"])
    cpu = f", CPU {result['cpu_s']:.1f}s"
    return f"to round 1 {first:.2f}s, rounds {rounds} s{cpu}" if first else f"rounds {rounds} s{cpu}"


def _load() -> str:
    """The load averages (1, 5, 15 min) of the machine."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100, help="virtual clients of the simulation run")
    parser.add_argument("--sim-rounds", type=int, default=5)
    parser.add_argument("--sim-repeats", type=int, default=3, help="runs of each simulation path")
    parser.add_argument("--nodes", type=int, default=4, help="SuperNodes of the deployment runs")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each deployment run")
    parser.add_argument("--repeats", type=int, default=1, help="deployment runs per strategy")
    parser.add_argument("--params", type=int, default=10_000_000, help="size of the large aggregation model")
    parser.add_argument(
        "--clientapp-forks",
        action="store_true",
        help="deployment part: fork servers against fresh ClientApp processes (2 and --nodes SuperNodes)",
    )
    parser.add_argument("--skip-aggregation", action="store_true")
    parser.add_argument("--skip-deployment", action="store_true")
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a folder holding another fedgossip package (e.g. DIR/fedgossip from `git archive "
        "COMMIT`): its simulation engine is timed beside ours",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        compile_trees(Path(__file__).resolve().parent.parent, args.baseline)  # as installed: .pyc
        if not args.skip_aggregation:
            bench_aggregation(args.params)
        if args.clientapp_forks:
            for nodes in (2, args.nodes):
                bench_clientapp_forks(root, nodes, args.rounds, args.repeats)
        elif not args.skip_deployment:
            bench_deployment(root, args.nodes, args.rounds, args.repeats)
        if not args.skip_simulation:
            bench_simulation(root, args.clients, args.sim_rounds, args.sim_repeats, args.baseline)


if __name__ == "__main__":
    main()
