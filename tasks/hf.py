"""Hugging Face datasets as a Source: loaded through flwr-datasets (a hub id, or a local folder of
data files) or `datasets.load_from_disk` (a folder written by save_to_disk), then turned into
numpy arrays. Imports `datasets` (~3 s, pyarrow): the launcher calls this once to prepare shards
(see `prepare`), so node processes never do.

Input column (task.image_column): an Image feature becomes (N, C, H, W) uint8 pixels (all images
of one size and mode); any other column is used as stored ((N, F), (N, H, W) or (N, C, H, W)).
Label column (task.label_column): integers 0..C-1 (a ClassLabel feature gives C). Empty names
are detected: the one Image feature (else the one column besides the label) and the one ClassLabel
feature (else a column named "label" or "labels").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .config import TaskConfig
from .source import Source, source_from_arrays

# Files that `Dataset.save_to_disk` / `DatasetDict.save_to_disk` write into their folder.
_SAVED_MARKERS = ("dataset_dict.json", "state.json")
_LABEL_NAMES = ("label", "labels")


def _splits(task: TaskConfig) -> dict[str, Any]:
    """The dataset's splits by name: from a save_to_disk folder, else through flwr-datasets."""
    where = f"task.path {task.path!r}"
    folder = Path(task.path).expanduser()
    try:
        if folder.is_dir() and any((folder / marker).is_file() for marker in _SAVED_MARKERS):
            import datasets

            loaded = datasets.load_from_disk(str(folder))
            return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {task.hf_train_split: loaded}
        os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        from flwr_datasets import FederatedDataset

        federated = FederatedDataset(
            dataset=str(folder) if folder.is_dir() else task.path,
            partitioners={task.hf_train_split: 1},  # unused: our seeded partitions split the data
            shuffle=False,
        )
        wanted = [task.hf_train_split, *([task.hf_test_split] if task.hf_test_split else [])]
        splits = {}
        for name in wanted:
            try:
                splits[name] = federated.load_split(name)
            except ValueError:
                if name == task.hf_train_split:
                    raise
        return splits
    except ModuleNotFoundError as err:
        raise ValueError(
            f"{where}: Hugging Face datasets need the hf extra: pip install 'fedgossip[hf]' ({err})"
        ) from err
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    except Exception as err:  # datasets raises many kinds (FileNotFoundError, DatasetNotFoundError, ...)
        raise ValueError(f"{where}: cannot load the dataset: {type(err).__name__}: {err}") from err


def _only(names: list[str]) -> str:
    """The one name of a list, or "" when there are none or several."""
    return names[0] if len(names) == 1 else ""


def _columns(features: Any, task: TaskConfig, where: str) -> tuple[str, str]:
    """The (input, label) column names: task.image_column / task.label_column, or detected."""
    import datasets

    names = list(features)
    for key in ("image_column", "label_column"):
        chosen = getattr(task, key)
        if chosen and chosen not in names:
            raise ValueError(f"{where}: task.{key} {chosen!r} is not a column; columns: {names}")
    typed = [n for n in names if isinstance(features[n], datasets.ClassLabel)]
    label = (
        task.label_column
        or _only(typed)
        or (_only([n for n in names if n in _LABEL_NAMES]) if not typed else "")
    )
    if not label:
        raise ValueError(f"{where}: cannot tell the label column: set task.label_column (columns: {names})")
    images = [n for n in names if isinstance(features[n], datasets.Image)]
    image = (
        task.image_column or _only(images) or (_only([n for n in names if n != label]) if not images else "")
    )
    if not image:
        raise ValueError(f"{where}: cannot tell the input column: set task.image_column (columns: {names})")
    return image, label


def _arrays(split: Any, image: str, label: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's inputs and labels as numpy arrays; images (N, H, W[, C]) become (N, C, H, W)."""
    import datasets

    table = split.select_columns([image, label]).with_format("numpy")[:]
    x, y = np.asarray(table[image]), np.asarray(table[label])
    if x.dtype == object:
        raise ValueError(f"{where}: the examples of column {image!r} differ in shape (or image mode)")
    if isinstance(split.features[image], datasets.Image) and x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x, y


def hf_source(task: TaskConfig, seed: int) -> Source:
    """task.path's train split (task.hf_train_split) and, if it has one, its test split
    (task.hf_test_split; else the global split, seeded by `seed`, makes the test set), checked as
    any array source."""
    where = f"task.path {task.path!r}"
    splits = _splits(task)
    if task.hf_train_split not in splits:
        raise ValueError(
            f"{where}: no split {task.hf_train_split!r} (task.hf_train_split); splits: {list(splits)}"
        )
    train = splits[task.hf_train_split]
    image, label = _columns(train.features, task, where)
    x, y = _arrays(train, image, label, where)
    x_test = y_test = None
    test = splits.get(task.hf_test_split) if task.hf_test_split else None
    if test is not None:
        x_test, y_test = _arrays(test, image, label, f"{where} split {task.hf_test_split!r}")
    classes = getattr(train.features[label], "num_classes", None)
    return source_from_arrays(x, y, x_test, y_test, where=where, num_classes=classes)
