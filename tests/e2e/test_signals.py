"""Signals and supervision for real: SIGTERM of the launcher is handled like Ctrl-C (status
"interrupted", exit 143, no traceback anywhere), and after a SIGKILL of the launcher the watchdog
leaves no process of the run (peers, Flower's SuperLink, SuperNodes, SuperExecs, ServerApp and
ClientApps, orphans that called setsid) alive for more than 2 s. The processes of a run are the
launcher's descendants seen while it ran plus the PIDs in its processes.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedgossip.config import PeerSection
from fedgossip.launcher.supervision.processes import child_env
from tests.support import cli_argv, loopback_ports, metrics, start_peer, wait_for, write_node_config

KILL_BUDGET_S = 2.0
GOSSIP = ["nodes.count=4", "experiment.rounds=500", "experiment.round_timeout=20"]  # the quickstart's MLP
LINEAR = [*GOSSIP, "experiment.rounds=100000", "task.model=linear"]  # ~10 ms rounds, no torch: starts fast
FLOWER = [
    "experiment.mode=flower",
    "flower.engine=deployment",
    "nodes.count=2",
    "experiment.rounds=50",
    "task.model=linear",
    "flower.fraction_evaluate=0.0",
    "flower.startup_timeout=60",
    "flower.round_timeout=60",
]


class Run:
    """`fedgossip run` in its own session, output to a file, every process it starts remembered."""

    def __init__(self, tmp_path: Path, settings: list[str]) -> None:
        self.out = tmp_path / "run"
        self.output = tmp_path / "launcher.log"
        with open(self.output, "wb") as log:
            self.launcher = subprocess.Popen(
                cli_argv("run", "--out", str(self.out), settings=settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(1),
                start_new_session=True,
            )
        self.root = psutil.Process(self.launcher.pid)
        self.seen: dict[int, psutil.Process] = {}

    def scan(self) -> set[str]:
        """Remember the launcher's current descendants; return the names of all seen so far."""
        try:
            for proc in self.root.children(recursive=True):
                self.seen.setdefault(proc.pid, proc)
        except psutil.NoSuchProcess:
            pass
        return {_name(p) for p in self.seen.values()}

    def wait_until(self, predicate, timeout: float, what: str) -> None:
        """Scan while waiting for `predicate()`; fail if the launcher ends first."""

        def check():
            assert self.launcher.poll() is None, self.text()
            self.scan()
            return predicate()

        wait_for(check, timeout, what, interval=0.1)

    def records(self) -> list[dict]:
        return metrics(self.out) if (self.out / "metrics.jsonl").exists() else []

    def processes(self) -> list[psutil.Process]:
        """Every process of the run seen so far, with the ones named in processes.json."""
        procs = dict(self.seen)
        names = self.out / "processes.json"
        for name, pid in (json.loads(names.read_text()) if names.exists() else {}).items():
            if name != "flower_run_id" and pid not in procs:
                try:
                    procs[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    continue
        return list(procs.values())

    def left(self) -> list[str]:
        """The processes of the run that still run."""
        return [f"{_name(p)}-{p.pid}" for p in self.processes() if _running(p)]

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def cleanup(self) -> None:
        """Kill whatever is left (only on failure is anything left)."""
        with_launcher = [*self.processes(), self.root]
        for proc in with_launcher:
            if _running(proc):
                proc.kill()
        self.launcher.wait(10)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "gone"


def _node_rounds(run: Run, rounds: int) -> bool:
    return sum(1 for r in run.records() if isinstance(r["node"], int)) >= rounds


def _assert_interrupted(run: Run, code: int, records_before: list[dict]) -> None:
    """Exit status, summary, kept rounds, nothing left, no traceback anywhere."""
    assert code == 143, run.text()
    summary = json.loads((run.out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["rounds_completed"] >= 1
    kept = run.records()
    assert kept[: len(records_before)] == records_before  # finished rounds stay on disk
    assert "interrupted" in run.text() and "Traceback" not in run.text()
    for log in (run.out / "logs").iterdir():
        # strict for Flower's logs too: each of its processes gets one SIGTERM (leaves first), so
        # CPython's "Signal 15 ignored due to race condition" (a second signal) cannot appear
        assert "Traceback" not in log.read_text(errors="replace"), log.name
    wait_for(lambda: not run.left(), 5, "every process of the run to be gone")


def _sigterm(run: Run, repeats: int = 0) -> int:
    """SIGTERM the launcher (and again `repeats` times during its shutdown, 0.1 s apart: a gossip
    launcher's shutdown takes about 0.5 s on an idle machine); its exit status."""
    run.launcher.send_signal(signal.SIGTERM)
    for _ in range(repeats):
        time.sleep(0.1)
        assert run.launcher.poll() is None, "the shutdown ended before the repeated signals"
        run.launcher.send_signal(signal.SIGTERM)
        run.launcher.send_signal(signal.SIGINT)
    return run.launcher.wait(90)


def _sigkill_and_time(run: Run) -> float:
    """SIGKILL the launcher; seconds until no process of the run runs (fails beyond the budget)."""
    procs = run.processes()
    assert procs, "no process of the run was seen"
    killed = time.monotonic()
    run.launcher.kill()
    wait_for(lambda: not [p for p in procs if _running(p)], KILL_BUDGET_S, "the run's processes to go", 0.02)
    return time.monotonic() - killed


@pytest.mark.timeout(90)
def test_sigterm_of_a_gossip_launcher_is_a_clean_interrupt_even_repeated(tmp_path):
    run = Run(tmp_path, GOSSIP)
    try:
        run.wait_until(lambda: _node_rounds(run, 8), 60, "two rounds of every peer")
        before = run.records()
        assert {f"node-{i}" for i in range(4)} <= json.loads((run.out / "processes.json").read_text()).keys()
        _assert_interrupted(run, _sigterm(run, repeats=2), before)  # SIGTERM, SIGINT again while stopping
    finally:
        run.cleanup()


@pytest.mark.timeout(90)
def test_sigkill_of_a_gossip_launcher_leaves_no_process(tmp_path):
    run = Run(tmp_path, LINEAR)
    try:
        run.wait_until(lambda: _node_rounds(run, 4), 60, "the first round")
        names = run.scan()
        assert any(name.startswith("python") for name in names), names
        assert _sigkill_and_time(run) <= KILL_BUDGET_S
    finally:
        run.cleanup()


@pytest.mark.timeout(120)
def test_sigterm_of_a_flower_launcher_is_a_clean_interrupt(tmp_path):
    run = Run(tmp_path, FLOWER)
    try:
        run.wait_until(lambda: _node_rounds(run, 2), 100, "round 1 of both SuperNodes")
        before = run.records()
        _assert_interrupted(run, _sigterm(run), before)
    finally:
        run.cleanup()


@pytest.mark.timeout(120)
def test_sigkill_of_a_flower_launcher_leaves_no_process(tmp_path):
    run = Run(tmp_path, FLOWER)
    wanted = {"flower-superlin", "flower-supernod", "flower-superexe", "flwr-serverapp", "flwr-clientapp"}
    try:  # (process names as the kernel keeps them: 15 characters)
        run.wait_until(lambda: wanted <= {n[:15] for n in run.scan()}, 100, f"{sorted(wanted)} to run")
        assert _sigkill_and_time(run) <= KILL_BUDGET_S
    finally:
        run.cleanup()


GRANDCHILD = "import time; time.sleep(60)"
CHILD = f"""
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}], start_new_session=True)
open(sys.argv[1], "w").write(str(grandchild.pid))
time.sleep(1.0)  # then exit: the grandchild, in a session of its own, is re-parented to init
"""
LAUNCHER = f"""
import sys, time
from fedgossip.launcher.supervision.processes import Child, child_env, supervised
with supervised() as children:
    argv = [sys.executable, "-c", {CHILD!r}, sys.argv[1]]
    children.append(Child("child", argv, log_path=sys.argv[2], env=child_env()))
    time.sleep(60)
"""


@pytest.mark.timeout(30)
def test_the_watchdog_stops_orphans_that_called_setsid(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(pid_file), str(tmp_path / "child.log")],
        env=child_env(1),
        start_new_session=True,
    )
    root = psutil.Process(launcher.pid)
    seen: list[psutil.Process] = []
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20, "the grandchild")
        grandchild = psutil.Process(int(pid_file.read_text()))
        watchdog = next(
            p for p in root.children() if "fedgossip.launcher.supervision.watchdog" in p.cmdline()
        )
        seen = [grandchild, watchdog]
        wait_for(
            lambda: grandchild.ppid() not in (launcher.pid, *[p.pid for p in root.children()]), 20, "orphan"
        )
        assert os.getsid(grandchild.pid) == grandchild.pid and _running(grandchild)
        launcher.kill()
        started = time.monotonic()
        wait_for(lambda: not [p for p in seen if _running(p)], KILL_BUDGET_S, "the orphan to go", 0.02)
        assert time.monotonic() - started <= KILL_BUDGET_S
    finally:
        for proc in [*seen, root]:
            if _running(proc):
                proc.kill()
        launcher.wait(10)


@pytest.mark.timeout(60)
def test_a_peer_stops_once_and_quietly_on_repeated_signals(tmp_path):
    own, silent = loopback_ports(2)  # the neighbour never comes: the peer waits in round 1
    peer = PeerSection(id=0, listen=f"127.0.0.1:{own}", neighbours={"1": f"127.0.0.1:{silent}"})
    config = write_node_config(tmp_path / "node.toml", peer, "task.model=linear", "nodes.count=2")
    child = start_peer(config, tmp_path / "peer.log")
    try:
        wait_for(lambda: '"ready"' in child.log_path.read_text(), 30, "the peer to be ready")
        for signum in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
            child.process.send_signal(signum)
            time.sleep(0.05)
        code = child.process.wait(20)
    finally:
        child.stop()
    log = child.log_path.read_text()
    assert code == 143, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log


@pytest.mark.timeout(30)
def test_scan_new_finds_the_new_descendants_a_full_scan_finds(tmp_path):
    """The watchdog's cheap look (only the processes that appeared since the last one) still finds a
    child and its grandchild in a session of its own, as a full walk of the process table does."""
    from fedgossip.launcher.supervision.proctree import ProcessTracker

    me = os.getpid()
    cheap, full = ProcessTracker(exclude={me}), ProcessTracker(exclude={me})
    cheap.scan_new([me])  # the first look reads every process
    pid_file = tmp_path / "grandchild.pid"
    child = subprocess.Popen([sys.executable, "-c", CHILD.replace("1.0", "30"), str(pid_file)])
    grandchild = None
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20, "the grandchild")
        grandchild = psutil.Process(int(pid_file.read_text()))
        cheap.scan_new([me])
        full.scan([me])
        assert {child.pid, grandchild.pid} <= cheap.known.keys()
        assert full.known.keys() <= cheap.known.keys()
        assert cheap.sessions >= {grandchild.pid}
    finally:
        for proc in (grandchild, psutil.Process(child.pid)):
            if proc is not None and _running(proc):
                proc.kill()
        child.wait(10)
