"""Coordinate-wise robust aggregation: median and trimmed mean [Yin et al., 2018].

Paper: arxiv.org/abs/1803.01498 ("Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates").
"""

from collections.abc import Callable, Sequence
from numbers import Real

import numpy as np

from fedgossip.base.constraints import Interval

from ._blocks import WorkspacePool, accumulation_dtype, flat, iter_blocks
from ._typing import NDArray, NDArrays
from ._validation import (
    check_float_tensors,
    check_models,
    raise_non_finite,
)
from .averaging import workspace_pool


def coordinate_median(models: Sequence[NDArrays]) -> NDArrays:
    """Element-wise median of the models (as in Flower's ``FedMedian``).

    For models ``m_1 .. m_K``, each element of each tensor of the result is

        med = median(m_1[j], .., m_K[j]),

    with :func:`numpy.median` semantics: the middle value for odd ``K``, the mean of
    the two middle values for even ``K``.

    Parameters
    ----------
    models : Sequence[NDArrays]
        The models, each a list of numpy arrays; all models have the same number of
        tensors with the same shapes and floating-point dtypes.

    Returns
    -------
    NDArrays
        New arrays with the shapes and dtypes of the input tensors.

    Raises
    ------
    ValueError
        On an empty model list, mismatched models, non-float dtypes or NaN/Inf values.
    """

    def median(rows: NDArray) -> NDArray:
        return np.median(rows, axis=0, overwrite_input=True)

    return _coordinatewise(models, median)


def trimmed_mean(models: Sequence[NDArrays], trim_fraction: float) -> NDArrays:
    """Element-wise trimmed mean of the models (as in Flower's ``FedTrimmedAvg``).

    For ``K`` models and ``c = floor(trim_fraction * K)``, each element of each tensor
    of the result is the mean of the ``K - 2c`` values left after dropping the ``c``
    smallest and the ``c`` largest of ``m_1[j], .., m_K[j]`` (the semantics of
    ``scipy.stats.trim_mean``). The mean is accumulated in float64.

    Parameters
    ----------
    models : Sequence[NDArrays]
        The models, each a list of numpy arrays; all models have the same number of
        tensors with the same shapes and floating-point dtypes.
    trim_fraction : float
        Fraction cut off at each end, in ``[0, 0.5)``.

    Returns
    -------
    NDArrays
        New arrays with the shapes and dtypes of the input tensors.

    Raises
    ------
    ValueError
        On an empty model list, mismatched models, non-float dtypes, NaN/Inf values or
        ``trim_fraction`` outside ``[0, 0.5)``.
    """
    fraction = Interval(Real, 0.0, 0.5, closed="left").check("trim_fraction", trim_fraction)

    def trimmed(rows: NDArray) -> NDArray:
        count = rows.shape[0]
        cut = int(fraction * count)  # as scipy.stats.trim_mean
        if cut > 0:
            rows.partition((cut, count - cut - 1), axis=0)
        kept = rows[cut : count - cut]
        return np.mean(kept, axis=0, dtype=accumulation_dtype(rows.dtype))

    return _coordinatewise(models, trimmed)


def _coordinatewise(models: Sequence[NDArrays], reduce: Callable[[NDArray], NDArray]) -> NDArrays:
    """Apply ``reduce`` to ``(models, block)`` stacks of every tensor, block by block."""
    checked = check_models(models)
    reference = checked[0]
    check_float_tensors(reference, range(len(reference)))
    labels = [f"models[{i}]" for i in range(len(checked))]
    pool = workspace_pool(reference, len(checked))
    return [
        _reduce_tensor([model[index] for model in checked], labels, index, pool, reduce)
        for index in range(len(reference))
    ]


def _reduce_tensor(
    tensors: list[NDArray],
    labels: list[str],
    index: int,
    pool: WorkspacePool,
    reduce: Callable[[NDArray], NDArray],
) -> NDArray:
    sources = [flat(tensor) for tensor in tensors]
    out = np.empty(tensors[0].shape, dtype=tensors[0].dtype)
    out_flat = flat(out)
    for block, rows in iter_blocks(sources, pool.get(out.dtype)):
        if not np.isfinite(rows).all():
            raise_non_finite(sources, labels, index, block)
        out_flat[block] = reduce(rows)
    return out
