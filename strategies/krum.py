"""Krum and Multi-Krum: Byzantine-tolerant selection of models [Blanchard et al., 2017].

Paper: proceedings.neurips.cc/paper/2017/hash/f4b9ec30ad9f68f89b29639786cb62ef-Abstract.html
("Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent").

Each model is scored by how close it is to its nearest neighbours among the others; models far
from the crowd (up to ``f`` Byzantine ones) score badly and are never selected. Distances are
exact squared Euclidean distances over all tensors, accumulated in float64 block by block from
the differences (not from ``|x|^2 + |y|^2 - 2 x.y``, which cancels when models are close).
"""

from collections.abc import Sequence
from numbers import Integral

import numpy as np

from fedgossip.base.constraints import Interval

from ._blocks import accumulation_dtype, flat, iter_blocks
from ._typing import FloatArray, NDArrays
from ._validation import (
    check_float_tensors,
    check_models,
    raise_non_finite,
)
from .averaging import weighted_average, workspace_pool


def squared_distances(models: Sequence[NDArrays]) -> FloatArray:
    """Pairwise squared Euclidean distances ``D[i, j] = sum_t ||m_i[t] - m_j[t]||^2`` (float64).

    Parameters
    ----------
    models : Sequence[NDArrays]
        The models, each a list of numpy arrays; all models have the same number of tensors
        with the same shapes and floating-point dtypes.

    Returns
    -------
    FloatArray
        A symmetric ``(n, n)`` float64 matrix with a zero diagonal.

    Raises
    ------
    ValueError
        On an empty model list, mismatched models, non-float dtypes or NaN/Inf values.
    """
    checked = check_models(models)
    reference = checked[0]
    check_float_tensors(reference, range(len(reference)))
    count = len(checked)
    labels = [f"models[{i}]" for i in range(count)]
    pool = workspace_pool(reference, count)
    distances = np.zeros((count, count))
    for index in range(len(reference)):
        sources = [flat(model[index]) for model in checked]
        workspace = pool.get(accumulation_dtype(reference[index].dtype))
        for block, rows in iter_blocks(sources, workspace):
            if not np.isfinite(rows).all():
                raise_non_finite(sources, labels, index, block)
            for i in range(count - 1):
                differences = rows[i + 1 :] - rows[i]
                distances[i, i + 1 :] += np.einsum("ij,ij->i", differences, differences)
    return distances + distances.T


def krum_scores(models: Sequence[NDArrays], f: int) -> FloatArray:
    """Krum score of every model: the sum of its squared distances to its ``n - f - 2`` nearest
    other models (``n`` models, ``f`` of them assumed Byzantine; needs ``n > 2f + 2``).

    Raises
    ------
    ValueError
        As :func:`squared_distances`, or when ``f`` is not an integer with ``n > 2f + 2``.
    """
    count = len(models) if isinstance(models, Sequence) else 0
    f = Interval(Integral, 0).check("f", f)
    if count <= 2 * f + 2:
        raise ValueError(f"krum needs more than 2f + 2 = {2 * f + 2} models (f = {f}), got {count}")
    distances = squared_distances(models)
    nearest = count - f - 2
    others = [np.delete(distances[i], i) for i in range(count)]
    return np.array([np.sort(row)[:nearest].sum() for row in others])


def krum_select(models: Sequence[NDArrays], f: int, m: int) -> list[int]:
    """Indices (ascending) of the ``m`` best-scored models; ties go to the lower index."""
    scores = krum_scores(models, f)
    m = Interval(Integral, 1, len(scores)).check("m", m)
    return sorted(int(i) for i in np.argsort(scores, kind="stable")[:m])


def krum(models: Sequence[NDArrays], f: int) -> NDArrays:
    """Krum: a copy of the model with the lowest :func:`krum_scores` score.

    With ``n`` models of which at most ``f`` are Byzantine (``n > 2f + 2``), the score of model
    ``i`` is ``s(i) = sum_{j in N(i)} ||m_i - m_j||^2`` over the set ``N(i)`` of its ``n - f - 2``
    nearest other models; the result is ``m_{i*}`` with ``i* = argmin_i s(i)``.

    Parameters
    ----------
    models : Sequence[NDArrays]
        The models, each a list of numpy arrays; all models have the same number of tensors
        with the same shapes and floating-point dtypes.
    f : int
        Assumed number of Byzantine models, ``>= 0`` with ``len(models) > 2f + 2``.

    Returns
    -------
    NDArrays
        New arrays (a copy of the selected model).
    """
    (selected,) = krum_select(models, f, 1)
    return [np.array(tensor, copy=True) for tensor in models[selected]]


def multi_krum(models: Sequence[NDArrays], f: int, m: int) -> NDArrays:
    """Multi-Krum: the plain (unweighted) mean of the ``m`` models with the lowest Krum scores.

    ``result = (1 / m) sum_{i in S} m_i`` where ``S`` holds the ``m`` best-scored models (see
    :func:`krum`); ``m = 1`` is Krum, ``m = n`` the plain mean. The mean is unweighted, as in
    the paper: weighting by reported example counts would let a Byzantine model that passed the
    selection claim a large share.

    Parameters
    ----------
    models : Sequence[NDArrays]
        The models (as in :func:`krum`).
    f : int
        Assumed number of Byzantine models, ``>= 0`` with ``len(models) > 2f + 2``.
    m : int
        Number of models averaged, in ``[1, len(models)]``.

    Returns
    -------
    NDArrays
        New arrays with the shapes and dtypes of the input tensors.
    """
    selected = krum_select(models, f, m)
    return weighted_average([models[i] for i in selected])
