"""The checks every untrusted model passes before use: one validator for the gossip wire, the Flower
ServerApp's reply checks and `Learner.set_weights`.

A model is a list of tensors ("weights", buffers included) described by `TensorSpec`s: the
receiver's own specs are the truth, what arrives is checked against them. `check_declared` checks
what a message declares before its data is read (count, names, dtypes, shapes), `check_arrays`
the arrays themselves (count, shapes, dtypes, finiteness), `check_size` and `check_norm` the
limits. Every check raises `ModelRejected` (a ValueError) naming the tensor and the problem; each
caller maps it to its own answer (a gRPC status, an error reply, a ValueError). numpy only: a
peer imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

MAX_TENSORS = 10_000  # more tensors than any model has: refused before they are compared
NORM_BLOCK = 1 << 18  # values per float64 block when summing squares (no full-size float64 copy)
FINITE_BLOCK = 1 << 18  # values per block of the finiteness check: its mask stays in cache


class ModelRejected(ValueError):
    """An untrusted model failed a check; the message names the tensor and the problem."""


class ModelTooLarge(ModelRejected):
    """An untrusted model exceeds a size limit (bytes or number of tensors)."""


@dataclass(frozen=True)
class TensorSpec:
    """What one tensor must look like: its name, shape and numpy dtype string (`np.dtype.str`,
    little-endian, e.g. "<f4")."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, name: str, shape: Iterable[int], dtype: Any) -> TensorSpec:
        """The spec of a trusted tensor: any shape sequence, any numpy dtype (given in little-endian
        form, the byte order models travel in)."""
        return cls(name, tuple(int(n) for n in shape), np.dtype(dtype).newbyteorder("<").str)

    @cached_property
    def size(self) -> int:
        """Number of values (computed once: the wire asks for it on every chunk; exact Python
        integers, so a hostile shape cannot overflow it)."""
        return math.prod(self.shape)

    @cached_property
    def nbytes(self) -> int:
        """Bytes of the tensor's raw values."""
        return self.size * np.dtype(self.dtype).itemsize


def specs_of(
    model: Mapping[str, Any] | Iterable[str], arrays: Iterable[Any] | None = None
) -> list[TensorSpec]:
    """The specs of a trusted model: `specs_of(names, arrays)` or `specs_of(mapping)` (name -> array,
    e.g. a Flower ArrayRecord). An array is anything with `dtype` and `shape` (numpy arrays, Flower
    Arrays)."""
    if arrays is None:
        if not isinstance(model, Mapping):
            raise TypeError("specs_of(names) needs the arrays too: specs_of(names, arrays)")
        model, arrays = model.keys(), model.values()
    return [TensorSpec.of(name, a.shape, a.dtype) for name, a in zip(model, arrays, strict=True)]


def check_count(count: int, specs: Sequence[TensorSpec]) -> None:
    """A model of `count` tensors where `specs` are expected."""
    if count != len(specs):
        raise ModelRejected(f"expected {len(specs)} weight arrays, got {count}")


def check_size(nbytes: int, max_bytes: int, *, tensors: int = 0) -> None:
    """A model of `nbytes` bytes in `tensors` tensors, against the byte limit and `MAX_TENSORS`."""
    if tensors > MAX_TENSORS:
        raise ModelTooLarge(f"model of {tensors} tensors exceeds the limit of {MAX_TENSORS}")
    if nbytes > max_bytes:
        raise ModelTooLarge(f"model of {nbytes} bytes exceeds the limit of {max_bytes}")


def check_declared(
    declared: Sequence[TensorSpec], specs: Sequence[TensorSpec], *, allowed: Collection[str] | None = None
) -> None:
    """What a message says it holds (untrusted specs: a gossip header, a Flower ArrayRecord's
    metadata) against `specs`: count, then each tensor's name, dtype (one of `allowed` if given;
    the spec's dtype string or its name, e.g. "float32") and shape. Untrusted strings are compared,
    never parsed."""
    check_count(len(declared), specs)
    for index, (got, want) in enumerate(zip(declared, specs, strict=True)):
        if got.name != want.name:
            _mismatch(want, f"be at position {index}", f"{_show(got.name)} in its place")
        if allowed is not None and got.dtype not in allowed:
            raise ModelRejected(f"weight {want.name}: dtype {_show(got.dtype)} not allowed")
        if got.dtype != want.dtype and got.dtype != np.dtype(want.dtype).name:  # the name only if needed
            _mismatch(want, f"have dtype {_name(np.dtype(want.dtype))}", _show(got.dtype))
        if got.shape != want.shape:
            _mismatch(want, f"have shape {want.shape}", _show(got.shape))


def check_arrays(
    arrays: Sequence[Any], specs: Sequence[TensorSpec], *, exact_dtype: bool = True
) -> list[np.ndarray]:
    """The arrays of a model against `specs`: count, shapes, dtypes, then finiteness (the one pass
    over the data); returns them as numpy arrays (no copies). With `exact_dtype` each dtype must be
    the spec's; without, any real dtype will do for a float tensor and any integer dtype for an
    integer one (the receiver casts)."""
    check_count(len(arrays), specs)
    checked = [np.asarray(array) for array in arrays]
    for array, spec in zip(checked, specs, strict=True):
        if array.shape != spec.shape:
            _mismatch(spec, f"have shape {spec.shape}", _show(array.shape))
        _check_dtype(array.dtype, spec, exact_dtype)
    check_finite(checked, specs)
    return checked


def check_finite(arrays: Iterable[np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """No NaN or Inf in any floating-point tensor."""
    for array, spec in zip(arrays, specs, strict=True):
        if not is_finite(array):
            raise ModelRejected(f"weight {spec.name} holds NaN or Inf: it must be finite")


def is_finite(array: np.ndarray) -> bool:
    """Whether a tensor holds no NaN or Inf (integer tensors always do). Checked block by block:
    one mask of a whole 100 MB model (a 26 MB allocation) cost 3x the time of cache-sized ones."""
    if array.dtype.kind != "f":
        return True
    flat = np.asarray(array).reshape(-1)
    if flat.size <= FINITE_BLOCK:  # one block (a small model's every tensor): no generator
        return bool(np.isfinite(flat).all())
    blocks = range(0, flat.size, FINITE_BLOCK)
    return all(np.isfinite(flat[start : start + FINITE_BLOCK]).all() for start in blocks)


def model_norm(arrays: Iterable[np.ndarray]) -> float:
    """The L2 norm of a whole model (all tensors as one vector), accumulated in float64 block by
    block (no float64 copy of a whole tensor)."""
    total = 0.0
    for array in arrays:
        flat = np.asarray(array).reshape(-1)
        for start in range(0, flat.size, NORM_BLOCK):
            block = flat[start : start + NORM_BLOCK].astype(np.float64, copy=False)
            total += float(np.dot(block, block))
    return total**0.5


def check_norm(arrays: Iterable[np.ndarray], *, ratio: float, own_norm: float) -> None:
    """The model's L2 norm is at most `ratio` times `own_norm` (the receiver's own model's)."""
    norm = model_norm(arrays)
    if norm > ratio * own_norm:
        raise ModelRejected(f"norm {norm:.3g} exceeds {ratio:g} x own norm {own_norm:.3g}")


def _check_dtype(dtype: np.dtype, spec: TensorSpec, exact: bool) -> None:
    """An array's dtype against its spec: the same, or (not `exact`) one the receiver can cast."""
    want = np.dtype(spec.dtype)
    if exact:
        if dtype.str != spec.dtype:
            _mismatch(spec, f"have dtype {_name(want)}", _name(dtype))
    elif dtype.kind not in "fiu":
        raise ModelRejected(f"weight {spec.name} must hold real numbers; got {_name(dtype)}")
    elif want.kind in "iu" and dtype.kind not in "iu":
        raise ModelRejected(f"weight {spec.name} holds integers ({_name(want)}); got {_name(dtype)}")


def _name(dtype: np.dtype) -> str:
    """A dtype for a message: its name ("float32"), or its string where the byte order matters."""
    return dtype.name if dtype.isnative else dtype.str


def _mismatch(spec: TensorSpec, must: str, got: str) -> None:
    """Raise the one message of a tensor unlike its spec: what it must be, what came instead."""
    raise ModelRejected(f"weight {spec.name} does not match: it must {must}, got {got}")


def _show(value: Any, limit: int = 80) -> str:
    """An untrusted value for a message: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
