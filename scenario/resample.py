"""Dynamic topology: every peer's neighbours re-drawn every k rounds (random k-out peer sampling).

In epoch e (rounds e*k+1 .. (e+1)*k) every node draws `degree` distinct other nodes from the
experiment seed's "topology" stream of that epoch; the graph is the undirected union of those
draws, and components left apart are joined by one seeded edge each, so it is always connected.
Every peer computes the same graph from (seed, epoch) alone: no coordination is needed.
"""

from __future__ import annotations

import itertools

import numpy as np

from fedgossip.base.seeding import stream


def epoch_of(round_: int, every: int) -> int:
    """The resampling epoch of `round_` (rounds count from 1)."""
    return (round_ - 1) // every


def k_out_graph(count: int, degree: int, seed: int, epoch: int) -> list[set[int]]:
    """The adjacency (a set per node) of epoch `epoch`'s connected random k-out graph."""
    rng = stream(seed, "topology", epoch)
    adjacency: list[set[int]] = [set() for _ in range(count)]
    for node in range(count):
        others = np.delete(np.arange(count), node)
        for peer in rng.choice(others, size=min(degree, count - 1), replace=False):
            adjacency[node].add(int(peer))
            adjacency[int(peer)].add(node)
    parts = components(adjacency)
    for left, right in itertools.pairwise(parts):
        a, b = int(rng.choice(sorted(left))), int(rng.choice(sorted(right)))
        adjacency[a].add(b)
        adjacency[b].add(a)
    return adjacency


def components(adjacency: list[set[int]]) -> list[set[int]]:
    """The connected components, each a set of nodes, in order of their smallest node."""
    seen: set[int] = set()
    parts = []
    for start in range(len(adjacency)):
        if start in seen:
            continue
        part, frontier = {start}, [start]
        while frontier:
            for peer in adjacency[frontier.pop()] - part:
                part.add(peer)
                frontier.append(peer)
        seen |= part
        parts.append(part)
    return parts
