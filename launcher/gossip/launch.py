"""Launch a gossip experiment: one peer per node, in the node processes of the run's engine.

The launcher only orchestrates: the engine (`launcher.engine`, launcher/runs/engines.py: local
processes on free loopback ports, or Ray actors across machines) says where each peer listens,
the launcher writes each node's config, the engine starts the peers, the launcher streams their
metrics records into the results folder, and every node process is stopped on completion, error
and Ctrl-C. If a peer dies the others finish; the outcome names the dead nodes and the run is
"partial".
"""

from __future__ import annotations

import queue
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from fedgossip.base.certificates import make_ca, make_certificate
from fedgossip.base.ports import free_ports
from fedgossip.client.gossip.transport.identity import OBSERVER, certificate_name, write_link_keys
from fedgossip.config import ExperimentConfig, PeerSection, dump_toml
from fedgossip.launcher.gossip.consensus import observe_consensus
from fedgossip.launcher.gossip.placement import process_groups
from fedgossip.launcher.runs.engines import GOSSIP_ENGINES
from fedgossip.launcher.runs.outcome import Outcome
from fedgossip.launcher.runs.progress import RoundProgress
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.processes import supervised
from fedgossip.scenario.topology import neighbours, run_graph
from fedgossip.schema.events import PEER_EVENTS, RECORD, SCENARIO, decode_event

if TYPE_CHECKING:
    import networkx as nx

STARTUP_TIMEOUT = 120.0
LOOPBACK = "127.0.0.1"


def security_material(
    config: ExperimentConfig,
    graph: nx.Graph,
    secrets_dir: Path,
    hosts: Sequence[str] = (),
    *,
    observer: bool = True,
) -> dict[int, dict[str, str]]:
    """Per-peer credentials of a launched run (or of device bundles), as PeerSection fields by node.

    Always: a key per link (identity, even on loopback), and with `observer` the secret of the
    launcher's observer (GetModel only, for the consensus distance). With security.tls: a throwaway
    CA and one certificate per peer naming its node (checked by the neighbours under mutual TLS) and
    its host (`hosts[node]`, loopback if not given), and (`observer`) one named `observer`. With
    security.token: one shared token on top. The observer's material stays in `secrets_dir`
    (`fedgossip.launcher.gossip.consensus.ObserverAccess` reads it).
    """
    links = write_link_keys(graph.edges, graph.nodes, secrets_dir, observer=observer)
    fields = {node: {"link_keys_file": str(path)} for node, path in links.items()}
    security = config.security
    if security.tls:
        ca = make_ca(secrets_dir)
        if observer:
            make_certificate(ca, secrets_dir, OBSERVER, [LOOPBACK, "localhost"])
        for node in graph.nodes:
            names = list(dict.fromkeys([hosts[node] if hosts else LOOPBACK, LOOPBACK, "localhost"]))
            cert = make_certificate(ca, secrets_dir, certificate_name(node), names)
            fields[node].update(ca_file=str(ca.cert), cert_file=str(cert.cert), key_file=str(cert.key))
            if security.mutual_tls:
                fields[node]["client_ca_file"] = str(ca.cert)
    if security.token:
        path = secrets_dir / "token"
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
        for node in graph.nodes:
            fields[node]["token_file"] = str(path)
    return fields


def node_config_paths(results: ResultsFolder, count: int) -> list[Path]:
    """Where the node configs of a run go (nodes/node-N.toml), before they are written."""
    return [results.nodes / f"node-{node}.toml" for node in range(count)]


def write_node_configs(
    config: ExperimentConfig,
    results: ResultsFolder,
    run_start: float,
    listen: Sequence[str] = (),
    graph: nx.Graph | None = None,
) -> list[Path]:
    """One node config per peer (the experiment config plus its [peer] section), the peer of node
    N listening on `listen[N]` ("host:port", as its engine placed it; free loopback ports if not
    given) and its neighbours' addresses filled in from the same list; `graph`: the run's
    `run_graph` (built here if not given)."""
    count = config.nodes.count
    graph = run_graph(config) if graph is None else graph
    listen = list(listen) or [f"{LOOPBACK}:{port}" for port in free_ports(count, LOOPBACK)]
    credentials = security_material(
        config, graph, results.secrets, [address.rpartition(":")[0] for address in listen]
    )
    paths = node_config_paths(results, count)
    for node, path in enumerate(paths):
        peer = peer_section(
            graph, node, listen[node], listen, run_start, credentials[node], config.security.insecure
        )
        path.write_text(dump_toml(config.replace(peer=peer)))
    return paths


def peer_section(
    graph: nx.Graph,
    node: int,
    listen: str,
    addresses: Sequence[str],
    run_start: float,
    credentials: dict[str, str],
    insecure: bool = False,
) -> PeerSection:
    """The [peer] section of `node`: it binds `listen`, its neighbours in `graph` are dialled at
    `addresses[neighbour]` ("host:port"), its credentials are `security_material`'s fields
    (`insecure`: plaintext off loopback allowed); a `run_start` of 0 makes the peer count time_s
    from its own start."""
    return PeerSection(
        id=node,
        listen=listen,
        neighbours={str(n): addresses[n] for n in neighbours(graph, node)},
        run_start=run_start,
        insecure=insecure,
        **credentials,
    )


def run_gossip(
    config: ExperimentConfig, results: ResultsFolder, console: Console, started: float | None = None
) -> Outcome:
    """Run all peers to the end (or until they die) and return the outcome; the run's clock
    (time_s, startup_s, wall_time_s) starts at `started` (`execute`'s; None: now)."""
    started = time.time() if started is None else started
    outcome = Outcome()
    count, rounds = config.nodes.count, config.experiment.rounds
    lines: queue.Queue = queue.Queue()
    done_rounds = dict.fromkeys(range(count), 0)
    finished: set[int] = set()
    engine_entry = GOSSIP_ENGINES[config.launcher.engine]
    per_process = count if engine_entry.one_process else config.nodes.per_process
    hosted = process_groups(node_config_paths(results, count), per_process)
    open_streams = set(hosted)
    ready: set[int] = set()
    deadline = started + STARTUP_TIMEOUT + rounds * (config.experiment.round_timeout + 30)
    graph = run_graph(config)  # a bad topology fails before the engine starts anything
    if config.experiment.consensus_every and not config.observes_consensus:
        why = (
            "the virtual-time engine's peers serve no models yet"
            if config.launcher.engine == "simulation"
            else f"{config.gossip.schedule} gossip has no rounds in common"
        )
        console.print(
            f"consensus distance off: it compares the peers' models of one round, and {why} "
            "(experiment.consensus_every ignored)"
        )
    with (
        supervised() as children,
        engine_entry.load()(config, results, lines) as engine,
    ):
        listen = engine.place(list(hosted.values()))
        node_configs = write_node_configs(config, results, started, listen, graph)
        for group in hosted.values():
            children.append(engine.start(group))
        results.write_processes({c.name: c.pid for c in children})
        # the observer's gRPC channels open only once every node process is started: a process
        # forked beside active gRPC channels could abort before its exec (grpc/grpc#43055, seen
        # with launcher.fork_server = false; fedgossip/launcher/__init__.py turns that off too)
        with (
            RoundProgress(console, count, rounds, config.experiment.name) as bar,
            observe_consensus(config, node_configs, results, started) as observer,
        ):
            while open_streams:
                if time.time() > deadline:
                    outcome.errors.append("the run exceeded its time limit")
                    break
                try:
                    name, line = lines.get(timeout=1.0)
                except queue.Empty:
                    continue
                if line is None:
                    open_streams.discard(name)
                    if observer:
                        for node in hosted[name].nodes:
                            observer.gone(node)
                    continue
                event = decode_event(line, PEER_EVENTS) or {}
                kind = event.pop("type", None)
                node = hosted[name].node_of(event)
                if kind == RECORD and node is not None:
                    record = event["record"]
                    results.append(record)
                    done_rounds[node] = record["round"]
                    outcome.count_merge(node, record)
                    bar.record(record)
                    if observer:
                        observer.saw(node, record["round"])
                elif kind == "ready" and node is not None:
                    ready.add(node)
                    if len(ready) == count:
                        outcome.startup_s = round(time.time() - started, 3)
                        bar.status(f"all {count} peers ready after {outcome.startup_s:.1f}s")
                elif kind == "done" and node is not None:
                    finished.add(node)
                elif kind == SCENARIO:
                    results.event(event)
                elif kind == "error":
                    outcome.errors.append(f"{hosted[name].label(node)}: {event.get('error')}")
            for child in children:
                code = child.stop()
                for node in hosted[child.name].nodes:
                    if done_rounds[node] < rounds or (code != 0 and node not in finished):
                        outcome.dead_nodes.append(node)
                        if not any(e.startswith(f"node {node}:") for e in outcome.errors):
                            tail = child.log_tail(1)
                            outcome.errors.append(
                                f"node {node} exited with {code} after round "
                                f"{done_rounds[node]}" + (f": {tail}" if tail else "")
                            )
    outcome.dead_nodes.sort()
    outcome.wall_time_s = time.time() - started
    if outcome.dead_nodes:
        outcome.status = "failed" if len(outcome.dead_nodes) == count else "partial"
    outcome.judge_merges(done_rounds, config.gossip.degraded_share)
    return outcome
