"""Streaming data (the online setting of the fair-incentive paper): each node's partition becomes
a stream of `task.stream_chunks` chunks.

Each node's partition is put in a seeded random order (per node) and cut into C near-equal
consecutive chunks. Round t (1-based) trains on the node's chunk (t - 1) mod C, taken from its
noisy copy of the data; the evaluation set of round t is the union of every node's chunk t mod C
(the next one) taken from the clean data. When the rounds outlast the chunks the stream wraps
around (the authors' run stops instead): :func:`wrap_notice` says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgossip.base.seeding import stream


def chunk_of(round_: int, chunks: int) -> tuple[int, int]:
    """(training chunk, evaluation chunk) of 1-based round `round_`: (t - 1) mod C and t mod C."""
    if round_ < 1:
        raise ValueError(f"stream rounds start at 1; got {round_}")
    return (round_ - 1) % chunks, round_ % chunks


def chunk_positions(size: int, chunks: int, chunk: int) -> slice:
    """Positions of chunk `chunk` of C near-equal consecutive chunks of `size` items."""
    return slice(size * chunk // chunks, size * (chunk + 1) // chunks)


def stream_order(seed: int, node: int, size: int) -> np.ndarray:
    """The seeded order in which node `node` streams its `size` examples."""
    return stream(seed, "stream", node).permutation(size)


def check_chunks(parts: Sequence[np.ndarray], chunks: int) -> None:
    """Every node must hold at least one example per chunk."""
    smallest = min(range(len(parts)), key=lambda node: len(parts[node]))
    if len(parts[smallest]) < chunks:
        raise ValueError(
            f"task.stream_chunks = {chunks} exceeds the {len(parts[smallest])} training examples of "
            f"node {smallest}: every chunk needs at least one example per node"
        )


def node_chunk(part: np.ndarray, chunks: int, chunk: int, seed: int, node: int) -> np.ndarray:
    """The rows of `part` (node `node`'s partition, as row numbers) in its chunk `chunk`."""
    return part[stream_order(seed, node, len(part))[chunk_positions(len(part), chunks, chunk)]]


def evaluation_chunk(parts: Sequence[np.ndarray], chunks: int, chunk: int, seed: int) -> np.ndarray:
    """The rows of the evaluation set of chunk `chunk`: every node's chunk `chunk`, node by node."""
    return np.concatenate([node_chunk(part, chunks, chunk, seed, node) for node, part in enumerate(parts)])


def wrap_notice(chunks: int, rounds: int) -> str | None:
    """What to tell the user when `rounds` outlast a stream of `chunks` chunks (None otherwise)."""
    if not chunks or rounds < chunks:
        return None
    return (
        f"the stream of task.stream_chunks = {chunks} chunks wraps around: round {chunks} evaluates "
        f"on chunk 0 again and round {chunks + 1} trains on it again ({rounds} rounds)"
    )
