"""Numba kernels of :mod:`._fused`: one pass over the models that merges (and gathers moments).

Imported only by :func:`._fused.kernels`, never at package import: it imports numba (the
``fast`` extra); its import and loading the compiled kernels cost about 0.35 CPU-s of a process.
The functions are compiled on first call (1.1-1.5 CPU-s) and cached on disk (``cache=True``: in
``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` next to this file, or numba's user-wide cache
directory when that is not writable), so each machine compiles them once, not each peer process.

The models' tensors are passed as an array of data addresses (see :func:`_pointer`): one
compiled signature serves any number of models, where a tuple of arrays would compile once per
count and numba's typed list costs seconds per process to build.
"""

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from ._moments import CANCELLATION_LIMIT

FASTMATH = {"reassoc", "contract"}
"""Flags of the inner loops: reassociated sums vectorise; NaN and Inf semantics are kept."""


@intrinsic
def _pointer(typingctx, address, like):  # type: ignore[no-untyped-def]
    """``address`` (an integer) as a pointer to elements of ``like``'s dtype."""
    pointer = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(address, like), codegen


# The passes take slices and index them from 0. With ``array[start + j]``, numba's negative-index
# wraparound widens the address range LLVM checks for overlap before its vectorised loop; a buffer
# lying just after a source in memory then sent the loop to its scalar version, whose sums run in
# another order: results depended on where the arrays were. With exact ranges, distinct arrays
# always take the vectorised loop, and each sum's order depends only on the block's length.


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def _row_pass(row, coefficient, merged, first):  # type: ignore[no-untyped-def]
    """Add ``coefficient * row`` to ``merged[:row.size]`` (set it if ``first``); sum, squares of ``row``."""
    total = 0.0
    squares = 0.0
    if first:
        for j in range(row.size):
            x = np.float64(row[j])
            merged[j] = coefficient * x
            total += x
            squares += x * x
    else:
        for j in range(row.size):
            x = np.float64(row[j])
            merged[j] += coefficient * x
            total += x
            squares += x * x
    return total, squares


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def _store_pass(merged, out):  # type: ignore[no-untyped-def]
    """``out[:] = merged[:out.size]`` (rounded to ``out``'s dtype); sum and sum of squares."""
    total = 0.0
    squares = 0.0
    for j in range(out.size):
        value = merged[j]
        out[j] = value
        total += value
        squares += value * value
    return total, squares


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def _deviations_pass(values, mean):  # type: ignore[no-untyped-def]
    """``sum_j (values[j] - mean)^2`` (two-pass M2 of a cancelling block)."""
    total = 0.0
    for j in range(values.size):
        deviation = np.float64(values[j]) - mean
        total += deviation * deviation
    return total


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def _merge_pass(row, coefficient, merged, first):  # type: ignore[no-untyped-def]
    """Add ``coefficient * row`` to ``merged[:row.size]`` (set it if ``first``)."""
    if first:
        for j in range(row.size):
            merged[j] = coefficient * np.float64(row[j])
    else:
        for j in range(row.size):
            merged[j] += coefficient * np.float64(row[j])


@numba.njit(cache=True, nogil=True)
def merge(addresses, coefficients, out, merged, block_size):  # type: ignore[no-untyped-def]
    """Merge the sources into ``out``: ``merge_moments`` without the moments (plain averaging).

    Returns the start of the first block whose merged values are not all finite, else -1 (a
    non-finite sum of finite merged values is overflow of the sum only, as in numpy's path).
    """
    size = out.size
    rows = addresses.size
    sources = [numba.carray(_pointer(addresses[i], out), size) for i in range(rows)]
    for start in range(0, size, block_size):
        stop = min(start + block_size, size)
        for i in range(rows):
            _merge_pass(sources[i][start:stop], coefficients[i], merged, i == 0)
        if not np.isfinite(_store_pass(merged, out[start:stop])[0]):
            for j in range(stop - start):
                if not np.isfinite(merged[j]):
                    return start
    return -1


@numba.njit(cache=True, nogil=True)
def merge_moments(addresses, coefficients, first, out, merged, block_size, mean, m2):  # type: ignore[no-untyped-def]
    """Merge the sources into ``out`` and accumulate the moments of sources ``first..`` and the merge.

    ``addresses[i]`` is the data address of the i-th flat C-contiguous source, of ``out``'s
    dtype and size. Per block of ``block_size``: one pass per source (float64 conversion,
    ``merged += c_i x_i``, its sum and sum of squares), one over the float64 ``merged`` buffer
    (stored to ``out``, its squares); the merge's sum is ``sum_i c_i sum_i``. The block moments
    follow :func:`._moments.block_m2` (one-pass formula, two-pass under cancellation) and are
    combined into ``mean``/``m2`` (zeros on entry; sources ``first..``, then the merge) as
    :class:`._moments.RunningMoments` does. Returns the start of the first block whose sum of
    some source is not finite (the caller names the culprit), else -1.
    """
    size = out.size
    rows = addresses.size
    sources = [numba.carray(_pointer(addresses[i], out), size) for i in range(rows)]
    series = rows - first + 1
    sums = np.empty(rows)
    squares = np.empty(rows)
    block_mean = np.empty(series)
    block_m2 = np.empty(series)
    count = 0
    for start in range(0, size, block_size):
        stop = min(start + block_size, size)
        n = stop - start
        for i in range(rows):
            sums[i], squares[i] = _row_pass(sources[i][start:stop], coefficients[i], merged, i == 0)
        merged_sum = 0.0
        for i in range(rows):
            if not np.isfinite(sums[i]):
                return start
            merged_sum += coefficients[i] * sums[i]
        merged_squares = _store_pass(merged, out[start:stop])[1]
        for s in range(series):
            last = s == series - 1
            total = merged_sum if last else sums[first + s]
            square = merged_squares if last else squares[first + s]
            block_mean[s] = total / n
            deviations = square - total * (total / n)
            if not (deviations >= square * CANCELLATION_LIMIT):  # also NaN
                if last:
                    deviations = _deviations_pass(merged[:n], block_mean[s])
                else:
                    deviations = _deviations_pass(sources[first + s][start:stop], block_mean[s])
            block_m2[s] = deviations
        combined = count + n
        for s in range(series):
            delta = block_mean[s] - mean[s]
            m2[s] += block_m2[s] + delta * delta * (count * n / combined)
            mean[s] += delta * (n / combined)
        count = combined
    return -1
