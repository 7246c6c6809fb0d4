"""Weighted averaging of models (FedAvg) [McMahan et al., 2017].

Paper: arxiv.org/abs/1602.05629
"""

from collections.abc import Sequence

import numpy as np

from . import _fused
from ._blocks import WorkspacePool, accumulation_dtype, flat, iter_merged_blocks
from ._typing import FloatArray, NDArray, NDArrays
from ._validation import (
    check_finite,
    check_float_tensors,
    check_models,
    check_weights,
    raise_non_finite,
)


def weighted_average(models: Sequence[NDArrays], weights: Sequence[float] | None = None) -> NDArrays:
    """Average models tensor by tensor, weighting each model (FedAvg).

    For models ``m_1 .. m_K`` with weights ``w_1 .. w_K`` (e.g. the clients' example
    counts), each tensor of the result is

        avg = sum_k w_k m_k / sum_k w_k.

    Sums are accumulated in float64 (or a wider input dtype) and rounded once to the
    input dtype.

    Parameters
    ----------
    models : Sequence[NDArrays]
        The models, each a list of numpy arrays; all models have the same number of
        tensors with the same shapes and floating-point dtypes.
    weights : Optional[Sequence[float]] (default: None)
        One non-negative weight per model, not all zero. ``None`` means equal weights.
        Models of weight zero are checked but do not contribute.

    Returns
    -------
    NDArrays
        New arrays with the shapes and dtypes of the input tensors.

    Raises
    ------
    ValueError
        On an empty model list, mismatched models (length, shape or dtype, naming the
        tensor), non-float dtypes, NaN/Inf values, or invalid weights.
    """
    checked = check_models(models)
    reference = checked[0]
    check_float_tensors(reference, range(len(reference)))
    coefficients = check_weights(weights, len(checked))
    labels = [f"models[{i}]" for i in range(len(checked))]
    pool = workspace_pool(reference, len(checked))
    return [
        merge_tensor([model[index] for model in checked], labels, coefficients, index, pool)
        for index in range(len(reference))
    ]


def merge_tensor(
    tensors: Sequence[NDArray],
    labels: Sequence[str],
    coefficients: FloatArray,
    index: int,
    pool: WorkspacePool,
) -> NDArray:
    """``sum_i c_i t_i`` for same-shaped float ``tensors``, checking for NaN/Inf.

    Tensors with a zero coefficient are only checked (one :func:`numpy.isfinite` pass),
    the others are merged block by block (big tensors in one compiled pass when numba is
    installed, :mod:`._fused`); a block whose merged sum is not finite is rescanned to name
    the culprit (``c * nan`` and ``c * inf`` are not finite for ``c > 0``). ``index`` and
    ``labels`` only serve error messages.
    """
    active = np.flatnonzero(coefficients > 0)
    for i in np.flatnonzero(coefficients <= 0):
        check_finite(tensors[i], labels[i], index)
    sources = [flat(tensors[i]) for i in active]
    active_labels = [labels[i] for i in active]
    out = np.empty(tensors[0].shape, dtype=tensors[0].dtype)
    workspace = pool.get(accumulation_dtype(out.dtype))
    if _fused.usable(out.size, out.dtype):
        with np.errstate(over="ignore", invalid="ignore"):
            bad = _fused.merge(
                sources, coefficients[active], flat(out), workspace.merged, workspace.block_size
            )
        if bad is not None:
            raise_non_finite(sources, active_labels, index, bad)
        return out
    blocks = iter_merged_blocks(sources, coefficients[active], flat(out), workspace)
    with np.errstate(over="ignore", invalid="ignore"):  # detected below, then raised
        for block, _, merged in blocks:
            # the sum of a block is finite iff every value is (unless huge values overflow)
            if not np.isfinite(np.add.reduce(merged)) and not np.isfinite(merged).all():
                raise_non_finite(sources, active_labels, index, block)
    return out


def workspace_pool(model: NDArrays, rows: int) -> WorkspacePool:
    """Workspaces big enough to merge ``rows`` models shaped like ``model``."""
    return WorkspacePool(rows, max((tensor.size for tensor in model), default=1))
