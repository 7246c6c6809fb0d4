"""One command per results or sweep folder: two commands released at the same instant into one
folder, again and again, and exactly one runs while the other is refused (exit 2, one `error:`
line) without touching the first's records; a claim left by a SIGKILLed command is reported as
stale and the same command works as before (a sweep resumes, a run's folder is refused)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from fedgossip.launcher.runs.claim import CLAIM
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.launcher.supervision.proctree import descendants, stop
from tests.support import (
    metrics,
    released_together,
    rounds_done,
    run_cli,
    run_status,
    set_args,
    start_cli,
    wait_for,
)

TINY = ("task.model=linear", "nodes.count=2", "experiment.rounds=2", "topology.kind=ring")
# the races: the claim is taken before any node starts and held to the end of the run, whatever its
# engine; on the virtual-time engine (one process) each trial's run costs a fraction of peer processes
RACE = (*TINY, "launcher.engine=simulation")
TRIALS = 5
IN_USE = "is in use by another fedgossip command (pid "


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at 80 columns when not on a terminal; messages are checked on one line."""
    monkeypatch.setenv("COLUMNS", "1000")


def one_ran_one_refused(results: list[subprocess.CompletedProcess], refusals: tuple[str, ...]) -> None:
    """Exactly one command ended 0; the other exited 2 with one `error:` line naming why."""
    outputs = "\n---\n".join(result.stdout for result in results)
    assert sorted(result.returncode for result in results) == [0, 2], outputs
    (refused,) = [result for result in results if result.returncode == 2]
    errors = [line for line in refused.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and any(reason in errors[0] for reason in refusals), outputs
    assert "Traceback" not in outputs, outputs


def assert_whole_run(out: Path) -> None:
    """The run in `out` is complete, each (node, round) recorded once, and its claim released."""
    pairs = collections.Counter((r["node"], r["round"]) for r in metrics(out))
    assert pairs == {(node, round_): 1 for node in (0, 1) for round_ in (1, 2)}, pairs
    assert run_status(out) == "complete"
    assert not (out / CLAIM).exists()


@pytest.mark.timeout(400)
def test_two_runs_into_one_folder_released_together_one_runs_the_other_is_refused(tmp_path):
    for trial in range(TRIALS):
        out = tmp_path / f"run-{trial}"
        command = ["run", "--out", str(out), *set_args(RACE)]
        results = released_together(tmp_path / f"gate-{trial}", [command, command])
        one_ran_one_refused(results, (IN_USE, "already holds a run"))
        assert_whole_run(out)


@pytest.mark.timeout(500)
def test_two_sweeps_into_one_folder_released_together_one_runs_the_other_is_refused(tmp_path):
    for trial in range(TRIALS):
        out = tmp_path / f"sweep-{trial}"
        command = ["sweep", "--out", str(out), "--grid", "strategy.name=average", *set_args(RACE)]
        results = released_together(tmp_path / f"gate-{trial}", [command, command])
        one_ran_one_refused(results, (IN_USE,))
        (winner,) = [result for result in results if result.returncode == 0]
        assert "strategy.name=average_seed=0: complete" in winner.stdout, winner.stdout
        record = json.loads((out / "sweep.json").read_text())
        (run,) = record["runs"]
        assert (run["status"], run["exit_code"], run["skipped"]) == ("complete", 0, False)
        assert_whole_run(out / "strategy.name=average_seed=0")
        assert not (out / CLAIM).exists()


@pytest.mark.timeout(300)
def test_a_sweep_killed_with_sigkill_leaves_a_stale_claim_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "sweep"
    settings = (*TINY[:-2], "experiment.rounds=6", "topology.kind=ring")
    args = ("sweep", "--grid", "strategy.name=average", "--seeds", "2", "--jobs", "1", "--out", str(out))
    first = out / "strategy.name=average_seed=0"
    sweep = start_cli(*args, settings=settings)
    tree: dict[int, psutil.Process] = {}
    try:
        wait_for(lambda: (first / "processes.json").exists(), 120, "the first run's nodes to start")
        tree.update((proc.pid, proc) for proc in descendants([sweep.pid]))
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.communicate(timeout=30)
        assert (out / CLAIM).exists()  # left behind, unlocked: the kernel dropped the lock

        again = run_cli(*args, *set_args(settings), timeout=240)
        output = again.stdout + again.stderr
        assert again.returncode == 0, output
        assert f"{out} was claimed by a command that died (pid {sweep.pid}, started " in output, output
        record = json.loads((out / "sweep.json").read_text())
        assert [r["status"] for r in record["runs"]] == ["complete", "complete"]
        assert not (out / CLAIM).exists() and not (first / CLAIM).exists()
    finally:
        tree.update((proc.pid, proc) for proc in descendants([sweep.pid]))
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.communicate()
        stop(tree.values(), grace=5)


HOLD = """
import signal, sys
from fedgossip.launcher.runs.claim import FolderClaim
claim = FolderClaim(sys.argv[1])
print("claimed", flush=True)
signal.pause()
"""


@pytest.mark.timeout(300)
def test_a_run_killed_with_sigkill_is_named_and_a_stale_claim_on_an_empty_folder_is_taken_over(tmp_path):
    out = tmp_path / "run"
    settings = (*TINY[:-2], "experiment.rounds=40", "topology.kind=ring")
    launcher = start_cli("run", "--out", str(out), settings=settings)
    tree: dict[int, psutil.Process] = {}
    try:
        wait_for(lambda: rounds_done(out, 0) >= 1, 120, "node 0 to finish a round")
        tree.update((proc.pid, proc) for proc in descendants([launcher.pid]))
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.communicate(timeout=30)
        before = (out / "metrics.jsonl").read_bytes()
        rerun = run_cli("run", "--out", str(out), *set_args(settings))
        assert rerun.returncode == 2 and "Traceback" not in rerun.stdout + rerun.stderr, rerun.stdout
        assert (
            f"error: {out} already holds a run, left unfinished by a command that died (pid {launcher.pid}, "
            in rerun.stdout
        ), rerun.stdout
        assert (out / "metrics.jsonl").read_bytes()[: len(before)] == before
    finally:
        tree.update((proc.pid, proc) for proc in descendants([launcher.pid]))
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
        stop(tree.values(), grace=5)

    empty = tmp_path / "empty"
    empty.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(empty)], stdout=subprocess.PIPE, env=child_env(1), text=True
    )
    try:
        assert holder.stdout.readline().strip() == "claimed"
        refused = run_cli("run", "--out", str(empty), *set_args(TINY))
        assert refused.returncode == 2 and f"error: {empty} {IN_USE}{holder.pid}" in refused.stdout
        holder.kill()
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    rerun = run_cli("run", "--out", str(empty), *set_args(TINY))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{empty} was claimed by a command that died (pid {holder.pid}, started " in rerun.stdout
    assert_whole_run(empty)
