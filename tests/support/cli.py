"""`fedgossip` run as a user runs it, in a subprocess: its results folders and records, waits
with timeouts, interrupts (SIGINT) and kills in the middle of a run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fedgossip.client.gossip.transport.identity import LinkKeys
from fedgossip.config import load_config
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.launcher.supervision.proctree import descendants
from fedgossip.reports import read_records

RECORD_FIELDS = frozenset(
    {
        "node",
        "round",
        "time_s",
        "train_loss",
        "test_loss",
        "test_accuracy",
        "num_examples",
        "bytes_sent",
        "bytes_received",
    }
)
"""Keys every metrics record has, in every mode (DESIGN.md's contract)."""

REPO = Path(__file__).resolve().parents[2]
"""The repository's root (README, examples, benchmarks, proto)."""


def cli_argv(*args: str, settings: Sequence[str] = ()) -> list[str]:
    """argv of `fedgossip ARGS --set S ...` run with this interpreter."""
    argv = [sys.executable, "-m", "fedgossip.launcher.cli", *args]
    for item in settings:
        argv += ["--set", item]
    return argv


def start_cli(*args: str, settings: Sequence[str] = ()) -> subprocess.Popen:
    """Start `fedgossip ARGS` in its own session (so a test can signal it alone); output piped."""
    return subprocess.Popen(
        cli_argv(*args, settings=settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(1),
        start_new_session=True,
    )


def run_cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    """Run `fedgossip ARGS` in a subprocess (killed on timeout) and return its result."""
    return subprocess.run(
        cli_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(1),
    )


def metrics(run_dir: Path) -> list[dict]:
    """The metrics records of a results folder (a line being written is skipped)."""
    return read_records(run_dir)


def run_status(run_dir: Path) -> str | None:
    """The status in a run folder's summary.json (None while the run has not written it)."""
    try:
        return json.loads((run_dir / "summary.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def interrupt_in_second_run(
    launcher: subprocess.Popen, first: Path, second: Path, tree: dict
) -> tuple[str, list[int], bytes]:
    """Wait until run folder `first` is complete and the nodes of `second` started, add the
    launcher's processes to `tree` (PID -> psutil.Process), then SIGINT the launcher and wait for
    it: its output, the PIDs of `second`'s nodes, and `first`'s metrics.jsonl as it was."""
    wait_for(lambda: run_status(first) == "complete", 120, "the first run to finish")
    wait_for(lambda: (second / "processes.json").exists(), 60, "the second run's nodes to start")
    tree.update((proc.pid, proc) for proc in descendants([launcher.pid]))
    nodes = list(json.loads((second / "processes.json").read_text()).values())
    first_metrics = (first / "metrics.jsonl").read_bytes()
    launcher.send_signal(signal.SIGINT)
    return launcher.communicate(timeout=90)[0].decode(), nodes, first_metrics


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def launched(out: Path, settings: Sequence[str]):
    """`fedgossip run --out OUT` in the background; interrupted (SIGINT) and reaped when done."""
    launcher = start_cli("run", "--out", str(out), settings=settings)
    try:
        yield launcher
    finally:
        interrupt(launcher)


def interrupt(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGINT a CLI process started by `start_cli` if it still runs and reap it; SIGKILL its
    process group if it has not exited after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def node_config(out: Path, node: int):
    """The node config the launcher wrote for `node` (its [peer] section says port and keys)."""
    return load_config(out / "nodes" / f"node-{node}.toml")


def peer_address(out: Path, node: int) -> str:
    return node_config(out, node).peer.listen


def keys_of(out: Path, node: int) -> LinkKeys:
    """A launched node's link keys: what an attacker who took over that node holds."""
    return LinkKeys.load(out / "secrets" / f"node-{node}.links", node)


def rounds_done(out: Path, node: int) -> int:
    """The last round `node` recorded so far (0 before any)."""
    if not (out / "metrics.jsonl").exists():
        return 0
    return max((r["round"] for r in metrics(out) if r["node"] == node), default=0)


def set_args(items: Sequence[str]) -> list[str]:
    """`--set ITEM` for each of `items`."""
    return [arg for item in items for arg in ("--set", item)]


def timeless(records: list[dict]) -> list[dict]:
    """What records say that does not depend on timing: all but time_s, in (node, round) order."""
    return sorted(
        ({k: v for k, v in r.items() if k != "time_s"} for r in records),
        key=lambda r: (r["node"], r["round"]),
    )


def kill_during_run(out: Path, settings: Sequence[str], node: int, process: str, before_kill=None, kill=None):
    """Run `fedgossip run --out OUT` with `settings`, SIGKILL the process named `process` in
    processes.json (or call `kill(process)`) once `node` finished round 2 (after calling
    `before_kill(processes)`), and wait for the launcher; returns its exit status and output."""
    launcher = start_cli("run", "--out", str(out), settings=settings)

    def finished_round_2() -> bool:
        assert launcher.poll() is None, "the launcher ended early"
        return (out / "metrics.jsonl").exists() and any(
            r["node"] == node and r["round"] == 2 for r in metrics(out)
        )

    try:
        wait_for(finished_round_2, 120, f"node {node} to finish round 2")
        processes = json.loads((out / "processes.json").read_text())
        if before_kill is not None:
            before_kill(processes)
        if kill is None:
            os.kill(processes[process], signal.SIGKILL)
        else:
            kill(process)
        output, _ = launcher.communicate(timeout=180)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
    return launcher.returncode, output.decode(errors="replace")
