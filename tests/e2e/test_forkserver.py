"""The fork server: peers forked from a pre-imported parent behave exactly like fresh ones, and are
stopped, reaped and cleaned up like any child of the launcher."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys

import psutil
import pytest

from fedgossip.config import PeerSection
from fedgossip.launcher.supervision.forkserver import early_fork_server, preload_for, start_fork_server
from fedgossip.launcher.supervision.processes import child_env
from tests.support import loopback_ports, metrics, run_cli, set_args, timeless, wait_for, write_node_config

SMALL = ["nodes.count=4", "experiment.rounds=3", "topology.kind=ring", "strategy.name=vca", "task.model=mlp"]


def lonely_peer(tmp_path, rounds=1000):
    """A node config whose only neighbour never answers: the peer waits, round after round."""
    own, silent = loopback_ports(2)
    peer = PeerSection(id=0, listen=f"127.0.0.1:{own}", neighbours={"1": f"127.0.0.1:{silent}"})
    return write_node_config(
        tmp_path / "node-0.toml", peer, f"experiment.rounds={rounds}", "experiment.round_timeout=30"
    )


def spawn_peer(server, config, lines):
    """Fork `fedgossip.client.gossip.peer CONFIG`, logging beside the config."""
    log = config.with_suffix(".log")
    return server.spawn(config.stem, "fedgossip.client.gossip.peer", [str(config)], log_path=log, lines=lines)


def next_event(lines: queue.Queue, timeout: float = 60) -> dict | None:
    _, line = lines.get(timeout=timeout)
    return None if line is None else json.loads(line)


@pytest.mark.timeout(300)
def test_forked_peers_give_bit_identical_metrics_to_fresh_ones(tmp_path):
    runs = {}
    for fork in ("true", "false"):
        out = tmp_path / f"fork-{fork}"
        result = run_cli("run", "--out", str(out), *set_args([*SMALL, f"launcher.fork_server={fork}"]))
        assert result.returncode == 0, result.stdout + result.stderr
        runs[fork] = timeless(metrics(out))
    assert (tmp_path / "fork-true" / "logs" / "forkserver.log").exists()
    assert not (tmp_path / "fork-false" / "logs" / "forkserver.log").exists()
    assert len(runs["true"]) == 12
    assert all(r["train_loss"] is not None and r["merged"] == 2 for r in runs["true"])
    assert runs["true"] == runs["false"]  # losses and accuracies to the last bit


PRELOADED = """
import json, sys
from fedgossip.launcher.supervision.forkserver import preload_for
from fedgossip.launcher.supervision.forkserver_process import load, unsafe_to_fork
load(preload_for("mlp", "digits"))
problem, before = unsafe_to_fork(), set(sys.modules)
import fedgossip.client.gossip.host, fedgossip.client.gossip.peer
print(json.dumps([problem, "grpc" in before, sorted(set(sys.modules) - before)]))
"""


@pytest.mark.timeout(120)
def test_the_preload_holds_every_module_of_a_peer_and_grpc_yet_no_thread():
    done = subprocess.run(
        [sys.executable, "-c", PRELOADED], capture_output=True, text=True, env=child_env(1), timeout=100
    )
    assert done.returncode == 0, done.stderr
    problem, grpc_loaded, imported = json.loads(done.stdout)
    assert problem is None  # gRPC's import started no thread: forking stays safe
    assert grpc_loaded
    assert imported == ["fedgossip.client.gossip.host", "fedgossip.client.gossip.peer"]  # the rest: preloaded


def fork_server_started() -> psutil.Process:
    """This process's fork server child, once it runs."""

    def server() -> psutil.Process | None:
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if "fedgossip.launcher.supervision.forkserver_process" in child.cmdline():
                    return child
        return None

    return wait_for(server, 30, "the early fork server")


@pytest.mark.timeout(120)
def test_an_early_fork_server_is_adopted_by_its_run_and_stopped_by_any_other(tmp_path):
    preload, env = preload_for("linear"), child_env(1)
    with early_fork_server(preload, env):
        early = fork_server_started()
        with start_fork_server(preload, tmp_path / "adopted.log", env) as server:
            assert server.process.pid == early.pid  # the same process, no second import
        assert "preloaded" in (tmp_path / "adopted.log").read_text()
    with early_fork_server(preload, env):
        early = fork_server_started()
        other = child_env(1, {"FEDGOSSIP_OTHER_RUN": "1"})
        with start_fork_server(preload, tmp_path / "other.log", other) as server:
            assert server.process.pid != early.pid  # its children would get another environment
            early.wait(30)  # stopped at once, not at the end of the run
    with early_fork_server(preload, env):
        early = fork_server_started()
    early.wait(30)  # never adopted (the run failed before its engine): stopped with the block
    with early_fork_server(preload, env):  # the CLI's, then the run's own (`execute`) inside it
        early = fork_server_started()
        with early_fork_server(preload, env):
            with start_fork_server(preload, tmp_path / "nested.log", env) as server:
                assert server.process.pid == early.pid  # one server started, and adopted
            assert [c.pid for c in psutil.Process().children() if "forkserver" in " ".join(c.cmdline())] == []


@pytest.mark.timeout(120)
def test_a_forked_child_reports_its_output_log_and_exit_status(tmp_path):
    lines: queue.Queue = queue.Queue()
    with start_fork_server(preload_for("linear"), tmp_path / "server.log", child_env(1)) as server:
        child = spawn_peer(server, tmp_path / "missing.toml", lines)
        event = next_event(lines)
        assert event["type"] == "error" and "config file not found" in event["error"]
        assert next_event(lines) is None  # the stdout pipe closes when the child exits
        assert child.wait(30) == 2
        assert child.stop() == 2
    assert "config file not found" in child.log_tail()


@pytest.mark.timeout(120)
def test_a_forked_peer_is_stopped_by_pid_through_its_shutdown(tmp_path):
    config = lonely_peer(tmp_path)
    lines: queue.Queue = queue.Queue()
    with start_fork_server(preload_for("mlp", "digits"), tmp_path / "server.log", child_env(1)) as server:
        child = spawn_peer(server, config, lines)
        try:
            assert next_event(lines)["type"] == "ready"
            process = psutil.Process(child.pid)
            assert process.ppid() == server.process.pid  # forked, not started afresh
            assert child.poll() is None
        finally:
            code = child.stop(grace=20)
    assert code == 128 + signal.SIGTERM  # the peer's Shutdown ended it, not the default action
    assert not psutil.pid_exists(child.pid) or process.status() == psutil.STATUS_ZOMBIE


LAUNCHER = """
import json, queue, sys, time
from pathlib import Path
from fedgossip.launcher.supervision.forkserver import preload_for, start_fork_server
from fedgossip.launcher.supervision.processes import child_env
tmp, config = Path(sys.argv[1]), sys.argv[2]
lines = queue.Queue()
with start_fork_server(preload_for("linear"), tmp / "server.log", child_env(1)) as server:
    peer = "fedgossip.client.gossip.peer"
    child = server.spawn("node-0", peer, [config], log_path=tmp / "n.log", lines=lines)
    lines.get(timeout=60)
    print(json.dumps([server.process.pid, child.pid]), flush=True)
    time.sleep(600)
"""


@pytest.mark.timeout(120)
def test_forked_peers_die_with_their_launcher(tmp_path):
    config = lonely_peer(tmp_path)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path), str(config)],
        stdout=subprocess.PIPE,
        env=child_env(1),
        start_new_session=True,
    )
    pids = []
    try:
        pids = json.loads(launcher.stdout.readline())
        processes = [psutil.Process(pid) for pid in pids]
        launcher.kill()  # no cleanup at all: only the fork server's and its children's own rules act
        launcher.wait(30)

        def gone() -> bool:
            return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)

        wait_for(gone, 20, "the fork server and its peer to exit")
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.stdout.close()
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
