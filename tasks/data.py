"""Datasets as numpy arrays: the scikit-learn bundled files (read without importing sklearn) and
seeded synthetic Gaussian blobs, split into a stratified global train/test set."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from .config import DATASETS
from .seeding import stream
from .validation import check_choice, check_int, check_real

# Scale of the random synthetic class means (noise has unit variance): the Bayes accuracy is
# about 0.9 with 4 classes in 20 dimensions, so the task is learnable but not trivial.
_SYNTHETIC_SEPARATION = 0.6


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays of one classification task (features float32, labels int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def _sklearn_data_dir() -> Path:
    """Folder of scikit-learn's bundled data files, found without importing sklearn (230 MB)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-learn must be installed: its bundled data files are used")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@cache
def load_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled features (float64) and labels (int64) of a bundled dataset, read-only and cached."""
    check_choice("name", name, ("digits", "breast_cancer"))
    if name == "digits":
        table = np.loadtxt(_sklearn_data_dir() / "digits.csv.gz", delimiter=",")
    else:
        table = np.loadtxt(_sklearn_data_dir() / "breast_cancer.csv", delimiter=",", skiprows=1)
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


def load_dataset(
    name: str,
    seed: int,
    *,
    test_fraction: float = 0.2,
    synthetic_samples: int = 2000,
    synthetic_features: int = 20,
    synthetic_classes: int = 4,
) -> Dataset:
    """Load a dataset, split it (stratified, seeded) and scale it: digits / 16, others standardised
    with the training statistics."""
    check_choice("name", name, DATASETS)
    check_int("seed", seed, low=0)
    check_real("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    if name == "synthetic":
        num_classes = check_int("synthetic_classes", synthetic_classes, low=2)
        samples = check_int("synthetic_samples", synthetic_samples, low=10 * num_classes)
        features = check_int("synthetic_features", synthetic_features, low=1)
        x, y = _synthetic(seed, samples, features, num_classes)
    else:
        x, y = load_raw(name)
        num_classes = int(y.max()) + 1
    train, test = _stratified_split(y, test_fraction, seed)
    x_train, x_test = x[train], x[test]
    if name == "digits":
        x_train, x_test = x_train / 16.0, x_test / 16.0
    else:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Dataset(
        x_train=x_train.astype(np.float32),
        y_train=y[train],
        x_test=x_test.astype(np.float32),
        y_test=y[test],
        num_classes=num_classes,
    )
