"""The model a DP regression node holds and shares: the table of every party's released
statistics, as three tensors that travel like any model's.

- ``privacy`` (4,): epsilon, delta, bound_x, bound_y of the release (set by the mechanism; zero
  until then);
- ``statistics`` (MAX_PARTIES, d*d + d + 1): row j = party j's noisy vec(S_j), noisy Z_j and
  its row count n_j (public, as in the paper);
- ``known`` (MAX_PARTIES,): 1 where row j holds party j's release, else 0.

Merging tables is their union (a row is the same wherever it comes from: each party releases
once), so a table that has travelled through any number of peers is still post-processing of the
parties' single releases and costs no further privacy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .mechanism import MAX_PARTIES
from .release import Bounds, NoiseLevels

NAMES = ("privacy", "statistics", "known")


def shapes(d: int) -> tuple[tuple[int, ...], ...]:
    """The tensors' shapes for d features."""
    return (4,), (MAX_PARTIES, d * d + d + 1), (MAX_PARTIES,)


def features(tensors: Sequence[np.ndarray]) -> int:
    """d of a table (its statistics rows have d*d + d + 1 columns)."""
    columns = np.shape(tensors[1])[1]
    return next(d for d in range(columns) if d * d + d + 1 == columns)


def empty(d: int) -> list[np.ndarray]:
    """A table with no release and no privacy parameters."""
    return [np.zeros(shape) for shape in shapes(d)]


def with_privacy(
    table: Sequence[np.ndarray], epsilon: float, delta: float, bounds: Bounds
) -> list[np.ndarray]:
    """`table` with the release's privacy parameters set."""
    return [np.array([epsilon, delta, bounds.x, bounds.y]), table[1].copy(), table[2].copy()]


def with_row(
    table: Sequence[np.ndarray], party: int, s: np.ndarray, z: np.ndarray, n: int
) -> list[np.ndarray]:
    """`table` with party `party`'s released (s, z) over n rows."""
    statistics, known = table[1].copy(), table[2].copy()
    statistics[party] = np.concatenate([s.ravel(), z, [n]])
    known[party] = 1.0
    return [table[0].copy(), statistics, known]


def union(tables: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The rows known in any of `tables` (the first table's privacy parameters)."""
    first = tables[0]
    statistics, known = np.array(first[1], dtype=np.float64), np.array(first[2], dtype=np.float64)
    for table in tables[1:]:
        new = (np.asarray(table[2]) > 0) & (known == 0)
        statistics[new] = table[1][new]
        known[new] = 1.0
    return [np.array(first[0], dtype=np.float64), statistics, known]


@dataclass(frozen=True)
class Released:
    """The known releases of a table: parties, S_obs_j, Z_obs_j, n_j, and the noise levels and
    bounds its privacy parameters give (None before they are set)."""

    parties: list[int]
    s: list[np.ndarray]
    z: list[np.ndarray]
    sizes: list[int]
    bounds: Bounds | None
    levels: NoiseLevels | None


def released(table: Sequence[np.ndarray], d: int) -> Released:
    """What `table` holds (d features)."""
    epsilon, delta, bound_x, bound_y = (float(v) for v in table[0])
    bounds = Bounds(bound_x, bound_y) if epsilon > 0 else None
    levels = NoiseLevels.calibrate(epsilon, delta, bounds) if bounds else None
    parties = [int(j) for j in np.flatnonzero(np.asarray(table[2]) > 0)]
    rows = [np.asarray(table[1][j], dtype=np.float64) for j in parties]
    return Released(
        parties,
        [r[: d * d].reshape(d, d) for r in rows],
        [r[d * d : d * d + d] for r in rows],
        [int(r[-1]) for r in rows],
        bounds,
        levels,
    )
