"""Source: a dataset's raw arrays before the global split and the scaling, and the checks every
array-backed source (an .npz file, a Hugging Face dataset, prepared shards) passes through."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Divisor of uint8 features (images by convention); other dtypes are used as they are.
UINT8_SCALE = 255.0


@dataclass(frozen=True, eq=False)
class Source:
    """Features flat (N, F) in their stored dtype, int64 labels 0..num_classes-1, one example's
    shape, and the scaling: divide by `scale`, or standardise with the training statistics when
    it is None. The test arrays are None when the global split must make the test set.
    `groups` / `groups_test`: each example's input distribution (a mixture component) when the
    source draws its examples from several (gmm-synthetic; with its own test set); None: the
    covariate partition draws them (`covariate`)."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    scale: float | None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    groups: np.ndarray | None = None
    groups_test: np.ndarray | None = None


def example_shape(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """One example's shape for features stored as (N, F), (N, H, W) or (N, C, H, W)."""
    if len(shape) == 2:
        return (shape[1],)
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        return tuple(shape[1:])
    raise ValueError(
        f"{where}: features must have shape (N, features), (N, height, width) or "
        f"(N, channels, height, width); got {shape}"
    )


def _check_features(x: np.ndarray, name: str, where: str) -> None:
    if x.dtype.kind not in "iuf" or x.size == 0:
        raise ValueError(f"{where}: {name} must be a non-empty array of numbers; got {x.dtype} {x.shape}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{where}: {name} holds NaN or infinite values")


def _check_labels(y: np.ndarray, count: int, name: str, where: str) -> None:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{where}: {name} must be a 1-d array of integers; got {y.dtype} {y.shape}")
    if len(y) != count:
        raise ValueError(f"{where}: {name} has {len(y)} labels for {count} examples")
    if len(y) and y.min() < 0:
        raise ValueError(f"{where}: {name} holds negative labels; labels must be 0..classes-1")


def source_from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    where: str,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Source:
    """Check and wrap raw arrays (features (N, F), (N, H, W) or (N, C, H, W), integer labels).

    Raises ValueError naming `where` on: non-numeric or non-finite features, labels that are not
    integers 0..C-1, mismatched lengths, a test set without its labels (or the reverse) or with
    another example shape, fewer than two classes. The number of classes is the largest label
    plus one unless given; uint8 features get scale 1/255, others none.
    """
    x, y = np.asarray(x), np.asarray(y)
    _check_features(x, "x", where)
    shape = input_shape or example_shape(x.shape, where)
    _check_labels(y, len(x), "y", where)
    if (x_test is None) != (y_test is None):
        raise ValueError(f"{where}: x_test and y_test go together; got only one of them")
    labels = [y]
    if x_test is not None:
        x_test, y_test = np.asarray(x_test), np.asarray(y_test)
        _check_features(x_test, "x_test", where)
        if x_test.shape[1:] != x.shape[1:] or x_test.dtype != x.dtype:
            raise ValueError(
                f"{where}: x_test examples are {x_test.dtype} {x_test.shape[1:]}, "
                f"x examples are {x.dtype} {x.shape[1:]}"
            )
        _check_labels(y_test, len(x_test), "y_test", where)
        labels.append(y_test)
        x_test, y_test = x_test.reshape(len(x_test), -1), y_test.astype(np.int64)
    largest = max(int(part.max()) for part in labels)
    classes = largest + 1 if num_classes is None else num_classes
    if largest >= classes or classes < 2:
        raise ValueError(
            f"{where}: labels must be 0..classes-1 with at least 2 classes; largest is {largest}"
        )
    return Source(
        x=x.reshape(len(x), -1),
        y=y.astype(np.int64),
        num_classes=classes,
        input_shape=tuple(int(n) for n in shape),
        scale=UINT8_SCALE if x.dtype == np.uint8 else 1.0,
        x_test=x_test,
        y_test=y_test,
    )
