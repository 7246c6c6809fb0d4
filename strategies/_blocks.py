"""Block-wise iteration over flat tensors: the one loop every aggregation function uses.

Models of tens of millions of parameters do not fit in cache, so tensors are processed
in flat blocks of :data:`BLOCK_SIZE` elements. For each block, the block of every model
is copied (and cast) into the rows of a small reusable buffer; the caller then works on
that ``(models, block)`` array while it is hot in cache. Averaging adds a weighted sum
of the rows (one BLAS matrix-vector product in the accumulation dtype) on top, see
:func:`iter_merged_blocks`.
"""

from collections.abc import Iterator, Sequence

import numpy as np

from ._typing import FloatArray, NDArray

BLOCK_SIZE = 1 << 16
"""Elements per block: 64 Ki elements are 512 KiB per float64 row (fits in L2/L3)."""


def accumulation_dtype(dtype: np.dtype) -> np.dtype:
    """Dtype to accumulate ``dtype`` tensors in: float64, or wider if the input is wider."""
    return np.promote_types(dtype, np.float64)


def flat(array: NDArray) -> NDArray:
    """Flat C-order view of ``array`` (a copy only if it is not C-contiguous)."""
    return array.reshape(-1)


class Workspace:
    """Reusable buffers for :func:`iter_blocks` and :func:`iter_merged_blocks`.

    Parameters
    ----------
    rows : int
        Number of models (rows) processed together.
    size : int
        Size of the largest tensor; buffers hold ``min(size, block_size)`` elements.
    dtype : np.dtype
        Dtype of the row buffer (the accumulation dtype when merging).
    block_size : Optional[int] (default: None)
        Elements per block; ``None`` means :data:`BLOCK_SIZE`.
    """

    def __init__(self, rows: int, size: int, dtype: np.dtype, block_size: int | None = None) -> None:
        self.block_size = BLOCK_SIZE if block_size is None else block_size
        width = max(1, min(size, self.block_size))
        self.rows = np.empty((rows, width), dtype=dtype)
        self.merged = np.empty(width, dtype=dtype)
        self.ones = np.ones(width, dtype=dtype)


class WorkspacePool:
    """One :class:`Workspace` per buffer dtype, created on first use.

    Parameters
    ----------
    rows : int
        Largest number of models processed together.
    size : int
        Size of the largest tensor.
    block_size : Optional[int] (default: None)
        Elements per block; ``None`` means :data:`BLOCK_SIZE`.
    """

    def __init__(self, rows: int, size: int, block_size: int | None = None) -> None:
        self._rows = rows
        self._size = size
        self._block_size = block_size
        self._workspaces: dict[np.dtype, Workspace] = {}

    def get(self, dtype: np.dtype) -> Workspace:
        """The workspace whose buffers have ``dtype``."""
        workspace = self._workspaces.get(dtype)
        if workspace is None:
            workspace = Workspace(self._rows, self._size, dtype, self._block_size)
            self._workspaces[dtype] = workspace
        return workspace


def iter_blocks(sources: Sequence[NDArray], workspace: Workspace) -> Iterator[tuple[slice, NDArray]]:
    """Yield ``(block, rows)``: ``rows[i]`` is ``sources[i][block]`` cast to the buffer dtype.

    ``sources`` are flat arrays of equal size. ``rows`` is a view of the workspace,
    overwritten at the next step: use it before advancing the iterator.
    """
    size = sources[0].size
    step = workspace.block_size
    buffer = workspace.rows
    for start in range(0, size, step):
        block = slice(start, min(start + step, size))
        rows = buffer[: len(sources), : block.stop - start]
        for row, source in zip(rows, sources, strict=True):
            np.copyto(row, source[block])
        yield block, rows


def iter_merged_blocks(
    sources: Sequence[NDArray], coefficients: FloatArray, out: NDArray, workspace: Workspace
) -> Iterator[tuple[slice, NDArray, NDArray]]:
    """Merge flat ``sources`` into flat ``out`` block by block: ``out = sum_i c_i s_i``.

    For each block, yield ``(block, rows, merged)`` where ``rows`` are the sources'
    blocks in the accumulation dtype and ``merged = coefficients @ rows``; once the
    caller resumes the iterator, ``merged`` is stored in ``out[block]`` (cast to
    ``out.dtype``). The caller checks finiteness and gathers statistics meanwhile.
    """
    for block, rows in iter_blocks(sources, workspace):
        merged = np.dot(coefficients, rows, out=workspace.merged[: rows.shape[1]])
        yield block, rows, merged
        np.copyto(out[block], merged)
