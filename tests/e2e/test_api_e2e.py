"""The Python API on real runs: a run from a dict gives the CLI's records for the same config and
seed; a stopped handle leaves no process; Ctrl-C (SIGINT, what a notebook's interrupt sends its
kernel) during a blocking run stops every process of the run, raises KeyboardInterrupt and leaves
the caller's handler in place."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import fedgossip.api as fg
from fedgossip.config import QUICKSTART
from fedgossip.config.experiment import read_config_data
from fedgossip.launcher.supervision.processes import child_env
from tests.support import run_cli, timeless, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TINY = ["nodes.count=4", "experiment.rounds=2"]
LONG = {"nodes": {"count": 4}, "experiment": {"rounds": 40}}


def alive(run: Path) -> dict[str, int]:
    """The processes of a run (its processes.json) still alive."""
    pids = json.loads((run / "processes.json").read_text())
    return {name: pid for name, pid in pids.items() if psutil.pid_exists(pid) and _running(pid)}


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_run_from_a_dict_gives_the_records_of_the_cli(tmp_path):
    done = run_cli("run", "--out", str(tmp_path / "cli"), *[a for s in TINY for a in ("--set", s)])
    assert done.returncode == 0, done.stderr[-2000:]
    data = read_config_data(QUICKSTART)
    data["nodes"]["count"], data["experiment"]["rounds"] = 4, 2
    results = fg.run(data, out=tmp_path / "api")
    assert results.status == "complete"
    cli = fg.Results(tmp_path / "cli").records.to_dict("records")
    api = results.records.to_dict("records")
    assert len(api) == 8
    assert timeless(api) == timeless(cli)


def test_a_stopped_handle_leaves_no_process(tmp_path):
    handle = fg.start(None, out=tmp_path / "run", **LONG)
    try:
        wait_for(lambda: handle.records_written >= 4, 90, "the first round's records")
        assert handle.poll() is None
        assert alive(tmp_path / "run")  # the nodes are up
        results = handle.stop()
    finally:
        handle.stop()
    assert handle.exit_code == 128 + signal.SIGTERM
    assert not psutil.pid_exists(handle.pid) or not _running(handle.pid)
    assert alive(tmp_path / "run") == {}
    assert results.status == "interrupted"
    assert 4 <= len(results.records) < 160


SCRIPT = """
import signal, sys
import fedgossip.api as fg
before = signal.getsignal(signal.SIGINT)
try:
    fg.run(None, out=sys.argv[1], nodes={"count": 4}, experiment={"rounds": 40})
except KeyboardInterrupt as err:
    print("KeyboardInterrupt:", err)
print("handler kept:", signal.getsignal(signal.SIGINT) is before)
"""


def test_ctrl_c_in_a_blocking_run_stops_its_processes_and_raises(tmp_path):
    out = tmp_path / "run"
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(1),
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size,
            90,
            "the first record",
        )
        script.send_signal(signal.SIGINT)
        output = script.communicate(timeout=60)[0].decode()
    finally:
        if script.poll() is None:
            script.kill()
            script.communicate()
    assert script.returncode == 0, output[-2000:]
    assert "KeyboardInterrupt: run interrupted: every node process was stopped" in output
    assert "handler kept: True" in output
    assert alive(out) == {}
    assert fg.Results(out).status == "interrupted"
