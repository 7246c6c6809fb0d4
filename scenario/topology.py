"""Gossip topologies: who talks to whom, built with networkx from the experiment seed.

Every generator returns a connected undirected graph on nodes 0..n-1; a disconnected result is a
clear error (gossip on a disconnected graph never mixes), never a silent partial experiment; so is
a graph on which the strategy cannot merge (`check_merges`: krum's n > 2f + 2).
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from fedgossip.config import StrategySection, TopologySection
from fedgossip.strategies.registry import Rule, lookup


def build_topology(topology: TopologySection, num_nodes: int, seed: int) -> nx.Graph:
    """The communication graph of an experiment."""
    kind = topology.kind
    if kind == "ring":
        graph = nx.cycle_graph(num_nodes)
    elif kind == "complete":
        graph = nx.complete_graph(num_nodes)
    elif kind == "star":
        graph = nx.star_graph(num_nodes - 1)
    elif kind == "regular":
        if topology.degree >= num_nodes or (topology.degree * num_nodes) % 2:
            raise ValueError(
                f"topology.degree = {topology.degree}: a random regular graph on {num_nodes} nodes "
                "needs degree < nodes and degree * nodes even"
            )
        graph = nx.random_regular_graph(topology.degree, num_nodes, seed=seed)
    elif kind == "erdos-renyi":
        graph = nx.erdos_renyi_graph(num_nodes, topology.probability, seed=seed)
    elif kind == "small-world":
        if not 2 <= topology.degree < num_nodes:
            raise ValueError(f"topology.degree = {topology.degree}: small-world needs 2 <= degree < nodes")
        graph = nx.watts_strogatz_graph(num_nodes, topology.degree, topology.probability, seed=seed)
    elif kind == "file":
        graph = read_edge_list(topology.file, num_nodes)
    else:  # pragma: no cover - TopologySection validates kind
        raise ValueError(f"unknown topology.kind {kind!r}")
    if num_nodes > 1 and not nx.is_connected(graph):
        parts = nx.number_connected_components(graph)
        raise ValueError(
            f"topology {kind!r} on {num_nodes} nodes is disconnected ({parts} components) with "
            f"seed {seed}: raise topology.degree/probability or change the seed"
        )
    return graph


def read_edge_list(path: str | Path, num_nodes: int) -> nx.Graph:
    """An undirected graph from a text file of `u v` lines (0-based node ids, # comments)."""
    graph = nx.empty_graph(num_nodes)
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise ValueError(f"topology.file {path}: {err.strerror}") from None
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise ValueError(f"{path}:{number}: expected two node ids, got {line.strip()!r}")
        u, v = (int(f) for f in fields)
        if max(u, v) >= num_nodes or u == v:
            raise ValueError(f"{path}:{number}: edge {u}-{v} is a self-loop or names a node >= {num_nodes}")
        graph.add_edge(u, v)
    return graph


def neighbours(graph: nx.Graph, node: int) -> list[int]:
    """The sorted neighbours of `node`."""
    return sorted(graph.neighbors(node))


def check_merges(graph: nx.Graph, strategy: StrategySection, kind: str) -> None:
    """ValueError when a peer with the fewest neighbours (degree d) cannot merge with `strategy`:
    a peer merges its own model and its neighbours', d + 1 models (krum needs d + 1 > 2f + 2)."""
    rule = lookup(strategy.name)  # a user's rule (not imported here) declares no minimum
    if not isinstance(rule, Rule) or graph.number_of_nodes() < 2:
        return
    node, degree = min(graph.degree, key=lambda item: (item[1], item[0]))
    rule.check_enough(
        strategy.params,
        degree + 1,
        f"merge; a gossip peer merges its own model and its neighbours' (degree + 1), and the "
        f"smallest degree of topology {kind!r} on {graph.number_of_nodes()} nodes is {degree} "
        f"(node {node}): {degree + 1} models",
    )
