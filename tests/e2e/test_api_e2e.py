"""The Python API on real runs: a run from a dict gives the CLI's records for the same config and
seed; a stopped handle leaves no process; a Jupyter kernel interrupted during a blocking run (the
notebook's stop button: SIGINT to the kernel) stops every process of the run, the cell raises
KeyboardInterrupt, and the kernel goes on with its handler in place."""

from __future__ import annotations

import json
import signal
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


CELL = """
import signal
import fedgossip.api as fg
before = signal.getsignal(signal.SIGINT)
fg.run(None, out=OUT, nodes={"count": 4}, experiment={"rounds": 40})
"""


def test_interrupting_a_notebook_cell_stops_the_run_and_the_kernel_goes_on(tmp_path):
    """A real Jupyter kernel: its interrupt (what the stop button sends) during a blocking run."""
    manager = pytest.importorskip("jupyter_client").KernelManager(kernel_name="python3")
    out = tmp_path / "run"
    manager.start_kernel(cwd=str(tmp_path), env=child_env(1))
    try:
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        client.execute(f"OUT = {str(out)!r}\n" + CELL)
        wait_for(
            lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size,
            90,
            "the first record",
        )
        manager.interrupt_kernel()
        reply = _reply(client)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
        assert "run interrupted: every node process was stopped" in reply["evalue"]
        assert alive(out) == {}
        assert fg.Results(out).status == "interrupted"
        asked = client.execute("print(signal.getsignal(signal.SIGINT) is before)")
        assert _reply(client)["status"] == "ok"  # the kernel goes on, its handler back in place
        assert _printed(client, asked).strip() == "True"
    finally:
        manager.shutdown_kernel(now=True)


def _reply(client) -> dict:
    """The content of the next execute reply on the shell channel."""
    while True:
        message = client.get_shell_msg(timeout=90)
        if message["msg_type"] == "execute_reply":
            return message["content"]


def _printed(client, msg_id: str) -> str:
    """What the cell `msg_id` printed (its iopub stream messages, up to the kernel going idle)."""
    text = ""
    while True:
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            text += message["content"]["text"]
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return text
