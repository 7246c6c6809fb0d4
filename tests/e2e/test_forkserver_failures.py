"""A fork server that fails (killed while it imports or while it forks, no inode left for a node's
log) ends `fedgossip run` with one `failed:` line naming the cause and exit 1, no traceback; the
run's folder is removed (nothing was recorded), so the same command then runs. One killed mid-run
is named in every node's exit."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.support import rounds_done, run_cli, set_args, start_cli, wait_for
from tests.support.disks import small_disk

SMALL = ["nodes.count=4", "topology.kind=ring", "experiment.rounds=2", "task.model=linear"]


def fork_server_of(launcher: subprocess.Popen) -> psutil.Process | None:
    """The launcher's fork server process, once started."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(launcher.pid).children():
            if "fedgossip.launcher.supervision.forkserver_process" in child.cmdline():
                return child
    return None


def finish(launcher: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    """The exit status and output of `launcher` (killed if it does not end in time)."""
    try:
        output, _ = launcher.communicate(timeout=timeout)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    return launcher.returncode, output.decode(errors="replace")


def assert_one_failed_line(code: int, output: str, *causes: str) -> str:
    """Exit 1, no traceback, one `failed:` line (and no `error:` one) naming every one of `causes`."""
    assert code == 1, output
    assert "Traceback" not in output, output
    failed = [line for line in output.splitlines() if line.startswith(("failed:", "error:"))]
    assert len(failed) == 1 and failed[0].startswith("failed: "), output
    for cause in causes:
        assert cause in failed[0], output
    return failed[0]


def assert_the_same_command_runs(out: Path) -> None:
    again = run_cli("run", "--out", str(out), *set_args(SMALL), timeout=150)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "summary.json").exists()


@pytest.mark.timeout(240)
def test_a_fork_server_killed_while_it_imports_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # the message checked on one line
    out = tmp_path / "run"
    launcher = start_cli("run", "--out", str(out), settings=SMALL)
    try:
        server = wait_for(lambda: fork_server_of(launcher), 60, "the fork server to start", interval=0.002)
        server.suspend()  # held before its imports end: the kill below lands while it imports
        log_path = out / "logs" / "forkserver.log"  # made when the run adopts its early fork server
        log = wait_for(lambda: log_path.exists() and log_path.read_text() + " ", 60, "the fork server's log")
        assert "preloaded" not in log, log
        server.kill()
    finally:
        code, output = finish(launcher)
    line = assert_one_failed_line(code, output, "the fork server failed while importing", "SIGKILL")
    assert str(server.pid) in line
    assert not out.exists()  # the run created it and recorded nothing
    assert_the_same_command_runs(out)


@pytest.mark.timeout(240)
def test_a_fork_server_killed_while_it_forks_is_one_line_and_stops_the_nodes_it_forked(tmp_path, monkeypatch):
    """node-2's log is a FIFO nobody reads: the fork server blocks opening it, after forking
    node-0 and node-1, and is killed there."""
    monkeypatch.setenv("COLUMNS", "1000")
    out = tmp_path / "run"
    (out / "logs").mkdir(parents=True)
    os.mkfifo(out / "logs" / "node-2.log")
    launcher = start_cli("run", "--out", str(out), settings=SMALL)
    forked: list[psutil.Process] = []
    try:
        server = wait_for(lambda: fork_server_of(launcher), 60, "the fork server to start", interval=0.01)
        forked = wait_for(lambda: len(server.children()) == 2 and server.children(), 60, "node-0 and node-1")
        server.kill()
    finally:
        code, output = finish(launcher)
    assert_one_failed_line(code, output, "could not fork node-2", "SIGKILL")
    wait_for(
        lambda: not any(p.is_running() and p.status() != "zombie" for p in forked), 30, "the nodes to end"
    )
    assert sorted(path.name for path in out.iterdir()) == ["logs"]  # only what was there before
    (out / "logs" / "node-2.log").unlink()
    assert_the_same_command_runs(out)


@pytest.fixture
def logs_without_inodes(tmp_path) -> Path:
    """A results folder whose logs/ is a tmpfs with inodes for the fork server's log and one
    node's only; unmounted at the end (lazily)."""
    with small_disk(tmp_path / "run" / "logs", "1m", inodes=3) as logs:
        yield logs


@pytest.mark.timeout(240)
def test_no_inode_for_a_nodes_log_is_one_line_naming_the_file(logs_without_inodes, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    out = logs_without_inodes.parent
    result = run_cli("run", "--out", str(out), *set_args(SMALL), timeout=150)
    log = logs_without_inodes / "node-1.log"
    assert_one_failed_line(
        result.returncode, result.stdout + result.stderr, "could not fork node-1", "No space left", str(log)
    )
    assert sorted(path.name for path in out.iterdir()) == ["logs"]
    subprocess.run(["umount", "-l", str(logs_without_inodes)], capture_output=True, timeout=30)
    assert_the_same_command_runs(out)


@pytest.mark.timeout(240)
def test_a_fork_server_killed_mid_run_is_named_in_every_nodes_exit(tmp_path):
    out = tmp_path / "run"
    settings = [*SMALL, "experiment.rounds=500"]
    launcher = start_cli("run", "--out", str(out), settings=settings)
    try:
        server = wait_for(lambda: fork_server_of(launcher), 60, "the fork server to start", interval=0.01)
        wait_for(lambda: min(rounds_done(out, n) for n in range(4)) >= 2, 120, "every node to finish round 2")
        server.kill()
    finally:
        code, output = finish(launcher, timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    assert (code, summary["status"]) == (1, "failed"), output
    assert summary["dead_nodes"] == [0, 1, 2, 3]
    killed = f"the fork server (pid {server.pid}) was killed by SIGKILL before reporting this node's exit"
    assert len(summary["errors"]) == 4 and all(killed in error for error in summary["errors"]), summary[
        "errors"
    ]
