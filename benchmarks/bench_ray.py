"""The Ray engine against the local engine (issue 21: <= 1.2x the local engine's seconds per round).

    python benchmarks/bench_scale.py --only ray                 # 7 repeats, local and Ray alternating
    python benchmarks/bench_ray.py --repeats 3 --before HEAD~1  # also Ray on a git revision's code

One config (RAY_CASE: 8 digits-MLP peers, one per process, 50 rounds) runs on the local engine and
on the Ray engine with a local 2-node Ray cluster on loopback (`tests.support.loopback_cluster`,
started once before the runs and not timed), alternately, `--repeats` times; with `--before REV`
also on the Ray engine with the code of git revision REV (`bench_floor.code_root`: the launcher
runs it; the actors' Ray workers import fedgossip before the import path the engine hands them
applies, so they run this tree's: measure driver-side changes this way). Printed per run: seconds
per round (median over the rounds; the slowest peer each round), start-up, wall, and the CPU
seconds of every descendant of this process by role (the launcher, the local engine's node
processes, the Ray workers holding the actors, Ray's own processes: GCS, raylets, agents),
sampled every SAMPLE_S (a process's CPU after its last sample is missed). Then the medians and the
ratio Ray / local of the medians of seconds per round.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository: its tests' support

from bench_floor import code_root
from bench_scale import RAY_TARGET, launch, load_text, round_figures, scale_settings

RAY_CASE = (8, 50, 120)  # peers, rounds (50: rounds of ~0.2 s vary a lot on a shared machine), round timeout
SAMPLE_S = 0.5


def role(proc: psutil.Process) -> str:
    """What a descendant of this process is, by its command line."""
    cmdline = " ".join(proc.cmdline())
    if "launcher.cli" in cmdline:
        return "launcher"
    if "forkserver_process" in cmdline:
        return "local node processes and fork server"
    if "watchdog" in cmdline:
        return "watchdog"
    if proc.name().startswith("ray::") or "default_worker" in cmdline:
        return "Ray workers (the actors)"
    return "Ray's own processes (GCS, raylets, agents)"


class CpuSampler:
    """The CPU seconds of every descendant of this process, sampled every SAMPLE_S in a thread."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def sample(self) -> None:
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                if proc.pid not in self.roles:
                    self.roles[proc.pid] = role(proc)
                self.seconds[proc.pid] = times.user + times.system

    def by_role_since(self, before: dict[int, float]) -> dict[str, float]:
        """CPU seconds by role since the snapshot `before` (of `seconds`)."""
        totals: dict[str, float] = defaultdict(float)
        for pid, seconds in dict(self.seconds).items():
            totals[self.roles[pid]] += seconds - before.get(pid, 0.0)
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def bench_ray(tmp: Path, repeats: int = 7, before: str | None = None) -> float:
    """RAY_CASE on the local and the Ray engine (and Ray on `before`'s code), alternately,
    `repeats` times; prints each run and the medians; returns the ratio of the medians Ray / local."""
    from tests.support import loopback_cluster

    peers, rounds, round_timeout = RAY_CASE
    settings = scale_settings(peers, rounds, 1, round_timeout, "scale-ray")
    print(f"== {peers} peers x {rounds} rounds, one peer per process: local engine vs Ray engine ==")
    old = code_root(before, tmp) if before else None
    per_round: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[dict[str, float]]] = defaultdict(list)
    with loopback_cluster(nodes=2, cpus=1) as cluster, CpuSampler() as sampler:
        ray = ["launcher.engine=ray", f"launcher.ray_address={cluster.address}"]
        variants = [("local", [], None), ("ray", ray, None)]
        if old is not None:
            variants.append((f"ray on {before}", ray, old))
        for repeat in range(repeats):
            for name, extra, code in variants if repeat % 2 == 0 else variants[::-1]:
                out = tmp / f"scale-ray-{name.replace(' ', '-')}-{repeat}"
                load = load_text()
                sampler.sample()
                snapshot = dict(sampler.seconds)
                wall, _, status = launch(out, [*settings, *extra], code)
                sampler.sample()
                used = sampler.by_role_since(snapshot)
                summary, ends, seconds = round_figures(out)
                per_round[name].append(seconds)
                cpu[name].append(used)
                print(
                    f"{name}: status {summary['status']} (exit {status}), all peers ready "
                    f"{summary.get('startup_s') or float('nan'):.1f} s after the run's start, first round "
                    f"done {ends[0] if ends else float('nan'):.1f} s, {seconds:.3f} s per round (median), "
                    f"wall {wall:.1f} s ({load}); CPU s: "
                    + ", ".join(f"{who} {s:.1f}" for who, s in used.items() if s >= 0.05)
                )
    print(f"medians of {repeats} run(s) ({load_text()}):")
    for name, values in per_round.items():
        roles = {who for run in cpu[name] for who in run}
        medians = {who: statistics.median(run.get(who, 0.0) for run in cpu[name]) for who in roles}
        print(
            f"  {name}: {statistics.median(values):.3f} s per round; CPU s "
            + ", ".join(f"{who} {s:.1f}" for who, s in sorted(medians.items(), key=lambda kv: -kv[1]))
        )
    ratio = statistics.median(per_round["ray"]) / statistics.median(per_round["local"])
    verdict = "PASS" if ratio <= RAY_TARGET else "MISS"
    print(f"Ray engine / local engine, seconds per round: {ratio:.2f}x [{verdict} target <= {RAY_TARGET}x]")
    if old is not None:
        old_ratio = statistics.median(per_round[f"ray on {before}"]) / statistics.median(per_round["local"])
        print(f"Ray engine on {before} / local engine: {old_ratio:.2f}x")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs of each engine, alternating")
    parser.add_argument("--before", metavar="REV", help="also run the Ray engine on git revision REV's code")
    parser.add_argument("--keep", type=Path, help="keep the results folders here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        bench_ray(args.keep or Path(scratch), args.repeats, args.before)


if __name__ == "__main__":
    main()
