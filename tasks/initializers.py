"""Initial weights drawn in numpy, so torch and scikit-learn models start alike from one seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def glorot_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Xavier/Glorot uniform float32 sample, fans computed as torch does (conv kernels too)."""
    receptive = int(np.prod(shape[2:]))
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def initial_weights(shapes: Sequence[tuple[int, ...]], rng: np.random.Generator) -> list[np.ndarray]:
    """Glorot-uniform matrices and kernels, zero vectors (biases), drawn in the given order."""
    return [
        glorot_uniform(shape, rng) if len(shape) >= 2 else np.zeros(shape, np.float32) for shape in shapes
    ]
