"""Type aliases shared by the aggregation functions (Flower's NDArrays convention)."""

from typing import Any

import numpy as np
import numpy.typing as npt

NDArray = npt.NDArray[Any]
"""One tensor of a model."""

NDArrays = list[NDArray]
"""One model: its tensors in a fixed order (Flower's ``flwr.common.NDArrays``)."""

FloatArray = npt.NDArray[np.floating[Any]]
"""An array of floating-point numbers (weights, accumulators)."""
