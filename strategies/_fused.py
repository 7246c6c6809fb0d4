"""Fused merge passes, compiled with numba when it is installed (the ``fast`` extra).

With numpy's primitives each pass over a block is a separate sweep of its rows: the float64
copy, the merge and, for VCA, the row sums and the sums of squares (see
:func:`.variance_correction._corrected_tensor`). :func:`merge_moments` does all of them in one
pass over the float32 (or float64) models, :func:`merge` the copy and the merge of plain
averaging (:func:`.averaging.merge_tensor`), in the compiled kernels of :mod:`._fused_kernels`.
For 8 x 25M float32, VCA then takes about 1.15x the time of averaging with the same kernels (1.5x
with numpy's), and both are 2-3x faster than with numpy (docs/performance.md).

When they are used: for tensors of at least :data:`MIN_SIZE` elements of a float32 or float64
dtype, when numba imports and ``FEDGOSSIP_NUMBA`` is not ``0`` (:data:`enabled`, read at import).
Small models (every bundled config) never import numba, so gossip peers do not pay its import
and the kernels' loading (about 0.35 CPU-s a process); big ones pay it once per process and the
compilation (1.1-1.5 CPU-s) once per machine: the kernels are cached on disk.

Numerics: the same float64 formulas as the numpy path (:mod:`._moments`, block by block), summed
in another order, so statistics agree to about 1e-15 relative (tested to 1e-12) and merged values
to one unit of rounding of the output dtype (a float64 sum on the other side of a rounding
boundary). The sums are reassociated (fast-math ``reassoc``: vectorised) in an order that
depends only on the block's length, not on where the arrays are (tested). NaN/Inf inputs are
detected per block as in the numpy path and reported by the callers with the same messages.
"""

import os
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from ._typing import FloatArray, NDArray

MIN_SIZE = 1 << 21
"""Smallest tensor (elements) worth the kernels: 2 Mi elements, 8 MiB of float32 per model."""

DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
"""Dtypes the kernels are compiled for."""

enabled = os.environ.get("FEDGOSSIP_NUMBA", "1") != "0"
"""Whether :func:`usable` may say yes (``FEDGOSSIP_NUMBA=0`` turns the kernels off)."""

_kernels: ModuleType | None = None
_missing = False


def kernels() -> ModuleType | None:
    """:mod:`._fused_kernels` (importing numba on first call), or ``None`` without numba."""
    global _kernels, _missing
    if _kernels is None and not _missing:
        try:
            from . import _fused_kernels
        except ImportError:
            _missing = True
        else:
            _kernels = _fused_kernels
    return _kernels


def usable(size: int, dtype: np.dtype) -> bool:
    """Whether :func:`merge` and :func:`merge_moments` serve a tensor of ``size`` elements of ``dtype``."""
    return enabled and size >= MIN_SIZE and dtype in DTYPES and kernels() is not None


def merge(
    sources: Sequence[NDArray], coefficients: FloatArray, out: NDArray, merged: FloatArray, block_size: int
) -> slice | None:
    """``out = sum_i c_i sources[i]`` (plain averaging); the first block with a non-finite value.

    Arguments as for :func:`merge_moments`; returns ``None`` when every merged value is finite.
    Call only when :func:`usable`.
    """
    module, addresses, keep = _prepare(sources)
    start = module.merge(addresses, _float64(coefficients), out, merged, block_size)
    del keep  # the arrays whose addresses the kernel read: alive until here
    return None if start < 0 else slice(start, min(start + block_size, out.size))


def merge_moments(
    sources: Sequence[NDArray],
    coefficients: FloatArray,
    first: int,
    out: NDArray,
    merged: FloatArray,
    block_size: int,
) -> tuple[FloatArray, FloatArray, slice | None]:
    """``out = sum_i c_i sources[i]``, with the moments of ``sources[first:]`` and of the merge.

    ``sources`` are flat arrays of ``out``'s size and dtype (copied once if not contiguous),
    ``merged`` a float64 buffer of at least ``min(out.size, block_size)`` elements. Returns
    ``(mean, m2, bad)``: per series (``sources[first:]``, then the unrounded merge) the mean and
    the sum of squared deviations, and the first block with a non-finite source sum (then
    ``out`` and the moments are incomplete), else ``None``. Call only when :func:`usable`.
    """
    module, addresses, keep = _prepare(sources)
    series = len(sources) - first + 1
    mean = np.zeros(series)
    m2 = np.zeros(series)
    start = module.merge_moments(addresses, _float64(coefficients), first, out, merged, block_size, mean, m2)
    del keep  # the arrays whose addresses the kernel read: alive until here
    bad = None if start < 0 else slice(start, min(start + block_size, out.size))
    return mean, m2, bad


def _prepare(sources: Sequence[NDArray]) -> tuple[ModuleType, NDArray, list[NDArray]]:
    """The kernels, the sources' data addresses and the (contiguous) arrays that own the data."""
    module = kernels()
    assert module is not None, "fused kernel called without numba"
    contiguous = [np.ascontiguousarray(source) for source in sources]
    addresses = np.array([source.ctypes.data for source in contiguous], dtype=np.intp)
    return module, addresses, contiguous


def _float64(coefficients: FloatArray) -> FloatArray:
    return np.ascontiguousarray(coefficients, dtype=np.float64)
