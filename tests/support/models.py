"""Models the tests build by hand: three small float32 tensors with random values, and the
aggregation kernels cut into small blocks so that block combination is exercised; the consensus
distance computed directly, as a reference."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np

from fedgossip.strategies import _blocks

NAMES = ["net.0.weight", "net.0.bias", "net.2.weight"]
SHAPES = [(16, 8), (16,), (4, 16)]


def model(rng: np.random.Generator, scale: float = 1.0) -> list[np.ndarray]:
    """A model of the tensors NAMES with shapes SHAPES: normal values times `scale`, as float32."""
    return [(scale * rng.standard_normal(shape)).astype(np.float32) for shape in SHAPES]


@contextmanager
def small_blocks(size: int) -> Iterator[None]:
    """Process tensors in blocks of `size` elements, to exercise block combination."""
    with mock.patch.object(_blocks, "BLOCK_SIZE", size):
        yield


def direct_consensus(models: list[list[np.ndarray]]) -> float:
    """Mean over models of the L2 distance of the flattened float tensors to their plain average."""
    flat = np.stack(
        [np.concatenate([t.ravel().astype(np.float64) for t in m if t.dtype.kind == "f"]) for m in models]
    )
    return float(np.linalg.norm(flat - flat.mean(axis=0), axis=1).mean())
