"""Files a test writes for fedgossip to load: the digits as images and as a Hugging Face dataset,
and a user's module of torch model factories (good ones and every kind of broken one); the full
MNIST of the project's shared data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedgossip.tasks.data import load_raw

SHARED_DATA = Path("shared") / "data"
"""The project's offline data, beside the repository (`../shared/data/`, README there)."""


def shared_file(name: str) -> Path:
    """A file of the shared data folder: `../shared/data/NAME` from the repository's root, or from
    the nearest parent that has one (a git worktree sits deeper); AssertionError saying where it
    was looked for otherwise (tests and CI never fetch data from the network)."""
    root = Path(__file__).resolve().parents[2]
    tried = [parent / SHARED_DATA / name for parent in root.parents]
    found = next((path for path in tried if path.is_file()), None)
    assert found is not None, f"{name} is missing: put it in ../shared/data/ (looked for {tried[0]})"
    return found


def digit_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` digits as (count, 8, 8) uint8 images (0..255) and int64 labels."""
    x, y = load_raw("digits")
    return (x[:count] * 255 / 16).round().astype(np.uint8).reshape(-1, 8, 8), y[:count].copy()


def save_hf_digits(folder: Path, count: int = 600, test: int = 0, *, parquet: bool = False) -> Path:
    """The digits as a Hugging Face dataset (columns "image": Image, "label": ClassLabel): a
    DatasetDict saved with save_to_disk (a "test" split of the last `test` images if test > 0;
    a bare Dataset if test == 0), or one parquet file per split with `parquet`."""
    import datasets

    x, y = digit_images(count)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    full = datasets.Dataset.from_dict({"image": list(x), "label": y.tolist()}, features=features)
    splits = {"train": full.select(range(count - test))}
    if test:
        splits["test"] = full.select(range(count - test, count))
    if parquet:
        folder.mkdir(parents=True, exist_ok=True)
        for name, split in splits.items():
            split.to_parquet(str(folder / f"{name}.parquet"))
    elif test:
        datasets.DatasetDict(splits).save_to_disk(str(folder))
    else:
        splits["train"].save_to_disk(str(folder))
    return folder


USER_MODULE = '''
import math

import torch
from torch import nn


def bn_net(input_shape, num_classes):
    """A small conv net with BatchNorm for 8x8 digits (any image)."""
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * height * width, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )


def dropout_net(input_shape, num_classes):
    hidden = nn.Linear(math.prod(input_shape), 32)
    return nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, num_classes))


def raises(input_shape, num_classes):
    raise RuntimeError("no GPU here")


def not_a_module(input_shape, num_classes):
    return "a string"


def wrong_output(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes + 1))


def wrong_input(input_shape, num_classes):
    return nn.Linear(3, num_classes)


def no_parameters(input_shape, num_classes):
    return nn.Flatten()


def float64(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes)).double()


NOT_CALLABLE = 3
'''
"""Source of a module of model factories (`task.model = "module:function"`): bn_net (BatchNorm),
dropout_net and one factory for each mistake a user can make; write it to a folder on sys.path."""
