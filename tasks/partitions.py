"""Seeded splits of a training set among nodes: IID, Dirichlet label skew, label shards,
Dirichlet quantity skew and power-law sizes (plain numpy: flwr-datasets costs 2.5 s and ~300 MB
per process); and the one setting that does not split: every node samples its batches from the
whole training set by its own Dirichlet label probabilities (`sampling_weights`)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from fedgossip.base.constraints import Interval, StrOptions
from fedgossip.base.seeding import stream

# The ways of splitting a training set among nodes (TaskConfig adds "none": every node gets it all,
# and DIRICHLET_SAMPLING: every node gets it all and samples it by its label probabilities).
SCHEMES = ("iid", "dirichlet", "shards", "quantity", "powerlaw")
DIRICHLET_SAMPLING = "dirichlet-sampling"
COVARIATE = "covariate"  # covariate shift among nodes: `covariate.covariate_partition`

# Power-law sizes (the fair-incentive paper's code): proportional to the quantiles ppf(q) = q^(1/a)
# of a power law with a = 1.659 at q evenly spaced in [0.3, 0.99].
_POWERLAW_A = 1.659
_POWERLAW_Q = (0.3, 0.99)

# Dirichlet label-skew draws tried before giving up on the minimum node size.
_MAX_DRAWS = 1000


def _groups_of(order: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Group id per example: the first sizes[0] examples of `order` form group 0, and so on."""
    group = np.empty(len(order), dtype=np.int64)
    group[order] = np.repeat(np.arange(len(sizes)), sizes)
    return group


def _equal_sizes(n: int, parts: int) -> np.ndarray:
    """Sizes of `parts` near-equal parts of n (the first n mod parts are one larger)."""
    return n // parts + (np.arange(parts) < n % parts)


def _check_room(scheme: str, n: int, num_nodes: int, min_size: int) -> None:
    """Raise ValueError when n examples cannot give every node min_size of them."""
    if n < num_nodes * min_size:
        raise ValueError(
            f"{scheme} partition of {n} examples cannot give each of {num_nodes} nodes "
            f"min_size={min_size} examples"
        )


def _iid(labels: np.ndarray, num_nodes: int, rng: np.random.Generator) -> np.ndarray:
    """Owner per example: a shuffled equal split (sizes differ by at most one)."""
    _check_room("iid", len(labels), num_nodes, 1)
    return _groups_of(rng.permutation(len(labels)), _equal_sizes(len(labels), num_nodes))


def _dirichlet(
    labels: np.ndarray, num_nodes: int, alpha: float, min_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Owner per example: each class split among nodes in Dirichlet(alpha) proportions, redrawn
    until every node holds at least min_size examples."""
    _check_room("dirichlet", len(labels), num_nodes, min_size)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    owner = np.empty(len(labels), dtype=np.int64)
    for _ in range(_MAX_DRAWS):
        for members in by_class:
            counts = rng.multinomial(len(members), rng.dirichlet(np.full(num_nodes, alpha)))
            owner[members] = np.repeat(np.arange(num_nodes), counts)
        if np.bincount(owner, minlength=num_nodes).min() >= min_size:
            return owner
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) label partition of {len(labels)} examples gave each of "
        f"{num_nodes} nodes at least min_size={min_size} examples in {_MAX_DRAWS} draws; "
        "use a larger alpha, fewer nodes or a smaller min_size"
    )


def _shards(labels: np.ndarray, num_nodes: int, shards_per_node: int, rng: np.random.Generator) -> np.ndarray:
    """Owner per example: label-sorted data cut into num_nodes * shards_per_node shards, each node
    taking shards_per_node random ones. When the shard count does not divide the data, the first
    (n mod shards) shards hold one extra example, so every example is assigned."""
    num_shards = num_nodes * shards_per_node
    if len(labels) < num_shards:
        raise ValueError(
            f"shards partition of {len(labels)} examples cannot cut {num_shards} non-empty shards "
            f"({num_nodes} nodes x shards_per_node={shards_per_node})"
        )
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shard = _groups_of(by_label, _equal_sizes(len(labels), num_shards))
    shard_owner = rng.permutation(np.repeat(np.arange(num_nodes), shards_per_node))
    return shard_owner[shard]


def _quantity(
    labels: np.ndarray, num_nodes: int, alpha: float, min_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Owner per example: IID labels; node sizes min_size plus a Dirichlet(alpha) share."""
    _check_room("quantity", len(labels), num_nodes, min_size)
    extra = rng.multinomial(len(labels) - num_nodes * min_size, rng.dirichlet(np.full(num_nodes, alpha)))
    return _groups_of(rng.permutation(len(labels)), min_size + extra)


def _powerlaw(labels: np.ndarray, num_nodes: int, min_size: int, rng: np.random.Generator) -> np.ndarray:
    """Owner per example: IID labels; node i's size proportional to the power-law quantile
    ppf(q_i) = q_i^(1/a), q evenly spaced in [0.3, 0.99] (node 0 smallest; the last about twice
    its size), above a floor of min_size; rounded by largest remainders."""
    _check_room("powerlaw", len(labels), num_nodes, min_size)
    shares = np.linspace(*_POWERLAW_Q, num_nodes) ** (1 / _POWERLAW_A)
    ideal = (len(labels) - num_nodes * min_size) * shares / shares.sum()
    extra = np.floor(ideal).astype(np.int64)
    extra[np.argsort(extra - ideal, kind="stable")[: len(labels) - num_nodes * min_size - extra.sum()]] += 1
    return _groups_of(rng.permutation(len(labels)), min_size + extra)


def partition_indices(
    labels: np.ndarray,
    num_nodes: int,
    *,
    scheme: str = "iid",
    alpha: float = 0.5,
    shards_per_node: int = 2,
    seed: int = 0,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Split example indices among nodes; disjoint, covering, sorted, and a function of the seed.

    "iid": shuffled equal split. "dirichlet": label skew, each class divided in Dirichlet(alpha)
    proportions (redrawn until each node has min_size examples). "shards": pathological label
    skew, shards_per_node label-sorted shards per node. "quantity": IID labels, sizes skewed by
    Dirichlet(alpha) above a floor of min_size. Smaller alpha means stronger skew. "powerlaw": IID
    labels, sizes growing with the node id as power-law quantiles (the fair-incentive setting).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-d integer array; got {labels.dtype} of shape {labels.shape}")
    Interval(Integral, 1).check("num_nodes", num_nodes)
    StrOptions(*SCHEMES).check("scheme", scheme)
    Interval(Real, 0.0, closed="neither").check("alpha", alpha)
    Interval(Integral, 1).check("shards_per_node", shards_per_node)
    Interval(Integral, 0).check("seed", seed)
    Interval(Integral, 1).check("min_size", min_size)
    rng = stream(seed, "partition")
    if scheme == "iid":
        owner = _iid(labels, num_nodes, rng)
    elif scheme == "dirichlet":
        owner = _dirichlet(labels, num_nodes, alpha, min_size, rng)
    elif scheme == "shards":
        owner = _shards(labels, num_nodes, shards_per_node, rng)
    elif scheme == "quantity":
        owner = _quantity(labels, num_nodes, alpha, min_size, rng)
    else:
        owner = _powerlaw(labels, num_nodes, min_size, rng)
    sizes = np.bincount(owner, minlength=num_nodes)
    return np.split(np.argsort(owner, kind="stable"), np.cumsum(sizes)[:-1])


def sampling_weights(
    labels: np.ndarray, num_classes: int, num_nodes: int, node: int, alpha: float, seed: int
) -> np.ndarray:
    """Node `node`'s probability of drawing each example of the whole training set: its label
    probabilities, Dirichlet(alpha) (drawn for every node from the seed), each spread evenly over
    that label's examples: a label, then one of its examples, as the vanishing-variance authors'
    LabelProbabilitySampler (DFL_torch). Sums to 1; labels absent from `labels` lose their share."""
    Interval(Integral, 1).check("num_nodes", num_nodes)
    Interval(Integral, 0, num_nodes - 1).check("node", node)
    Interval(Real, 0.0, closed="neither").check("alpha", alpha)
    probabilities = stream(seed, "partition").dirichlet(np.full(num_classes, alpha), size=num_nodes)[node]
    counts = np.bincount(labels, minlength=num_classes)
    weights = probabilities[labels] / counts[labels]
    return weights / weights.sum()
