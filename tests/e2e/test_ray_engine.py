"""The Ray engine (`launcher.engine = "ray"`): gossip peers as Ray actors on a local 2-node Ray
cluster bound to loopback, compared with the same run on the local engine; a killed actor is a
dead peer; nothing of a run is left on the cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
import ray
from ray.cluster_utils import Cluster

from fedgossip.launcher.gossip.ray_engine import RAY_INFO
from fedgossip.reports.records import read_consensus
from tests.support import (
    RAY_FOUR,
    kill_during_run,
    loopback_cluster,
    metrics,
    run_cli,
    set_args,
    start_cli,
    timeless,
    wait_for,
)

FOUR = RAY_FOUR


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each on 127.0.0.1, shared by the module's tests (Ray's start-up
    takes tens of seconds on 2 busy cores); the test process is a driver of it, for checks."""
    with loopback_cluster(nodes=2, cpus=1) as two:
        yield two


def on_ray(cluster: Cluster, settings: list[str]) -> list[str]:
    return [*settings, "launcher.engine=ray", f"launcher.ray_address={cluster.address}"]


def assert_nothing_left(out) -> None:
    """No actor of the run alive, its actors' processes gone, every CPU of the cluster free."""
    info = json.loads((out / RAY_INFO).read_text())
    named = ray.util.list_named_actors(all_namespaces=True)
    assert [a for a in named if a["namespace"] == info["namespace"]] == []
    pids = json.loads((out / "processes.json").read_text()).values()

    def gone() -> bool:
        return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)

    wait_for(gone, 30, "the actors' worker processes to exit")
    wait_for(lambda: ray.available_resources().get("CPU") == 2, 30, "the placement group to be removed")


@pytest.mark.timeout(300)
def test_four_peers_on_two_ray_nodes_record_what_local_processes_record(cluster, tmp_path):
    runs = {}
    for engine, settings in (("ray", on_ray(cluster, FOUR)), ("local", FOUR)):
        out = tmp_path / engine
        result = run_cli("run", "--out", str(out), *set_args(settings), timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        runs[engine] = timeless(metrics(out))
    out = tmp_path / "ray"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["dead_nodes"] == []
    assert len(runs["ray"]) == 12 and all(r["merged"] == 2 for r in runs["ray"])
    assert runs["ray"] == runs["local"]  # over mutual TLS + token, between actors: the same bits
    info = json.loads((out / RAY_INFO).read_text())
    assert sorted(info["actors"]) == [f"node-{n}" for n in range(4)]
    assert len({a["node_id"] for a in info["actors"].values()}) == 2  # spread over both nodes
    for node in range(4):
        listen = (out / "nodes" / f"node-{node}.toml").read_text()
        assert 'listen = "127.0.0.1:' in listen  # the actor's node address, as Ray gave it
        assert (out / "logs" / f"node-{node}.log").exists()
    for name in ("metrics.jsonl", "summary.json", "config.toml", "accuracy.png", "consensus.jsonl"):
        assert (out / name).exists(), name
    consensus = read_consensus(out, [])  # the records pulled from the actors: no round missed
    assert [(e["round"], e["consensus_models"]) for e in consensus] == [(r, 4) for r in (1, 2, 3)]
    assert_nothing_left(out)


@pytest.mark.timeout(300)
def test_a_killed_actor_of_two_peers_is_two_dead_peers_and_the_others_finish(cluster, tmp_path):
    out = tmp_path / "killed"
    settings = [
        "nodes.count=4",
        "nodes.per_process=2",  # two actors of two peers (client/gossip/host.py's grouping)
        "experiment.rounds=30",
        "topology.kind=complete",
        "experiment.round_timeout=4",
        "task.model=linear",
    ]

    def ray_kill(name: str) -> None:
        namespace = json.loads((out / RAY_INFO).read_text())["namespace"]
        ray.kill(ray.get_actor(name, namespace=namespace))

    code, output = kill_during_run(out, on_ray(cluster, settings), 0, "nodes-2-3", kill=ray_kill)
    assert code == 3, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["dead_nodes"] == [2, 3], summary
    for node in (2, 3):
        assert any(f"node {node}" in e and "Ray actor died" in e for e in summary["errors"]), summary
    records = metrics(out)
    for node in (0, 1):
        assert max(r["round"] for r in records if r["node"] == node) == 30
    # A killed actor takes with it the lines it had not handed over yet (the launcher pulls them):
    # under load its peers' last records may never come, though their pushes of the next round did
    # (seen: records of nodes 2-3 up to round 1, merged by 0 and 1 in rounds 2 and 3). So the
    # survivors may hear them in the rounds after their last record, those right after it only (no
    # dead peer's push counted late), and then only each other.
    recorded = max(r["round"] for r in records if r["node"] >= 2)
    dead = {2, 3}
    after = sorted(
        {
            r["round"]
            for r in records
            if r["node"] < 2 and r["round"] > recorded and dead & {*r["neighbours_heard"]}
        }
    )
    assert after == list(range(recorded + 1, recorded + 1 + len(after))), (recorded, after)
    last = after[-1] if after else recorded
    late = [r for r in records if r["node"] < 2 and r["round"] > last]
    assert late and all(r["neighbours_heard"] == [1 - r["node"]] for r in late), late
    assert_nothing_left(out)


@pytest.mark.timeout(300)
def test_ctrl_c_of_a_ray_engine_run_is_an_interrupt_that_leaves_nothing_on_the_cluster(cluster, tmp_path):
    """SIGINT to the launcher's process group, as Ctrl-C in its terminal: exit 130, status
    "interrupted", the records made so far kept, no actor or actor process left, every CPU free."""
    out = tmp_path / "interrupted"
    settings = ["nodes.count=4", "experiment.rounds=500", "topology.kind=ring", "task.model=linear"]
    launcher = start_cli("run", "--out", str(out), settings=on_ray(cluster, settings))
    try:
        wait_for(
            lambda: len(metrics(out)) >= 8 if (out / "metrics.jsonl").exists() else False, 150, "2 rounds"
        )
        before = len(metrics(out))
        os.killpg(launcher.pid, signal.SIGINT)
        output, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
    assert launcher.returncode == 130, output.decode(errors="replace")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and len(metrics(out)) >= before
    assert b"Traceback" not in output
    assert_nothing_left(out)


def test_without_ray_the_ray_engine_is_a_clear_error(tmp_path):
    out = tmp_path / "no-ray"
    code = (
        "import sys; sys.modules['ray'] = None\n"  # `import ray` raises ImportError
        "from fedgossip.launcher.cli import main\n"
        f"sys.argv = ['fedgossip', 'run', '--out', {str(out)!r}, '--set', 'launcher.engine=ray']\n"
        "main()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    output = " ".join((result.stdout + result.stderr).split())  # the console wraps long lines
    assert result.returncode == 2, output
    assert 'error: launcher.engine = "ray" needs Ray' in output
    assert 'an optional extra: pip install "fedgossip[ray]"' in output
    assert not (out / "metrics.jsonl").exists()
