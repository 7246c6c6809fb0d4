"""Topologies: connected, seeded, and clear errors for impossible graphs."""

from __future__ import annotations

import networkx as nx
import pytest

from fedgossip.config import TopologySection
from fedgossip.scenario.topology import build_topology, neighbours


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("ring", {}),
        ("complete", {}),
        ("star", {}),
        ("regular", {"degree": 3}),
        ("erdos-renyi", {"probability": 0.6}),
        ("small-world", {"degree": 4, "probability": 0.3}),
    ],
)
def test_every_kind_is_connected_and_seeded(kind, extra):
    topology = TopologySection(kind=kind, **extra)
    graph = build_topology(topology, 10, seed=7)
    assert sorted(graph.nodes) == list(range(10))
    assert nx.is_connected(graph)
    again = build_topology(topology, 10, seed=7)
    assert sorted(graph.edges) == sorted(again.edges)


def test_shapes_match_their_definition():
    assert all(d == 2 for _, d in build_topology(TopologySection(kind="ring"), 6, 0).degree)
    assert all(d == 3 for _, d in build_topology(TopologySection(kind="regular", degree=3), 8, 0).degree)
    star = build_topology(TopologySection(kind="star"), 5, 0)
    assert neighbours(star, 0) == [1, 2, 3, 4] and neighbours(star, 3) == [0]
    assert build_topology(TopologySection(kind="complete"), 5, 0).number_of_edges() == 10


def test_random_graphs_change_with_the_seed():
    topology = TopologySection(kind="regular", degree=3)
    edges = {tuple(sorted(build_topology(topology, 12, seed).edges)) for seed in range(5)}
    assert len(edges) > 1


def test_disconnected_graph_is_an_error():
    with pytest.raises(ValueError, match="disconnected"):
        build_topology(TopologySection(kind="erdos-renyi", probability=0.0), 6, 0)


def test_impossible_regular_degree():
    with pytest.raises(ValueError, match="degree"):
        build_topology(TopologySection(kind="regular", degree=3), 5, 0)


def test_edge_list_file(tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text("# a path\n0 1\n1 2\n2 3  # last\n")
    graph = build_topology(TopologySection(kind="file", file=str(path)), 4, 0)
    assert sorted(graph.edges) == [(0, 1), (1, 2), (2, 3)]
    path.write_text("0 1\n")
    with pytest.raises(ValueError, match="disconnected"):
        build_topology(TopologySection(kind="file", file=str(path)), 4, 0)
    path.write_text("0 9\n")
    with pytest.raises(ValueError, match=":1:"):
        build_topology(TopologySection(kind="file", file=str(path)), 4, 0)
