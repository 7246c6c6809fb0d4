"""Variance-corrected averaging (VCA) [Tian, Al-Ars, Kitsak and Hofstee, 2024].

Paper: arxiv.org/abs/2404.04616 ("Vanishing Variance Problem in Fully Decentralized
Neural-Network Systems"). Authors' code: github.com/twoentartian/DFL_torch.

Averaging uncorrelated models (independently initialised, or drifted apart in gossip
learning) shrinks each tensor's variance roughly by the number of models averaged,
below what Xavier/Kaiming initialisation sets for healthy signal propagation. VCA
rescales each merged tensor around its mean so its variance matches the mean variance
of the models that were averaged.
"""

import math
from collections.abc import Collection, Sequence
from numbers import Real

import numpy as np

from fedgossip.base.constraints import Interval

from . import _fused
from ._blocks import WorkspacePool, accumulation_dtype, flat, iter_merged_blocks
from ._moments import RunningMoments, block_m2
from ._typing import FloatArray, NDArray, NDArrays
from ._validation import (
    check_finite,
    check_float_tensors,
    check_indices,
    check_models,
    check_own,
    check_weights,
    raise_non_finite,
)
from .averaging import merge_tensor, workspace_pool


def variance_corrected_average(
    own: NDArrays | None,
    received: Sequence[NDArrays],
    *,
    own_weight: float = 0.5,
    eps: float = 1e-8,
    ratio: float = 1.0,
    weights: Sequence[float] | None = None,
    skip: Collection[int] | None = None,
) -> NDArrays:
    """Merge received models into one's own, restoring each tensor's variance (VCA).

    For every tensor (weights and biases each on their own), with ``x_1 .. x_K`` that
    tensor in the received models, ``w_k`` their normalised weights and ``b`` the own
    weight:

        avg    = sum_k w_k x_k                                  (element-wise)
        merged = b * own + (1 - b) * avg
        target = sum_k w_k var(x_k)                             (population variance)
        mu     = mean(merged),   cur = var(merged)
        k      = sqrt((target + eps) / (cur + eps))
        k      = 1 + ratio * (k - 1)
        result = (merged - mu) * k + mu

    so ``mean(result) = mu`` and, for ``ratio = 1`` and ``eps = 0``,
    ``var(result) = target``: the variance the received models have ("follow
    others"), not the initialisation variance and not the own model's.

    Choices where the paper leaves room (documented, see also the parameters):

    - Weighted variant: with ``weights``, both the average and the target use the
      same weights, ``target = sum_k w_k var(x_k) / sum_k w_k``; equal weights give the
      authors' plain means.
    - Tensors with one element (or none) are merged but not corrected.
    - A constant merged tensor has no spread to rescale: it is returned as merged
      (``k = 1``), also with ``eps = 0`` where the formula would be 0/0. Constant means
      ``cur == 0`` or a spread at float64 rounding level (``cur <= (16 eps_64 mu)^2``).
    - Statistics are exact population statistics accumulated in float64 from the
      unrounded merged tensor; the rescale is applied to the merged tensor rounded to
      the output dtype, in that dtype (a few units in the last place of rounding).

    Parameters
    ----------
    own : Optional[NDArrays]
        This node's model. ``None`` gives the pure corrected average of ``received``.
    received : Sequence[NDArrays]
        The models received from neighbours (at least one), each a list of numpy
        arrays with the same shapes and floating-point dtypes as ``own``.
    own_weight : float (default: 0.5)
        ``b`` in ``[0, 1]``, the weight of ``own`` in the merge (the authors' gossip
        default is 0.5). ``0`` ignores ``own`` except for ``skip`` tensors.
    eps : float (default: 1e-8)
        Non-negative constant regularising ``k`` against tiny variances. The authors'
        torch code uses 1e-4, which is not negligible for small layers (variance
        ~1e-3); their older code used 0.
    ratio : float (default: 1.0)
        Non-negative strength of the correction: 1 is full correction, 0 is plain
        merging, values in between interpolate ``k`` towards 1.
    weights : Optional[Sequence[float]] (default: None)
        One non-negative weight per received model (e.g. example counts), not all
        zero; ``None`` means equal weights. Weight-zero models do not contribute.
    skip : Optional[Collection[int]] (default: None)
        Indices of tensors that are neither averaged nor corrected, e.g. BatchNorm
        running statistics and ``num_batches_tracked``: the result holds a copy of
        ``own``'s tensor (any dtype), or, when ``own`` is ``None``, the plain weighted
        average of the received tensors.

    Returns
    -------
    NDArrays
        New arrays with the shapes and dtypes of the input tensors.

    Raises
    ------
    ValueError
        On an empty ``received`` list, mismatched models (length, shape or dtype,
        naming the tensor), ``own`` not matching them, non-float tensors (other than
        skipped ones with ``own`` given), NaN/Inf anywhere in the floating-point
        inputs, invalid weights, ``own_weight`` outside ``[0, 1]``, negative or
        non-finite ``eps`` or ``ratio``, a bad ``skip`` index, or when the result
        would contain NaN/Inf (a correction factor that overflows).
    """
    models = check_models(received, "received")
    reference = models[0]
    count = len(reference)
    own_weight = Interval(Real, 0.0, 1.0).check("own_weight", own_weight)
    eps = Interval(Real, 0.0).check("eps", eps)
    ratio = Interval(Real, 0.0).check("ratio", ratio)
    skipped = check_indices("skip", skip, count)
    own_model = None if own is None else check_own(own, reference)
    model_weights = check_weights(weights, len(models))
    merged_indices = [index for index in range(count) if index not in skipped]
    check_float_tensors(reference, merged_indices if own_model is not None else range(count))

    received_labels = [f"received[{i}]" for i in range(len(models))]
    if own_model is None:
        labels, coefficients = received_labels, model_weights
    else:
        labels = ["own", *received_labels]
        coefficients = np.concatenate(([own_weight], (1.0 - own_weight) * model_weights))
    pool = workspace_pool(reference, len(coefficients))

    result: NDArrays = []
    for index in range(count):
        tensors = [model[index] for model in models]
        if index in skipped:
            result.append(_skipped_tensor(tensors, received_labels, model_weights, own_model, index, pool))
            continue
        if own_model is not None:
            tensors.insert(0, own_model[index])
        if tensors[0].size <= 1 or ratio == 0.0:
            result.append(merge_tensor(tensors, labels, coefficients, index, pool))
        else:
            result.append(
                _corrected_tensor(tensors, labels, coefficients, model_weights, index, pool, eps, ratio)
            )
    return result


ROUNDING_LEVEL = 16 * float(np.finfo(np.float64).eps)
"""A merged tensor whose standard deviation is below this times its mean is constant."""


def correction_factor(target: float, current: float, eps: float, ratio: float, mean: float = 0.0) -> float:
    """``k = 1 + ratio * (sqrt((target + eps) / (current + eps)) - 1)``.

    ``k = 1`` when the merged tensor is constant: ``current == 0``, or below the float64
    rounding level of its ``mean``, ``(16 eps_64 mean)^2``, where the spread is
    rounding noise that ``k`` would only amplify (with ``eps = 0`` the formula is 0/0
    or x/0 there). Not finite when the quotient overflows (tiny ``current + eps``) or a
    variance is NaN; the caller rejects that.
    """
    if current <= (ROUNDING_LEVEL * mean) ** 2:
        return 1.0
    return 1.0 + ratio * (math.sqrt((target + eps) / (current + eps)) - 1.0)


def _corrected_tensor(
    tensors: list[NDArray],
    labels: list[str],
    coefficients: FloatArray,
    model_weights: FloatArray,
    index: int,
    pool: WorkspacePool,
    eps: float,
    ratio: float,
) -> NDArray:
    """Merge one tensor, gathering statistics, then rescale in place.

    Big float tensors go through the fused kernel when numba is installed (:mod:`._fused`), the
    others block by block with numpy: besides the merge, one BLAS pass for the row sums (which
    also detects NaN/Inf: a sum is finite iff its terms are), one for the sums of squares of the
    received rows, one (block-sized) for the merged block; see :mod:`._moments`.
    """
    first_received = len(tensors) - len(model_weights)  # 1 when own is a row
    sources = [flat(tensor) for tensor in tensors]
    out = np.empty(tensors[0].shape, dtype=tensors[0].dtype)
    out_flat = flat(out)
    workspace = pool.get(accumulation_dtype(out.dtype))
    moments = RunningMoments(len(model_weights) + 1)  # received models, then merged
    with np.errstate(over="ignore", invalid="ignore"):  # overflow ends in the checks below
        if _fused.usable(out.size, out.dtype):
            mean, m2, bad = _fused.merge_moments(
                sources, coefficients, first_received, out_flat, workspace.merged, workspace.block_size
            )
            if bad is not None:
                raise_non_finite(sources, labels, index, bad)
            moments.update(out.size, mean, m2)
        else:
            for block, rows, merged in iter_merged_blocks(sources, coefficients, out_flat, workspace):
                n = rows.shape[1]
                sums = np.dot(rows, workspace.ones[:n])
                if not np.isfinite(sums).all():
                    raise_non_finite(sources, labels, index, block)
                series = [*rows[first_received:], merged]
                series_sums = np.append(sums[first_received:], coefficients @ sums)
                moments.update(n, series_sums / n, block_m2(series, series_sums))

    variance = moments.variance
    current = float(variance[-1])
    target = float(model_weights @ variance[:-1])
    mean = float(moments.mean[-1])
    factor = correction_factor(target, current, eps, ratio, mean)
    if not math.isfinite(factor):
        raise ValueError(
            f"tensor {index}: variance correction factor is not finite "
            f"(target variance {target:g}, merged variance {current:g}, eps {eps:g})"
        )
    if factor != 1.0:
        _rescale_checked(out_flat, factor, mean, current, index, workspace.block_size)
    return out


def _rescale_checked(
    values: NDArray, factor: float, mean: float, variance: float, index: int, block_size: int
) -> None:
    """``values = (values - mean) * factor + mean`` in place; raise if the result overflows.

    Usually computed as ``values * k + mean * (1 - k)`` in the dtype of ``values``, two
    cheap passes per cache-sized block: since ``|x - mean| <= sqrt(n * variance)``, no
    term can overflow when ``k`` and ``(sqrt(n * variance) + |mean|) * (1 + |k|)`` are
    below half the dtype's maximum. Otherwise each block goes through the accumulation
    dtype as ``(x - mean) * k + mean`` and the result is checked for Inf.
    """
    limit = 0.5 * float(np.finfo(values.dtype).max)
    bound = (math.sqrt(values.size * variance) + abs(mean)) * (1.0 + abs(factor))
    if bound < limit and abs(factor) < limit:
        scale = values.dtype.type(factor)
        offset = values.dtype.type(mean * (1.0 - factor))
        for start in range(0, values.size, block_size):
            block = values[start : start + block_size]
            block *= scale
            block += offset
        return
    wide = accumulation_dtype(values.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, values.size, block_size):
            block = values[start : start + block_size]
            block[...] = (block.astype(wide) - mean) * factor + mean
    if not np.isfinite(values).all():
        raise ValueError(f"tensor {index}: variance correction (k = {factor:g}) overflows {values.dtype}")


def _skipped_tensor(
    tensors: list[NDArray],
    labels: list[str],
    model_weights: FloatArray,
    own_model: list[NDArray] | None,
    index: int,
    pool: WorkspacePool,
) -> NDArray:
    """A ``skip`` tensor: a copy of ``own``'s, or the plain weighted average."""
    if own_model is None:
        return merge_tensor(tensors, labels, model_weights, index, pool)
    for tensor, label in zip(tensors, labels, strict=True):
        check_finite(tensor, label, index)
    check_finite(own_model[index], "own", index)
    return own_model[index].copy()


def correct_average(
    average: NDArrays,
    targets: Sequence[float],
    *,
    eps: float = 1e-8,
    ratio: float = 1.0,
    skip: Collection[int] | None = None,
) -> NDArrays:
    """VCA from sums: rescale each tensor of the weighted ``average`` to its ``target`` variance.

    What secure aggregation gives the server instead of the models (no own model): the weighted
    average ``sum_k w_k x_k`` and, per tensor, ``target = sum_k w_k var(x_k)``, both weighted
    sums. The result is :func:`variance_corrected_average`'s for ``own = None`` up to the float64
    statistics being taken here in one pass: per tensor ``k = correction_factor(target,
    var(average), eps, ratio, mean(average))`` and ``(average - mean) * k + mean``, in the
    tensor's dtype; tensors in ``skip``, with one element or none, or ``ratio = 0`` are returned as
    they are. Raises ValueError on a non-finite input or result.
    """
    eps = Interval(Real, 0.0).check("eps", eps)
    ratio = Interval(Real, 0.0).check("ratio", ratio)
    skipped = check_indices("skip", skip, len(average))
    if len(targets) != len(average):
        raise ValueError(f"{len(targets)} target variances for {len(average)} tensors")
    result: NDArrays = []
    for index, (tensor, target) in enumerate(zip(average, targets, strict=True)):
        out = np.array(tensor, copy=True)
        if index in skipped or out.size <= 1 or ratio == 0.0:
            result.append(out)
            continue
        values = out.astype(np.float64)
        mean, current = float(values.mean()), float(values.var())
        factor = correction_factor(float(target), current, eps, ratio, mean)
        if not (math.isfinite(factor) and math.isfinite(current)):
            raise ValueError(
                f"tensor {index}: variance correction factor is not finite "
                f"(target variance {target:g}, average's variance {current:g}, eps {eps:g})"
            )
        if factor != 1.0:
            _rescale_checked(flat(out), factor, mean, current, index, 1 << 16)
        result.append(out)
    return result
