"""Scale benchmarks: many real gRPC gossip peers on one machine (issue 10's targets).

    python benchmarks/bench_scale.py                    # 64 peers, then 256 and 1000 packed
    python benchmarks/bench_scale.py --only 64          # 64 | 256 | 1000
    python benchmarks/bench_scale.py --only 64 --baseline   # also 64 fresh processes (no fork server)
    python benchmarks/bench_scale.py --only ray         # the Ray engine against the local engine

Each case is one `fedgossip run` (digits MLP, random 4-regular graph, VCA) in a subprocess. While
it runs, every process of the run (the node processes and the fork server: the launcher's
descendants) is sampled once a second for RSS, CPU time and threads (cheap: /proc/PID/statm and
stat). PSS (psutil `memory_full_info`, from /proc/PID/smaps_rollup: PSS charges each shared page to
the processes sharing it, so the PSS of all processes adds up to what the run really costs) is
costly to read: a sweep of 64 processes takes seconds of CPU and holds each process's mmap lock
while it reads. So PSS is read in sweeps spaced out: the first once the node processes are
started, then again PSS_GAP_S (at least PSS_GAP_RATIO times the last sweep's duration) after the
previous one ended; the peak PSS is the highest sweep's, a lower bound of the true peak. Printed
per case: all peers ready (from launch), first round done by every peer, seconds per round
(median), wall time (launch to exit of the launcher, imports included), peak RSS and PSS per peer
and in total, CPU time, threads per process, and the ratios to the targets and to the
measurements before the fork server (issue 10: 64 x 20 in 99 s, 67 s of start-up, 155 MB PSS per
peer). The machine's load average is printed with each case: the figures are only comparable at
the same load.

The "ray" case is benchmarks/bench_ray.py: one config on the local and the Ray engine,
alternately, `--repeats` times (7), and the ratio of the medians of seconds per round (target <=
1.2x). Memory is not compared: the actors are Ray's processes, not the launcher's.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fedgossip.launcher.supervision.processes import child_env
from fedgossip.reports import read_records

MB = 1e6
BEFORE = {"wall_s": 99.0, "startup_s": 67.0, "pss_mb": 155.0}  # 64 x 20, one fresh process per peer
# name: (peers, rounds, per_process, round timeout in s (the launcher's time limit grows with it), targets)
CASES = {
    "64": (64, 20, 1, 120, {"wall_s": 30.0, "startup_s": 10.0, "pss_mb": 80.0}),
    "256": (256, 5, 8, 120, {}),
    "1000": (1000, 5, 25, 600, {"total_gib": 24.0}),
}
RAY_TARGET = 1.2  # the Ray engine's seconds per round, at most this multiple of the local engine's
SAMPLE_S = 1.0  # RSS, CPU and threads: once a second
PSS_GAP_S = 10.0  # PSS sweeps: at least this long apart...
PSS_GAP_RATIO = 3.0  # ...and at least this many times the last sweep's duration


@dataclass
class Memory:
    """Peak memory of a run's processes (bytes), their CPU time and threads."""

    peak_rss: dict[int, int]
    peak_pss: dict[int, int]
    cpu_s: dict[int, float]
    threads: dict[int, int]  # the most threads seen in each process
    peak_total_rss: int = 0
    peak_total_pss: int = 0
    pss_sweeps: int = 0
    launcher_cpu_s: float = 0.0
    started_s: float | None = None  # when the launcher had started every node process


def run_processes(launcher: psutil.Process) -> list[psutil.Process]:
    """The processes of the run: the launcher's descendants, its watchdogs apart."""
    found = []
    for proc in launcher.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not any("watchdog" in part for part in proc.cmdline()):
                found.append(proc)
    return found


def sample(launcher: psutil.Process, memory: Memory) -> None:
    """The cheap sample of every process of the run (the launcher apart): RSS, CPU time, threads."""
    rss = 0
    for proc in run_processes(launcher):
        try:
            with proc.oneshot():
                info = proc.memory_info()
                times = proc.cpu_times()
                threads = proc.num_threads()
        except psutil.Error:
            continue
        memory.cpu_s[proc.pid] = times.user + times.system
        memory.threads[proc.pid] = max(memory.threads.get(proc.pid, 0), threads)
        memory.peak_rss[proc.pid] = max(memory.peak_rss.get(proc.pid, 0), info.rss)
        rss += info.rss
    memory.peak_total_rss = max(memory.peak_total_rss, rss)
    with contextlib.suppress(psutil.Error):
        times = launcher.cpu_times()
        memory.launcher_cpu_s = times.user + times.system


def sweep_pss(launcher: psutil.Process, memory: Memory) -> None:
    """One PSS sweep of every process of the run (costly: see the module docstring)."""
    pss = 0
    for proc in run_processes(launcher):
        try:
            value = proc.memory_full_info().pss
        except psutil.Error:
            continue
        memory.peak_pss[proc.pid] = max(memory.peak_pss.get(proc.pid, 0), value)
        pss += value
    memory.peak_total_pss = max(memory.peak_total_pss, pss)
    memory.pss_sweeps += 1


def launch(out: Path, settings: list[str], code: Path | None = None) -> tuple[float, Memory, int]:
    """Run `fedgossip run` with `settings` (on the code of import root `code`, if given: see
    bench_floor.code_root), sampling memory; wall time, memory, exit status."""
    argv = [sys.executable, "-m", "fedgossip.launcher.cli", "run", "--out", str(out)]
    for item in settings:
        argv += ["--set", item]
    env = child_env(1)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env["PYTHONPATH"]])
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    launcher = psutil.Process(process.pid)
    memory = Memory({}, {}, {}, {})
    next_sweep = float("inf")  # the first sweep once the node processes are started
    while process.poll() is None:
        if memory.started_s is None and (out / "processes.json").exists():
            memory.started_s = time.monotonic() - started
            next_sweep = time.monotonic()
        sample(launcher, memory)
        if time.monotonic() >= next_sweep:
            began = time.monotonic()
            sweep_pss(launcher, memory)
            ended = time.monotonic()
            next_sweep = ended + max(PSS_GAP_S, PSS_GAP_RATIO * (ended - began))
        time.sleep(SAMPLE_S)
    wall = time.monotonic() - started
    if process.returncode not in (0, 3):
        print(process.stderr.read().decode(errors="replace")[-3000:], file=sys.stderr)
    process.stderr.close()
    return wall, memory, process.returncode


def preload_s(out: Path) -> float:
    """How long the fork server took to import what it preloads (from its log; nan without one)."""
    log = out / "logs" / "forkserver.log"
    match = re.search(r"preloaded in ([0-9.]+)s", log.read_text()) if log.exists() else None
    return float(match.group(1)) if match else float("nan")


def round_ends(records: list[dict]) -> list[float]:
    """When each round was done by every peer (time_s of its slowest record), by round."""
    ends: dict[int, float] = {}
    for r in records:
        ends[r["round"]] = max(ends.get(r["round"], 0.0), r["time_s"])
    return [ends[k] for k in sorted(ends)]


def compare(value: float, key: str, before: dict, targets: dict, unit: str) -> str:
    """The ratio of a figure to its value before the fork server, and its target's verdict."""
    text = f" ({value / before[key]:.2f}x before)" if key in before else ""
    if key in targets:
        text += f" [{'PASS' if value <= targets[key] else 'MISS'} target <= {targets[key]:g} {unit}]"
    return text


def scale_settings(peers: int, rounds: int, per_process: int, round_timeout: float, name: str) -> list[str]:
    """The benchmarks' config: digits MLP, random 4-regular graph, VCA."""
    return [
        f"nodes.count={peers}",
        f"nodes.per_process={per_process}",
        f"experiment.rounds={rounds}",
        f"experiment.round_timeout={round_timeout}",
        "topology.kind=regular",
        "topology.degree=4",
        "task.model=mlp",
        "strategy.name=vca",
        f"experiment.name={name}",
    ]


def round_figures(out: Path) -> tuple[dict, list[float], float]:
    """A finished run's summary, when every peer was done with each round, and the median
    seconds per round."""
    summary = json.loads((out / "summary.json").read_text())
    ends = round_ends(read_records(out))
    per_round = (
        statistics.median(b - a for a, b in itertools.pairwise(ends)) if len(ends) > 1 else float("nan")
    )
    return summary, ends, per_round


def load_text() -> str:
    """The machine's load average, to read the figures by (the machine is shared)."""
    load = os.getloadavg()
    return f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores, shared"


def bench(case: str, tmp: Path, fork_server: bool = True) -> None:
    peers, rounds, per_process, round_timeout, targets = CASES[case]
    settings = [
        *scale_settings(peers, rounds, per_process, round_timeout, f"scale-{case}"),
        f"launcher.fork_server={str(fork_server).lower()}",
    ]
    out = tmp / f"scale-{case}-{'fork' if fork_server else 'fresh'}"
    load = load_text()
    wall, memory, code = launch(out, settings)
    summary, ends, per_round = round_figures(out)
    processes = len(memory.peak_rss)
    pss_peer = memory.peak_total_pss / peers / MB
    rss_peer = memory.peak_total_rss / peers / MB
    startup = summary.get("startup_s") or float("nan")
    print(
        f"== {peers} peers x {rounds} rounds, {per_process} per process, "
        f"fork server {'on' if fork_server else 'off'} ({load}) =="
    )
    print(f"status {summary['status']} (exit {code}), {processes} processes sampled")
    before = BEFORE if case == "64" and per_process == 1 else {}
    total_gib = memory.peak_total_pss / 2**30
    print(
        f"node processes started {memory.started_s or float('nan'):.1f} s after launch (fork server "
        f"preloaded in {preload_s(out):.1f} s); all peers ready {startup:.1f} s after the run's start"
        + compare(startup, "startup_s", before, targets, "s")
    )
    print(f"first round done by every peer {ends[0]:.1f} s after launch" if ends else "no round recorded")
    print(f"{per_round:.2f} s per round (median; slowest peer each round)")
    print(
        f"wall {wall:.1f} s from launch to exit (run itself {summary['wall_time_s']:.1f} s)"
        + compare(wall, "wall_s", before, targets, "s")
    )
    if ends:
        print(
            f"where the wall time goes: {ends[-1]:.1f} s of the run until every peer finished its "
            f"last round, {summary['wall_time_s'] - ends[-1]:.1f} s more until the run's end (peers "
            f"closing), {wall - summary['wall_time_s']:.1f} s outside the run (the launcher's imports "
            "and config before it; summary, plots and table after it)"
        )
    print(
        f"peak memory: total PSS {total_gib:.2f} GiB, RSS {memory.peak_total_rss / 2**30:.2f} GiB"
        + compare(total_gib, "total_gib", before, targets, "GiB")
    )
    print(
        f"per peer: PSS {pss_peer:.0f} MB, RSS {rss_peer:.0f} MB"
        + compare(pss_peer, "pss_mb", before, targets, "MB PSS")
        + f" (RSS sampled every {SAMPLE_S:g} s, PSS in {memory.pss_sweeps} sweeps at least "
        f"{PSS_GAP_S:g} s apart)"
    )
    threads = sorted(memory.threads.values())
    if threads:
        print(f"threads per process: median {statistics.median(threads):g}, max {threads[-1]}")
    cpu = sum(memory.cpu_s.values())
    core_s = (os.cpu_count() or 1) * wall
    share = (cpu + memory.launcher_cpu_s) / core_s
    print(
        f"CPU time: {cpu:.1f} s in the node processes and the fork server "
        f"({1000 * cpu / (peers * rounds):.0f} ms per peer-round, start-up included), "
        f"{memory.launcher_cpu_s:.1f} s in the launcher: {share:.0%} of the {core_s:.0f} core-seconds "
        "of the wall time (the rest went to other processes on the machine)"
    )
    print(f"final mean accuracy {summary.get('final_mean_accuracy')}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=[*sorted(CASES), "ray"], action="append")
    parser.add_argument("--baseline", action="store_true", help="also run 64 peers as fresh processes")
    parser.add_argument("--keep", type=Path, help="keep the results folders here")
    parser.add_argument("--repeats", type=int, default=7, help="ray: runs of each engine, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        for case in args.only or ["64", "256", "1000", "ray"]:
            if case == "ray":
                from bench_ray import bench_ray  # the Ray engine against the local engine

                bench_ray(tmp, args.repeats)
                continue
            bench(case, tmp)
            if args.baseline and case == "64":
                bench(case, tmp, fork_server=False)


if __name__ == "__main__":
    main()
