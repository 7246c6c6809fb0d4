"""Checks at the boundary of the aggregation functions.

Every public function validates its arguments here and raises :class:`ValueError` with a
message that names the offending model and tensor index. Checks that need a pass over
the data (NaN/Inf) are done block by block during aggregation where possible; the
helpers for that live here too (:func:`raise_non_finite`, :func:`check_finite`).

A caller whose models passed a boundary's structure check already (a gossip peer's wire) runs
the functions within :func:`trusted_models`: their model structure checks then trust the models
instead of repeating it, as scikit-learn's nested calls skip their parameter validation. A rule's
result is checked all the same (:func:`check_result`): the rule may be a user's code.
"""

import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from ._typing import FloatArray, NDArray

_TRUSTED = ContextVar("fedgossip_trusted_models", default=False)


@contextmanager
def trusted_models() -> Iterator[None]:
    """Within the block (in this thread), the models given to the aggregation functions are
    trusted to share one structure: :func:`check_models` and :func:`check_own` only list them."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def check_models(models: Any, name: str = "models") -> list[list[NDArray]]:
    """Return ``models`` as lists of arrays, checking that they have the same structure.

    Parameters
    ----------
    models : Sequence[NDArrays]
        The models: a non-empty sequence, each model a sequence of arrays.
    name : str (default: "models")
        The argument's name, used in error messages.

    Returns
    -------
    list[list[NDArray]]
        The same arrays (no copies), each model as a list.

    Raises
    ------
    ValueError
        If the sequence is empty, or models differ in number of tensors, or a tensor's
        shape or dtype differs from the first model's (not checked within :func:`trusted_models`).
    """
    if _TRUSTED.get():
        return [_listed(model) for model in models]
    if not _is_sequence(models) or len(models) == 0:
        raise ValueError(f"`{name}` must be a non-empty sequence of models")
    checked = [_as_model(model, f"{name}[{i}]") for i, model in enumerate(models)]
    reference = checked[0]
    for i, model in enumerate(checked[1:], start=1):
        check_same_structure(model, reference, f"{name}[{i}]", f"{name}[0]")
    return checked


def check_own(own: Any, reference: list[NDArray]) -> list[NDArray]:
    """Return ``own`` as a list of arrays, checking it matches the received models (trusting it
    within :func:`trusted_models`)."""
    if _TRUSTED.get():
        return _listed(own)
    model = _as_model(own, "own")
    check_same_structure(model, reference, "own", "received[0]")
    return model


def check_same_structure(
    model: list[NDArray], reference: list[NDArray], label: str, reference_label: str
) -> None:
    """Raise if ``model`` differs from ``reference`` in length, any shape or any dtype."""
    if len(model) != len(reference):
        raise ValueError(f"{label} has {len(model)} tensors but {reference_label} has {len(reference)}")
    for index, (tensor, expected) in enumerate(zip(model, reference, strict=True)):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"tensor {index}: {label} has shape {tensor.shape} "
                f"but {reference_label} has shape {expected.shape}"
            )
        if tensor.dtype != expected.dtype:
            raise ValueError(
                f"tensor {index}: {label} has dtype {tensor.dtype} "
                f"but {reference_label} has dtype {expected.dtype}"
            )


def check_float_tensors(model: list[NDArray], indices: Iterable[int]) -> None:
    """Raise if a tensor at one of ``indices`` does not have a floating-point dtype."""
    for index in indices:
        dtype = model[index].dtype
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(
                f"tensor {index}: dtype {dtype} is not a floating-point type "
                "(averaging needs float16, float32 or float64 tensors)"
            )


def check_weights(weights: Any, count: int) -> FloatArray:
    """Return the weights as float64 normalised to sum to 1 (``None`` = equal weights).

    Raises
    ------
    ValueError
        If there are not exactly ``count`` weights, or one is NaN/Inf or negative, or
        they are all zero.
    """
    if weights is None:
        return np.full(count, 1.0 / count)
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`weights` must be a sequence of real numbers: {error}") from None
    if values.ndim != 1 or values.size != count:
        raise ValueError(f"expected {count} weights (one per model), got shape {values.shape} instead")
    if not np.isfinite(values).all():
        raise ValueError("`weights` must be finite (no NaN or Inf)")
    if (values < 0).any():
        raise ValueError("`weights` must be non-negative")
    largest = values.max()
    if largest == 0:
        raise ValueError("`weights` must not all be zero")
    values = values / largest  # no overflow when summing huge weights
    return values / values.sum()


def check_result(result: Any, reference: list[NDArray]) -> list[NDArray]:
    """Return a rule's ``result`` as arrays, checking it has the structure of the input models.

    The one check of every rule's output (ours and users'): as many tensors as ``reference``
    (a model the rule was given), each with its shape and dtype, floating-point ones finite.
    """
    model = _as_model(result, "the result")
    check_same_structure(model, reference, "the result", "the input")
    for index, tensor in enumerate(model):
        check_finite(tensor, "the result", index)
    return model


def check_indices(name: str, indices: Any, count: int) -> frozenset[int]:
    """Return a collection of tensor indices as a set, checking ``0 <= i < count``."""
    if indices is None:
        return frozenset()
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise ValueError(f"`{name}` must be a collection of tensor indices, got {indices!r}")
    result = set()
    for item in indices:
        if isinstance(item, bool):
            raise ValueError(f"`{name}` must contain integer tensor indices, got {item!r}")
        try:
            index = operator.index(item)
        except TypeError:
            raise ValueError(f"`{name}` must contain integer tensor indices, got {item!r}") from None
        if not 0 <= index < count:
            raise ValueError(f"`{name}`: tensor index {index} is out of range [0, {count})")
        result.add(index)
    return frozenset(result)


def check_finite(array: NDArray, label: str, index: int) -> None:
    """Raise if a floating-point ``array`` (tensor ``index`` of ``label``) has NaN/Inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"tensor {index}: {label} contains NaN or Inf")


def raise_non_finite(sources: Sequence[NDArray], labels: Sequence[str], index: int, block: slice) -> None:
    """Report why a block produced a non-finite value: a NaN/Inf input, or overflow.

    Called after a cheap per-block check (a sum) failed; rescans the block of every
    source to name the culprit.
    """
    for source, label in zip(sources, labels, strict=True):
        if not np.isfinite(source[block]).all():
            raise ValueError(f"tensor {index}: {label} contains NaN or Inf")
    raise ValueError(f"tensor {index}: overflow while aggregating (values too large for float64)")


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _as_model(model: Any, label: str) -> list[NDArray]:
    if not _is_sequence(model):
        raise ValueError(f"{label} must be a sequence of numpy arrays, got {type(model)!r}")
    return _listed(model)


def _listed(model: Sequence[Any]) -> list[NDArray]:
    """A model as a list of numpy arrays (no copies)."""
    return [np.asarray(tensor) for tensor in model]
