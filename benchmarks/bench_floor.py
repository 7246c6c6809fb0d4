"""The compute floor benchmark (issue 21): a real run against the same work in one sequential loop.

    python benchmarks/bench_floor.py                        # the three cases, one after the other
    python benchmarks/bench_floor.py --case quickstart      # vanishing-variance | quickstart | scale-64
    python benchmarks/bench_floor.py --config my.toml --set experiment.rounds=5
    python benchmarks/bench_floor.py --quick                # a smoke run: 4 quickstart peers, 3 rounds
    python benchmarks/bench_floor.py --case scale-64 --variant '' --variant 'nodes.per_process=8'
                                                            # real runs side by side against one floor
    python benchmarks/bench_floor.py --case quickstart --set launcher.engine=simulation   # an engine
    python benchmarks/bench_floor.py --case scale-64 --before HEAD~1 --repeats 3
                                                            # this tree against a git revision's code

Each case is (a) one `fedgossip run` in a subprocess (real processes, real gRPC) and (b) the floor:
the same learners, rounds, merges and evaluations in one plain loop in one fresh process
(`floor.py`), timed by its own clock (imports excluded: they are done before it starts) and as a
whole process (imports included, as the real run's wall includes its imports). `--set`
overrides go to both: the floor reads no launcher key, so `--set launcher.engine=NAME` measures that
engine against the same floor. Printed per case: both walls and CPU seconds, the ratio wall_real /
wall_floor, the floor's phases, where the real run's CPU went, and both final mean accuracies (the
same seed: equal up to float noise, the proof that the floor did the same work).

The real run's CPU: its total is the launcher's and every reaped descendant's rusage (getrusage
RUSAGE_CHILDREN around the run). The split comes from sampling every SAMPLE_S the per-thread CPU
of the launcher and its descendants (/proc/PID/task/TID/stat, utime + stime), keeping each
thread's last sample: the launcher (all its threads: progress, record tail, consensus observer),
the fork server's own threads, the node processes' main threads (training, merging, evaluation)
and their other threads (the asyncio loop and gRPC's threads: the transport), by thread name. What
a thread spends after its last sample is missed; the sampled total is printed beside the rusage one.

`--before REV` runs every real run also on the code of git revision REV (extracted into a temporary
import root put first on PYTHONPATH), alternately with this tree's, `--repeats` times, against the
one floor, and ends with the medians of both: a code change measured side by side under one load.
Both trees are byte-compiled first (`bytecode.py`), as an installed package is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bytecode import compile_trees
from floor import check_floor_config

from fedgossip.config import load_config
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.reports import read_records

REPO = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.25
TICKS = os.sysconf("SC_CLK_TCK")
# name: (config relative to the repository, its overrides)
CASES = {
    "vanishing-variance": (  # the reproduction's default setting, gossip VCA
        "examples/reproductions/vanishing-variance.toml",
        [
            "strategy.name=vca",
            "nodes.count=32",
            "topology.degree=6",
            "experiment.rounds=18",
            "task.local_epochs=3",
        ],
    ),
    "quickstart": ("config/quickstart.toml", []),
    "scale-64": (  # benchmarks/bench_scale.py's 64 x 20
        "config/quickstart.toml",
        [
            "nodes.count=64",
            "experiment.rounds=20",
            "experiment.round_timeout=120",
            "topology.kind=regular",
            "topology.degree=4",
            "task.model=mlp",
            "strategy.name=vca",
        ],
    ),
}
QUICK = ("config/quickstart.toml", ["nodes.count=4", "experiment.rounds=3"])


@dataclass
class ThreadCpu:
    """The last sampled CPU seconds of every thread of a run, by (pid, tid), with its role."""

    seconds: dict[tuple[int, int], float] = field(default_factory=dict)
    role: dict[tuple[int, int], str] = field(default_factory=dict)

    def by_role(self) -> dict[str, float]:
        """CPU seconds summed by role."""
        totals: dict[str, float] = defaultdict(float)
        for key, value in self.seconds.items():
            totals[self.role[key]] += value
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def thread_times(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of process `pid`: its name and CPU seconds (utime + stime); {} once it is gone."""
    found = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                    text = stat.read()
                name = text[text.index("(") + 1 : text.rindex(")")]
                fields = text[text.rindex(")") + 2 :].split()
                found[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return found


def process_role(proc: psutil.Process, launcher: int) -> str | None:
    """ "launcher", "fork server", "watchdog" or "node" (a peer process or a packed host)."""
    if proc.pid == launcher:
        return "launcher"
    cmdline = " ".join(proc.cmdline())
    if "watchdog" in cmdline:
        return "watchdog"
    if "forkserver_process" in cmdline and proc.ppid() == launcher:
        return "fork server"
    return "node"


def sample(launcher: psutil.Process, cpu: ThreadCpu, roles: dict[int, str]) -> None:
    """One sample of the per-thread CPU of the launcher and its descendants."""
    with contextlib.suppress(psutil.Error):
        procs = [launcher, *launcher.children(recursive=True)]
        for proc in procs:
            if proc.pid not in roles:
                with contextlib.suppress(psutil.Error):
                    roles[proc.pid] = process_role(proc, launcher.pid)
            role = roles.get(proc.pid)
            if role is None:
                continue
            threads = thread_times(proc.pid)
            main = threads.get(proc.pid, ("", 0.0))[0]
            for tid, (name, seconds) in threads.items():
                key = (proc.pid, tid)
                cpu.seconds[key] = seconds
                cpu.role[key] = role if role != "node" else node_thread_role(tid == proc.pid, name, main)


def node_thread_role(is_main: bool, name: str, main: str) -> str:
    """What a node process's thread is: a peer's round loop (training, merge, evaluation,
    records: a peer process's main thread, or a packed host's thread named node-ID), a Python
    thread (it keeps the process's name: the asyncio loop of the gRPC server and senders, the
    record writer...) or a native one by its name (gRPC's event_engine...). A packed host's own
    main thread only waits: it counts with the round loops."""
    if is_main or name.startswith("node-"):
        return "node main threads"
    if name == main:
        return "node other Python threads (asyncio loop...)"
    return f"node native threads {name!r}"


def launch(argv: list[str], during=None, code: Path | None = None) -> tuple[float, float, int, str]:
    """Run `argv` (BLAS threads capped to 1, as the launcher caps its nodes; with fedgossip imported
    from the import root `code`, if given), calling `during(pid)` every SAMPLE_S while it runs:
    wall, CPU of it and its reaped descendants (rusage), exit status, the end of its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    env = child_env(1)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env["PYTHONPATH"]])
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        while process.poll() is None:
            if during is not None:
                during(process.pid)
            time.sleep(SAMPLE_S)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    error = process.stderr.read().decode(errors="replace")[-3000:]
    process.stderr.close()
    return wall, cpu, process.returncode, error


def code_root(revision: str, into: Path) -> Path:
    """An import root holding git revision `revision` of this repository as the package fedgossip
    (its folders are fedgossip's subpackages, as pyproject.toml maps them)."""
    root = into / f"code-{revision.replace('/', '_')}"
    (root / "fedgossip").mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root / "fedgossip")], input=archive.stdout, check=True)
    return root


def run_real(
    config: Path, overrides: list[str], out: Path, code: Path | None = None
) -> tuple[float, float, ThreadCpu, int]:
    """`fedgossip run` of `config` (on the code of import root `code`, if given): wall, CPU (rusage
    of the launcher's tree), per-thread samples, exit status."""
    argv = [sys.executable, "-m", "fedgossip.launcher.cli", "run", str(config), "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    cpu, roles = ThreadCpu(), {}

    def during(pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            sample(psutil.Process(pid), cpu, roles)

    wall, total, status, error = launch(argv, during, code)
    if status not in (0, 3):  # 3: the target accuracy was not reached
        print(error, file=sys.stderr)
    return wall, total, cpu, status


def run_floor(config: Path, overrides: list[str], out: Path) -> tuple[float, float, dict]:
    """`floor.py` of `config` in a fresh process: its whole wall and CPU (imports included) and
    its figures (its own clock: imports excluded)."""
    argv = [sys.executable, str(Path(__file__).parent / "floor.py"), str(config), "--json", str(out)]
    for item in overrides:
        argv += ["--set", item]
    wall, cpu, code, error = launch(argv)
    if code != 0:
        raise ValueError(f"the floor failed (exit {code}): {error}")
    figures = json.loads(out.read_text())
    figures["accuracy"] = {
        int(n): {int(r): a for r, a in rounds.items()} for n, rounds in figures["accuracy"].items()
    }
    return wall, cpu, figures


def real_accuracy(out: Path) -> dict[int, dict[int, float | None]]:
    """Each node's test accuracy by round, from a finished run's records."""
    accuracy: dict[int, dict[int, float | None]] = defaultdict(dict)
    for r in read_records(out):
        if isinstance(r.get("node"), int):
            accuracy[r["node"]][r["round"]] = r["test_accuracy"]
    return accuracy


def max_difference(real: dict, floor: dict) -> float:
    """The largest |real - floor| over every (node, round) accuracy (inf when the keys differ or one
    is evaluated where the other is not)."""
    if set(real) != set(floor) or any(set(real[n]) != set(floor[n]) for n in floor):
        return float("inf")
    worst = 0.0
    for n, rounds in floor.items():
        for r, acc in rounds.items():
            if (acc is None) != (real[n][r] is None):
                return float("inf")
            if acc is not None:
                worst = max(worst, abs(acc - real[n][r]))
    return worst


def bench(
    name: str,
    config: Path,
    overrides: list[str],
    tmp: Path,
    variants: list[list[str]],
    before: Path | None = None,
    repeats: int = 1,
) -> int:
    """Measure one case: the floor, then the real run once per variant (its settings on top of the
    case's) and repeat, alternately on this tree's code and on `before`'s (an import root) if
    given; print the figures and, with `before`, the medians; 0 if the accuracies agree."""
    check_floor_config(load_config(config, overrides))
    print(f"\n== {name}: {config.name} {' '.join(overrides)}")
    print(f"   load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    tmp.mkdir(parents=True, exist_ok=True)
    process_wall, process_cpu, floor = run_floor(config, overrides, tmp / f"{name}-floor.json")
    phases = ", ".join(f"{k} {v:.1f}" for k, v in floor["seconds"].items())
    print(
        f"   floor: wall {floor['wall_s']:.1f} s, CPU {floor['cpu_s']:.1f} s ({phases} s); "
        f"its process, imports included: wall {process_wall:.1f} s, CPU {process_cpu:.1f} s"
    )
    failed = 0
    codes = [None] if before is None else [None, before]
    figures: dict[tuple[int, str], list[tuple[float, float, dict[str, float]]]] = defaultdict(list)
    for repeat in range(repeats):
        for index, variant in enumerate(variants):
            for code in codes if repeat % 2 == 0 else codes[::-1]:
                which = "this tree" if code is None else f"code of {code.name}"
                out = tmp / f"{name}-{index}-{repeat}-{'after' if code is None else 'before'}"
                print(f"   -- {which}{' with ' + ' '.join(variant) if variant else ''}, run {repeat + 1}")
                settings = [*overrides, *variant, f"experiment.name={name}"]
                failed += report_real(config, settings, out, floor, process_wall, code, figures[index, which])
    if before is not None:
        print(f"   medians of {repeats} run(s) (load now {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
        for (index, which), runs in figures.items():
            walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
            roles = {role: float(np.median([r[2].get(role, 0.0) for r in runs])) for role in runs[0][2]}
            print(
                f"     {' '.join(variants[index]) or '(case)'} on {which}: wall {np.median(walls):.1f} s "
                f"({np.median(walls) / floor['wall_s']:.2f}x the floor), CPU {np.median(cpus):.1f} s; "
                + ", ".join(f"{role} {seconds:.1f}" for role, seconds in roles.items() if seconds >= 0.05)
            )
    return failed


def report_real(
    config: Path,
    overrides: list[str],
    out: Path,
    floor: dict,
    process_wall: float,
    code: Path | None = None,
    figures: list | None = None,
) -> int:
    """Run (on the code of import root `code`, if given) and print one real run against the
    `floor`, appending (wall, CPU, CPU by thread role) to `figures`; 0 if the accuracies agree."""
    wall, cpu_total, threads, status = run_real(config, overrides, out, code)
    if status not in (0, 3):
        print(f"   the real run failed (exit {status})")
        return 1
    real = real_accuracy(out)
    real_final = float(np.mean([rounds[max(rounds)] for rounds in real.values()]))
    floor_final = float(np.mean([rounds[max(rounds)] for rounds in floor["accuracy"].values()]))
    difference = max_difference(real, floor["accuracy"])
    times = cpu_total / floor["cpu_s"]
    print(f"   real:  wall {wall:.1f} s, CPU {cpu_total:.1f} s ({times:.2f}x the floor's CPU)")
    print(
        f"   ratio wall_real / wall_floor = {wall / floor['wall_s']:.2f}x "
        f"({wall / process_wall:.2f}x the floor's process, imports included)"
    )
    sampled = threads.by_role()
    if figures is not None:
        figures.append((wall, cpu_total, sampled))
    print(f"   real run's CPU by thread (sampled {sum(sampled.values()):.1f} of {cpu_total:.1f} s):")
    for role, seconds in sampled.items():
        if seconds >= 0.05:
            print(f"     {role:<46} {seconds:7.1f} s")
    print(f"   final mean accuracy: real {real_final:.4f}, floor {floor_final:.4f}")
    print(f"   max |real - floor| over every node and round: {difference:.2g}")
    return 0 if difference <= 1e-4 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--config", type=Path, help="measure this config instead of the cases")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 quickstart peers, 3 rounds")
    parser.add_argument("--keep", type=Path, help="keep the real runs' results folders here")
    parser.add_argument(
        "--variant",
        action="append",
        metavar="'KEY=VALUE ...'",
        help="run the real run once per variant (its settings, space-separated; '' for none) against "
        "one floor, side by side",
    )
    parser.add_argument("--before", metavar="REV", help="also run the real runs on git revision REV's code")
    parser.add_argument("--repeats", type=int, default=1, help="real runs of each variant (and code)")
    args = parser.parse_args(argv)
    if args.quick:
        cases = {"quick": QUICK}
    elif args.config:
        cases = {args.config.stem: (str(args.config.resolve()), [])}
    else:
        cases = {name: CASES[name] for name in (args.case or CASES)}
    variants = [variant.split() for variant in args.variant or [""]]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as scratch:
        tmp = args.keep or Path(scratch)
        before = code_root(args.before, Path(scratch)) if args.before else None
        compile_trees(REPO, before)  # measured as installed packages are: from .pyc files
        for name, (config, overrides) in cases.items():
            try:
                settings = [*overrides, *args.overrides]
                failed += bench(name, REPO / config, settings, tmp, variants, before, args.repeats)
            except ValueError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
