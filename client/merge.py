"""The gossip merge step: a peer's own model and its neighbours' models into one, by strategy name.

Every rule is a pure function of `fedgossip.strategies`; this only maps the config onto it. For
`average` and `vca` the own model keeps weight `own_weight` and the neighbours share the rest in
proportion to their example counts; the robust rules treat the own model as one vote among all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgossip.config import StrategySection
from fedgossip.strategies import (
    coordinate_median,
    trimmed_mean,
    variance_corrected_average,
    weighted_average,
)


def gossip_merge(
    strategy: StrategySection,
    own: list[np.ndarray],
    received: Sequence[list[np.ndarray]],
    num_examples: Sequence[int],
) -> list[np.ndarray]:
    """Merge `own` with the `received` models (weighted by `num_examples`) using `strategy`."""
    if not received:
        return own
    b = strategy.own_weight
    if strategy.name == "average":
        total = float(sum(num_examples))
        return weighted_average([own, *received], [b, *((1 - b) * n / total for n in num_examples)])
    if strategy.name == "vca":
        return variance_corrected_average(
            own,
            list(received),
            own_weight=b,
            eps=strategy.eps,
            ratio=strategy.ratio,
            weights=list(num_examples),
        )
    if strategy.name == "median":
        return coordinate_median([own, *received])
    if strategy.name == "trimmed-mean":
        return trimmed_mean([own, *received], strategy.trim_fraction)
    raise ValueError(f"strategy.name {strategy.name!r} is not a gossip strategy")
