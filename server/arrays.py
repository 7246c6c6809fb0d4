"""Zero-copy access to the tensors inside Flower messages.

A Flower `Array` holds a tensor as the bytes of a .npy file. `Array.numpy()` parses them with
`np.load`, which copies the data; `array_view` reads only the .npy header and returns a read-only
numpy view of the payload in place, so the ServerApp can check and aggregate N client models
without a second copy of each (the memory and time of our aggregation stay at or below Flower's).
"""

from __future__ import annotations

import io
import math

import numpy as np
from flwr.app import Array

NUMPY_STYPE = "numpy.ndarray"


def array_view(array: Array) -> np.ndarray:
    """A read-only view of the tensor in `array` (a copy only for non-.npy serialisations)."""
    if array.stype != NUMPY_STYPE:
        return array.numpy()
    data = array.data
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        return array.numpy()
    if dtype.hasobject:
        raise ValueError("object arrays are not accepted")
    count = math.prod(shape)
    offset = stream.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(
            f"tensor payload holds {len(data) - offset} bytes, its header says {count * dtype.itemsize}"
        )
    view = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return view.reshape(shape, order="F" if fortran_order else "C")
