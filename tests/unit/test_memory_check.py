"""The memory check before a launch: what each kind of node is estimated to need, sensible node
counts passing on a 24 GiB machine, too many refused with the numbers and what would fit."""

from __future__ import annotations

import math

import pytest

from fedgossip.config import load_config
from fedgossip.launcher.supervision.memory import check_memory, estimate

GIB24 = 24 * 1024.0


@pytest.mark.parametrize("count", [8, 16, 64])
@pytest.mark.parametrize("model", ["mlp", "cnn", "linear"])
def test_sensible_node_counts_pass_on_a_24_gib_machine(count, model):
    check_memory(load_config(None, [f"nodes.count={count}", f"task.model={model}"]), available=GIB24)


def test_500_mlp_peers_are_refused_on_a_24_gib_machine_with_the_numbers():
    config = load_config(None, ["nodes.count=500", "launcher.fork_server=false"])
    need = estimate(config)
    assert need.total_mib == 60 + 500 * 185  # measured anchors: see launcher/supervision/memory.py
    with pytest.raises(ValueError) as err:
        check_memory(config, available=GIB24)
    message = str(err.value)
    assert message.startswith("nodes.count = 500 needs about 90.4 GiB of memory (500 gossip peers")
    assert "24.0 GiB available" in message
    assert f"at most {int((GIB24 - 60) // 185)} nodes" in message  # 132
    packed = math.ceil((45 + 24 * 12) / 25)  # a forked process of 25 peers, shared by them
    assert f"nodes.per_process = 25 with launcher.fork_server = true (~{packed} MiB per peer)" in message
    assert 'task.model = "linear"' in message and 'flower.engine = "simulation"' in message


def test_forked_and_packed_peers_are_estimated_by_process():
    forked = estimate(load_config(None, ["nodes.count=64"]))
    assert forked.total_mib == 60 + 120 + 64 * 45  # the fork server, then 64 forked processes
    packed = estimate(load_config(None, ["nodes.count=1000", "nodes.per_process=25"]))
    assert packed.total_mib == 60 + 120 + 1000 * math.ceil((45 + 24 * 12) / 25)
    check_memory(load_config(None, ["nodes.count=1000", "nodes.per_process=25"]), available=GIB24)


def test_flower_engines_are_checked_only_where_nodes_are_processes():
    deployment = ["experiment.mode=flower", "strategy.name=fedavg", "nodes.count=100"]
    with pytest.raises(ValueError, match="Flower SuperNodes with their ClientApps"):
        check_memory(load_config(None, deployment), available=GIB24)
    for engine in ("simulation", "inprocess"):
        check_memory(load_config(None, [*deployment, "nodes.count=1000", f"flower.engine={engine}"]), GIB24)


def test_ray_engine_runs_are_not_checked_against_this_machine():
    config = load_config(None, ["nodes.count=5000", "launcher.engine=ray"])  # the cluster's memory
    assert estimate(config) is None
    check_memory(config, available=GIB24)
