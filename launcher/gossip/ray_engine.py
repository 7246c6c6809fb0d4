"""The Ray engine of gossip runs (`launcher.engine = "ray"`): node processes as Ray actors spread
over a Ray cluster's machines.

The launcher connects to the cluster (`launcher.ray_address`: "auto", HOST:PORT, or "" to start a
Ray of this machine alone), reserves one bundle per node process in a placement group with the
SPREAD strategy (Ray puts the bundles on as many nodes as it can; an actor's CPUs only count for
placement: the cluster's CPUs divided among the actors, at most 1 each), and starts one actor
(`client/gossip/actor.py`: one peer, or `nodes.per_process` peers) per bundle. Each actor reports its
node's address and free ports there; the launcher writes the node configs with those addresses
(TLS certificates name each actor's address) and hands each actor its configs and the files they
name; once every actor has built its peers, all are told to go at once (peers of actors started
seconds apart would run ahead alone after round 1's timeout). The actors' events and log lines
come back through `take` calls (one returns the lines of TAKE_LINGER_S after its first: every record of
its peers' rounds of that time), one pump thread per actor (as a local process's stdout), so the
launcher's loop, results folder and outcome are the same as in local runs; a dead actor (`ray.kill`,
its node lost) ends its stream: its peers are dead.

Where each actor ran is written to ray.json in the results folder:

    {"address", "namespace", "actors": {process name: {"actor", "node_id", "ip", "pid", "nodes"}}}

Ray is imported only here (and inside the actors' processes); without it, a clear ValueError.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fedgossip.client.gossip.actor import ActorHost, NodeBundle, Placement
from fedgossip.client.gossip.transport.security import is_loopback
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.runs.engines import ProcessGroup
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.processes import import_path, log_tail

PLACEMENT_TIMEOUT_S = 120.0  # the cluster reserves the bundles and starts the actors' workers
CALL_TIMEOUT_S = 60.0  # one call to an actor that answers in a second at most
TAKE_WAIT_S = 1.0  # how long an actor's take() waits for a line
TAKE_LINGER_S = 0.2  # and then for the lines that follow: a call carries the records of every round of
# that time, not one (the peers keep each measured round's model until the observer has read it)
DIED = -9  # the exit status of a dead actor: as a process killed by SIGKILL
RAY_INFO = "ray.json"
LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray takes loopback for this machine's address
MAX_CONCURRENCY = 4  # an actor's calls served at once: start, take, stop


def import_ray(loopback: bool = False) -> Any:
    """The ray module, or a ValueError saying how to install it. `loopback`: a Ray started from
    here (its nodes, their workers, so the actors' peers) takes 127.0.0.1 for this machine's
    address, as Ray does on macOS, instead of the machine's outward address."""
    if loopback:
        os.environ[LOCAL_ONLY] = "0"  # read when Ray is imported, here and in the workers
    try:
        import ray
    except ImportError:
        raise ValueError(
            'launcher.engine = "ray" needs Ray, an optional extra: pip install "fedgossip[ray]"'
        ) from None
    if loopback:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # Ray was imported before (a driver in-process)
    return ray


def actor_cpus(actors: int, cluster_cpus: float) -> float:
    """The CPUs each actor reserves: the cluster's divided among them, at most 1 (Ray counts
    resources to 1e-4)."""
    if cluster_cpus <= 0:
        raise ValueError("the Ray cluster has no CPUs to place the peers on")
    cpus = math.floor(1e4 * min(1.0, cluster_cpus / actors)) / 1e4
    if cpus <= 0:
        raise ValueError(f"the Ray cluster's {cluster_cpus:g} CPUs cannot hold {actors} actors")
    return cpus


def host_port(ip: str, port: int) -> str:
    """HOST:PORT of an actor's peer (an IPv6 address in brackets)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@contextlib.contextmanager
def ray_engine(config: ExperimentConfig, results: ResultsFolder, lines: queue.Queue) -> Iterator[RayEngine]:
    """The Ray engine for the block: connected (or a local Ray started) on entry; on exit every
    actor of the run is killed, its placement group removed and the driver disconnected (a Ray
    started here stops with it)."""
    address = config.launcher.ray_address
    ray = import_ray(loopback=not address)
    namespace = f"fedgossip-{secrets.token_hex(6)}"
    options: dict[str, Any] = {"namespace": namespace, "log_to_driver": False, "configure_logging": False}
    if not address:  # a Ray of this machine alone: no dashboard to start
        options.update(address="local", include_dashboard=False)
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError) as err:
        raise ValueError(f"launcher.ray_address {address!r}: no Ray cluster to connect to: {err}") from None
    engine = RayEngine(ray, config, results, lines, namespace)
    try:
        yield engine
    finally:
        engine.close()
        ray.shutdown()


class RayEngine:
    """Places a run's node processes as actors and starts their peers (`engines.GossipEngine`)."""

    def __init__(
        self, ray: Any, config: ExperimentConfig, results: ResultsFolder, lines: queue.Queue, namespace: str
    ) -> None:
        self.ray, self.config, self.results, self.lines = ray, config, results, lines
        self.namespace = namespace
        self.actors: dict[str, Any] = {}
        self.placed: dict[str, Placement] = {}
        self.group: Any = None
        self.children: list[ActorChild] = []

    def place(self, groups: Sequence[ProcessGroup]) -> list[str]:
        """One actor per group, spread over the cluster; the address of every node's peer."""
        ray = self.ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        cpus = actor_cpus(len(groups), ray.cluster_resources().get("CPU", 0))
        self.group = placement_group([{"CPU": cpus}] * len(groups), strategy="SPREAD")
        try:
            ray.get(self.group.ready(), timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ValueError(
                f"the Ray cluster did not place {len(groups)} actors of {cpus:g} CPU within "
                f"{PLACEMENT_TIMEOUT_S:.0f}s (its resources: {ray.cluster_resources()})"
            ) from None
        actor_class = ray.remote(ActorHost)
        paths = import_path(os.environ.get("PYTHONPATH", "")).split(os.pathsep)
        for index, group in enumerate(groups):
            self.actors[group.name] = actor_class.options(
                name=group.name,
                num_cpus=cpus,
                max_concurrency=MAX_CONCURRENCY,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, index),
            ).remote(self.config.task.threads, paths)
        calls = [self.actors[g.name].place.remote(len(g.nodes)) for g in groups]
        try:
            placed = ray.get(calls, timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.RayError as err:  # no answer in time, or an actor that cannot start
            # (e.g. fedgossip is not installed on one of the machines)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(f"the Ray actors did not start: {type(err).__name__}: {first}") from None
        self.placed = {group.name: where for group, where in zip(groups, placed, strict=True)}
        exposed = sorted({where.ip for where in placed if not is_loopback(host_port(where.ip, 1))})
        if exposed and not self.config.security.tls:
            raise ValueError(
                f"the Ray cluster's nodes {', '.join(exposed)} are not on loopback: gossip between "
                "machines needs security.tls = true (plaintext gRPC only on loopback)"
            )
        self._write_info(groups)
        return [host_port(where.ip, port) for where in placed for port in where.ports]

    def _write_info(self, groups: Sequence[ProcessGroup]) -> None:
        info = {
            "address": self.ray.get_runtime_context().gcs_address,
            "namespace": self.namespace,
            "actors": {
                g.name: {
                    "actor": g.name,
                    "node_id": self.placed[g.name].node_id,
                    "ip": self.placed[g.name].ip,
                    "pid": self.placed[g.name].pid,
                    "nodes": list(g.nodes),
                }
                for g in groups
            },
        }
        self.results.write_json(RAY_INFO, info)

    def start(self, group: ProcessGroup) -> ActorChild:
        """Hand the group's actor its node configs (and the files they name) and start its peers."""
        bundles = [NodeBundle.read(path) for path in group.configs]
        log_path = self.results.logs / f"{group.name}.log"
        pid = self.placed[group.name].pid
        child = ActorChild(self.ray, group.name, self.actors[group.name], pid, log_path, bundles, self.lines)
        self.children.append(child)
        if len(self.children) == len(self.placed):
            self._go()
        return child

    def _go(self) -> None:
        """Once every actor has built its peers (or failed to, or PLACEMENT_TIMEOUT_S passed), let
        all of them run their rounds."""
        built = [child.built for child in self.children]
        self.ray.wait(built, num_returns=len(built), timeout=PLACEMENT_TIMEOUT_S)
        for child in self.children:
            child.actor.go.remote()

    def close(self) -> None:
        """Kill every actor of the run (their worker processes exit) and free their bundles."""
        for actor in self.actors.values():
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(self.group)


class ActorChild:
    """A node process that is a Ray actor: the interface of `processes.Child`. A pump thread takes
    the actor's lines into the launcher's queue (and its log lines into logs/NAME.log)."""

    def __init__(
        self,
        ray: Any,
        name: str,
        actor: Any,
        pid: int,
        log_path: Path,
        bundles: Sequence[NodeBundle],
        lines: queue.Queue,
    ) -> None:
        self.ray, self.name, self.actor, self.pid, self.log_path = ray, name, actor, pid, log_path
        self.code: int | None = None
        self.death = ""
        self._terminated = False
        self.built = actor.start.remote(list(bundles))  # ready once the peers are built (RayEngine._go)
        self._pump = threading.Thread(target=self._take_lines, args=(lines,), name=name, daemon=True)
        self._pump.start()

    def _take_lines(self, lines: queue.Queue) -> None:
        errors = self.ray.exceptions
        with open(self.log_path, "a") as log:
            while self.code is None:
                try:
                    call = self.actor.take.remote(TAKE_WAIT_S, TAKE_LINGER_S)
                    events, logs, code = self.ray.get(call, timeout=CALL_TIMEOUT_S)
                except errors.GetTimeoutError:
                    continue  # a busy actor: the run's time limit bounds the wait
                except errors.RayError as err:
                    self.death = f"the Ray actor died ({type(err).__name__})"
                    self.code = DIED
                    break
                log.writelines(line + "\n" for line in logs)
                log.flush()
                for line in events:
                    lines.put((self.name, line))
                self.code = code
        lines.put((self.name, None))

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        """Ask the actor to stop its peers (once), without waiting."""
        if self.code is None and not self._terminated:
            self._terminated = True
            self.actor.stop.remote()

    def stop(self, grace: float = 5.0) -> int:
        """Stop the peers, wait up to `grace` seconds for the actor's last lines, then kill the
        actor (its worker process exits); returns its exit status."""
        self.terminate()
        self._pump.join(grace)
        with contextlib.suppress(Exception):
            self.ray.kill(self.actor)
        self._pump.join(grace)
        return DIED if self.code is None else self.code

    def log_tail(self, lines: int = 5) -> str:
        """Why the actor died, or the last lines of its log."""
        return self.death or log_tail(self.log_path, lines)
