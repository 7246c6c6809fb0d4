"""Flower's simulation engine (Ray) through `fedgossip run`: Flower's in-process simulation entry in
one child process of the launcher (launcher/flower/simulation.py). Its seeded records equal the
in-process engine's (which equal the deployment engine's: test_flower_deployment.py), also when
another Ray cluster of this machine is announced (a run starts its own Ray), and Ctrl-C stops it
with 130 and no process left, Ray's included. Each run starts Ray: ~15-30 s on 2 cores."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from fedgossip.base.flower_protocol import load_model
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.launcher.supervision.proctree import alive, descendants
from fedgossip.reports import read_records
from tests.support import cli_argv, ctrl_c_after_round_1, run_cli, run_inprocess, set_args

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs fedgossip[simulation]")

SIMULATION = [
    "experiment.mode=flower",
    "flower.engine=simulation",
    "nodes.count=4",
    "strategy.name=vca",
    "flower.fraction_train=0.5",
    "flower.fraction_evaluate=0.0",
    "flower.startup_timeout=120",
    "flower.round_timeout=120",
]
TIMING = {"time_s", "rejoin_s", "train_s", "evaluate_s", "delayed_s"}


def _timeless(records: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k not in TIMING} for r in records),
        key=lambda r: (str(r["node"]), r["round"]),
    )


def _running(proc: psutil.Process) -> bool:
    """Whether `proc` (same PID and start time) still runs; a zombie has finished."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _left(run) -> dict[str, int]:
    """The processes of processes.json still alive; the simulation process and Ray's were there."""
    pids = json.loads((run / "processes.json").read_text())
    assert "simulation" in pids and any(name.startswith(("raylet", "gcs_server")) for name in pids), pids
    return {name: pid for name, pid in pids.items() if alive(pid)}


@pytest.fixture
def stale_ray_cluster():
    """A Ray temp folder (RAY_TMPDIR) announcing a cluster that is gone, as `ray start` or a
    test's `ray.cluster_utils.Cluster` leave /tmp/ray/ray_current_cluster: a bare `ray.init()`
    connects to it and waits for ever. Short, for Ray's socket paths."""
    folder = tempfile.mkdtemp(prefix="fgray-", dir="/tmp")
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (Path(folder) / "ray").mkdir()
    (Path(folder) / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(300)
def test_simulation_engine_records_equal_the_inprocess_engine(tmp_path, stale_ray_cluster):
    sim, local = tmp_path / "sim", tmp_path / "local"
    argv = cli_argv("run", "--out", str(sim), settings=[*SIMULATION, "experiment.rounds=2"])
    env = {**child_env(1), "RAY_TMPDIR": stale_ray_cluster}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((sim / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["flower"]["status"] == "finished:completed"
    for name in (
        "flower/records.jsonl",
        "flower/final-model.npz",
        "flower/run-config.toml",
        "logs/simulation.log",
    ):
        assert (sim / name).stat().st_size > 0, name
    assert _left(sim) == {}
    records = read_records(sim)
    nodes = [r for r in records if isinstance(r["node"], int)]
    assert len(nodes) == 4 and {r["round"] for r in nodes} == {1, 2}  # 2 of 4 nodes per round
    run_inprocess(local, [*SIMULATION, "experiment.rounds=2"])
    assert _timeless(records) == _timeless(read_records(local))
    simulated, inprocess = (
        load_model(sim / "flower" / "final-model.npz"),
        load_model(local / "flower" / "final-model.npz"),
    )
    assert list(simulated) == list(inprocess) and all((simulated[k] == inprocess[k]).all() for k in simulated)


@pytest.mark.timeout(300)
def test_ctrl_c_exits_130_and_leaves_no_process(tmp_path):
    run = tmp_path / "interrupted"
    argv = cli_argv("run", "--out", str(run), settings=[*SIMULATION, "experiment.rounds=500"])

    def ray_tree(launcher: subprocess.Popen) -> list[psutil.Process]:
        tree = descendants([launcher.pid])
        assert any(p.name().startswith("raylet") for p in tree), [p.name() for p in tree]
        return tree

    code, tree = ctrl_c_after_round_1(argv, run, tmp_path / "launcher.log", "server", 240, ray_tree)
    assert code == 130, (tmp_path / "launcher.log").read_text(errors="replace")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] >= 1
    assert [p.pid for p in tree if _running(p)] == []  # every process of the tree, by PID and start time
    assert _left(run) == {}


@pytest.mark.timeout(100)
def test_a_failing_runtime_fails_the_run_at_once_with_its_reason(tmp_path):
    # more CPUs per virtual client than the machine has: Ray can host no client, Flower's runtime
    # fails while the ServerApp still waits for nodes (startup_timeout 120 s): the run ends at once
    run = tmp_path / "no-actor"
    settings = set_args([*SIMULATION, "experiment.rounds=2", "flower.simulation_cpus=1024"])
    result = run_cli("run", "--out", str(run), *settings, timeout=90)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["flower"]["status"] == "finished:failed"
    assert any("ActorPool is empty" in e for e in summary["errors"]), summary["errors"]
    assert _left(run) == {}


IMPORTED = """
import importlib, json, sys
import ray
from fedgossip.launcher.flower import simulation_process as sp
for name in sp.SHARED_MODULES:
    importlib.import_module(name)
before = set(sys.modules)
if sys.argv[1] == "ray":
    ray.init(**sp.ray_init_args())
    ray.shutdown()
else:  # what the warm-up thread imports: the config, the model's modules, RUNTIME_MODULES
    for name in ("fedgossip.config.flower_run", *sys.argv[2:], *sp.RUNTIME_MODULES):
        importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.timeout(120)
def test_ray_init_and_the_warm_up_thread_never_import_one_module_at_once(tmp_path):
    # they run at once in the simulation process; a module both import (a package's circular
    # imports run by two threads) can leave one of them a partial module: SHARED_MODULES are
    # imported before, and nothing else is imported by both
    from fedgossip.launcher.flower.simulation import model_modules
    from tests.support.configs import inprocess_flower

    def imported(*args: str) -> set[str]:
        argv = [sys.executable, "-c", IMPORTED, *args]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=90, env=child_env(1), cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        return set(json.loads(result.stdout.splitlines()[-1]))

    by_ray = imported("ray")
    by_thread = imported("warm-up", *model_modules(inprocess_flower('task.model="mlp"')))
    assert "torch" in by_thread and "sqlalchemy" in by_thread and by_ray  # both import something
    assert by_ray & by_thread == set()
