"""A user's aggregation rule for fedgossip: centred clipping (Karimireddy, He and Jaggi, 2021).

Any function with this signature can be a strategy, in gossip and in Flower mode alike:

    rule(own, received, weights, **params) -> list of numpy arrays

`own` is the node's model (None on a Flower server), `received` the neighbours' or clients'
models, `weights` their example counts, `params` the `[strategy.params]` table. Name it in the
config as `name = "package.module:function"`; the module is imported from the working directory or
PYTHONPATH. Run from the repository root:

    fedgossip run examples/custom/gossip.toml
    fedgossip run examples/custom/flower.toml

fedgossip checks the result (one array per tensor, same shapes and dtypes, finite values); if the
rule raises or returns something else, the failure is logged with the rule's name and the round,
and that round keeps the node's own model (gossip) or the previous global model (Flower).
"""

from __future__ import annotations

import numpy as np


def centred_clipping(
    own: list[np.ndarray] | None,
    received: list[list[np.ndarray]],
    weights: list[float],
    *,
    max_norm: float = 1.0,
) -> list[np.ndarray]:
    """Centred clipping: the centre plus the mean of the received models' clipped offsets.

        c      = own (gossip), or the coordinate-wise median of the received models (Flower)
        d_k    = x_k - c                                   (over all tensors of model k)
        result = c + (1 / K) sum_k d_k * min(1, max_norm / ||d_k||)

    A model far from the centre moves the result by at most max_norm / K, however far it is.
    Example counts are ignored (a Byzantine sender could inflate them).
    """
    if own is None:
        centre = [np.median(np.stack(tensors), axis=0) for tensors in zip(*received, strict=True)]
    else:
        centre = [np.asarray(tensor, dtype=np.float64) for tensor in own]
    total = [np.zeros_like(c, dtype=np.float64) for c in centre]
    for model in received:
        offset = [np.asarray(x, dtype=np.float64) - c for x, c in zip(model, centre, strict=True)]
        norm = np.sqrt(sum(float(np.sum(d * d)) for d in offset))
        scale = 1.0 if norm <= max_norm else max_norm / norm
        for accumulated, d in zip(total, offset, strict=True):
            accumulated += scale * d
    dtypes = [tensor.dtype for tensor in received[0]]
    return [(c + t / len(received)).astype(dtype) for c, t, dtype in zip(centre, total, dtypes, strict=True)]
