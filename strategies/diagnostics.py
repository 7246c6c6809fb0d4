"""Diagnostics of models, not aggregation rules: per-tensor variance and the consensus distance.

Why: averaging uncorrelated models shrinks each tensor's variance (the vanishing-variance problem,
Tian et al. 2024), and gossip learning only converges once the node models agree. The variance of
every tensor of a node's model, and how far the nodes' models are from their average, make both
visible. Like the rules, these functions read their inputs block by block in float64 (one pass,
no copy of a big tensor) and never modify them.
"""

from collections.abc import Iterable, Sequence

import numpy as np

from ._blocks import BLOCK_SIZE, Workspace, flat, iter_blocks
from ._moments import RunningMoments, block_m2
from ._typing import NDArray, NDArrays
from ._validation import check_models


def tensor_variance(array: NDArray, workspace: Workspace | None = None) -> float:
    """Population variance (``ddof=0``) of the entries of one float tensor, as ``np.var`` gives
    it, in one blockwise pass (sums in float64, see :mod:`._moments`). NaN for an empty tensor.
    A tensor of one block is read into a float64 copy of its own, without `workspace`."""
    source = flat(np.asarray(array))
    if source.size == 0:
        return float("nan")
    if source.size <= BLOCK_SIZE:  # the same arithmetic, without a workspace's buffers (a run's records)
        blocks: Iterable[NDArray] = [source.astype(np.float64).reshape(1, -1)]
    else:
        workspace = workspace or Workspace(1, source.size, np.dtype(np.float64))
        blocks = (rows for _, rows in iter_blocks([source], workspace))
    moments = RunningMoments(1)
    for rows in blocks:
        sums = rows.sum(axis=1)
        moments.update(rows.shape[1], sums / rows.shape[1], block_m2(list(rows), sums))
    return float(moments.variance[0])


def layer_variance(names: Sequence[str], arrays: NDArrays) -> dict[str, float]:
    """The population variance of each floating-point tensor's entries, by tensor name.

    Integer tensors (``num_batches_tracked``) and empty ones are left out. Each tensor is read once,
    block by block; ``layer_variance(names, arrays)[n] == np.var(arrays[i])`` to rounding.
    """
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} names for {len(arrays)} tensors")
    floats = [(name, a) for name, a in zip(names, arrays, strict=True) if _is_float(a) and a.size]
    largest = max((a.size for _, a in floats), default=1)
    workspace = Workspace(1, largest, np.dtype(np.float64)) if largest > BLOCK_SIZE else None
    return {name: tensor_variance(array, workspace) for name, array in floats}


def consensus_distance(models: Sequence[NDArrays]) -> float:
    """Mean distance of the models to their average: ``(1/n) sum_i ||x_i - x_bar||_2``.

    ``x_i`` is model ``i`` with its floating-point tensors flattened and concatenated (integer
    tensors are left out), ``x_bar = (1/n) sum_i x_i`` the unweighted average: every node counts
    the same, whatever its example count (the question is how far the nodes disagree, not what a
    weighted aggregate is). 0 for one model, or for identical ones. Tensor by tensor, block by
    block in float64: memory beyond the inputs is one block per model.
    """
    checked = check_models(models)
    indices = [i for i, tensor in enumerate(checked[0]) if _is_float(tensor) and tensor.size]
    squares = np.zeros(len(checked))
    if indices:
        size = max(checked[0][i].size for i in indices)
        workspace = Workspace(len(checked), size, np.dtype(np.float64))
        for index in indices:
            sources = [flat(model[index]) for model in checked]
            for _, rows in iter_blocks(sources, workspace):
                deviations = rows - rows.mean(axis=0)
                squares += np.einsum("ij,ij->i", deviations, deviations)
    return float(np.sqrt(squares).mean())


def _is_float(array: NDArray) -> bool:
    return np.issubdtype(np.asarray(array).dtype, np.floating)
