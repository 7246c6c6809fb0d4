"""Dynamic topology: random k-out neighbours re-drawn every k rounds, connected, seeded."""

from __future__ import annotations

import networkx as nx
import pytest

from fedgossip.scenario.resample import components, epoch_of, k_out_graph


def as_graph(adjacency: list[set[int]]) -> nx.Graph:
    graph = nx.empty_graph(len(adjacency))
    graph.add_edges_from((a, b) for a, peers in enumerate(adjacency) for b in peers)
    return graph


def test_epochs_change_every_k_rounds():
    assert [epoch_of(r, 3) for r in range(1, 10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize(("count", "degree"), [(10, 1), (10, 2), (30, 1), (5, 4), (2, 1)])
def test_every_epoch_is_a_connected_symmetric_k_out_graph(count, degree):
    for epoch in range(30):
        adjacency = k_out_graph(count, degree, seed=1, epoch=epoch)
        graph = as_graph(adjacency)
        assert nx.is_connected(graph)  # networkx as the independent check
        assert len(components(adjacency)) == 1
        for node, peers in enumerate(adjacency):
            assert node not in peers
            assert all(node in adjacency[p] for p in peers)
            assert len(peers) >= min(degree, count - 1)  # its own draws at least


def test_the_same_seed_gives_the_same_sequence_and_epochs_differ():
    def sequence(seed: int) -> list[list[set[int]]]:
        return [k_out_graph(12, 2, seed, epoch) for epoch in range(5)]

    assert sequence(3) == sequence(3)
    assert sequence(3) != sequence(4)
    graphs = sequence(3)
    assert all(graphs[e] != graphs[e + 1] for e in range(4))
