"""A Ray cluster of a few nodes on this machine's loopback address, for the Ray engine's tests and
the scale benchmark."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from fedgossip.base.ports import LOOPBACK
from fedgossip.launcher.gossip.ray_engine import LOCAL_ONLY


@contextlib.contextmanager
def loopback_cluster(nodes: int = 2, cpus: int = 1) -> Iterator:
    """`ray.cluster_utils.Cluster` of `nodes` nodes of `cpus` CPUs on 127.0.0.1 (no dashboard),
    this process connected to it as a driver; shut down at the end. Ray otherwise replaces
    127.0.0.1 by the machine's outward address when a driver connects (`LOCAL_ONLY` stops it, in
    this process and in the launchers it starts)."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    saved = os.environ.get(LOCAL_ONLY), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY] = "0"  # for the launchers started from here
    ray_constants.ENABLE_RAY_CLUSTER = False  # for this process, whenever it imported Ray
    args = {"num_cpus": cpus, "node_ip_address": LOOPBACK}
    cluster = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**args)
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
        if saved[0] is None:
            os.environ.pop(LOCAL_ONLY, None)
        else:
            os.environ[LOCAL_ONLY] = saved[0]


RAY_FOUR = [
    "nodes.count=4",
    "experiment.rounds=3",
    "topology.kind=ring",
    "task.model=linear",  # the actors start in seconds: no torch to import
    "security.tls=true",
    "security.mutual_tls=true",
    "security.token=true",
]
"""Four secured linear peers on a ring for 3 rounds: the Ray engine's runs."""
