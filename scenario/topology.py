"""Gossip topologies: who talks to whom, built with networkx from the experiment seed.

A topology is a plain generator function in the manner of networkx's (`ring(n)`,
`regular(n, *, degree, seed)`, ...) registered by its topology.kind in `GENERATORS` (the name
must also be among the config's topology.kind choices: config/sections.py sits below this
package and cannot import it).

Every generator returns a connected undirected graph on nodes 0..n-1; a disconnected result is a
clear error (gossip on a disconnected graph never mixes), never a silent partial experiment; so is
a graph on which the strategy cannot merge (`check_merges`: krum's n > 2f + 2).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import networkx as nx

from fedgossip.config import ExperimentConfig, StrategySection, TopologySection
from fedgossip.strategies.registry import Rule, lookup


def ring(n: int) -> nx.Graph:
    """Each node linked to the next, the last to the first."""
    return nx.cycle_graph(n)


def complete(n: int) -> nx.Graph:
    """Every node linked to every other."""
    return nx.complete_graph(n)


def star(n: int) -> nx.Graph:
    """Node 0 linked to all others."""
    return nx.star_graph(n - 1)


def regular(n: int, *, degree: int, seed: int) -> nx.Graph:
    """A random `degree`-regular graph."""
    if degree >= n or (degree * n) % 2:
        raise ValueError(
            f"topology.degree = {degree}: a random regular graph on {n} nodes "
            "needs degree < nodes and degree * nodes even"
        )
    return nx.random_regular_graph(degree, n, seed=seed)


def erdos_renyi(n: int, *, probability: float, seed: int) -> nx.Graph:
    """Each pair linked with `probability`."""
    return nx.erdos_renyi_graph(n, probability, seed=seed)


def small_world(n: int, *, degree: int, probability: float, seed: int) -> nx.Graph:
    """Watts-Strogatz: a ring lattice of `degree` neighbours, each link rewired with `probability`."""
    if not 2 <= degree < n:
        raise ValueError(f"topology.degree = {degree}: small-world needs 2 <= degree < nodes")
    return nx.watts_strogatz_graph(n, degree, probability, seed=seed)


def from_file(n: int, *, file: str) -> nx.Graph:
    """The edge list in `file` (`read_edge_list`)."""
    return read_edge_list(file, n)


GENERATORS: dict[str, Callable[..., nx.Graph]] = {
    "ring": ring,
    "regular": regular,
    "erdos-renyi": erdos_renyi,
    "small-world": small_world,
    "complete": complete,
    "star": star,
    "file": from_file,
}
"""topology.kind -> generator `(n, **keywords) -> nx.Graph`; its keyword-only parameters are
filled from the [topology] keys of the same name and the experiment `seed`."""


def parameters(generator: Callable[..., nx.Graph]) -> tuple[str, ...]:
    """The keyword-only parameters a generator takes (topology keys, and `seed`)."""
    return tuple(
        name
        for name, parameter in inspect.signature(generator).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )


def build_topology(topology: TopologySection, num_nodes: int, seed: int) -> nx.Graph:
    """The communication graph of an experiment: topology.kind's generator on num_nodes nodes."""
    kind = topology.kind
    generator = GENERATORS[kind]
    keywords = {name: seed if name == "seed" else getattr(topology, name) for name in parameters(generator)}
    graph = generator(num_nodes, **keywords)
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


def run_graph(config: ExperimentConfig) -> nx.Graph:
    """The graph of a gossip run's links, checked against its strategy (Krum's n > 2f + 2): an
    error before any process starts, for one run and for every run of a sweep before the first."""
    count = config.nodes.count
    graph = build_topology(config.topology, count, config.experiment.seed)
    if config.scenario.resample_every:  # every pair may be linked some epoch (scenario/resample.py)
        graph = nx.complete_graph(count)
    check_merges(graph, config.strategy, config.topology.kind)
    return graph
