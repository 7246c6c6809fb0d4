"""The full MNIST (60,000 training and 10,000 test images, 28x28 uint8, its own test split) as a
Source: from a local .npz in Keras' layout (task.path, else `mnist.npz` in the folder named by
the FEDGOSSIP_DATA environment variable), else from the Hugging Face hub (`ylecun/mnist`,
through the hf machinery), else an error saying both ways. The launcher loads it once and writes
one shard per node (`prepared`), so node processes never load the 60,000 images."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .config import TaskConfig
from .files import load_npz
from .source import Source, source_from_arrays

DATA_FOLDER_ENV = "FEDGOSSIP_DATA"
FILE_NAME = "mnist.npz"
HUB_ID = "ylecun/mnist"
KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
CLASSES = 10


def local_copy(task: TaskConfig) -> Path | None:
    """The local .npz to read: task.path, else $FEDGOSSIP_DATA/mnist.npz if it exists, else None."""
    if task.path:
        return Path(task.path).expanduser()
    folder = os.environ.get(DATA_FOLDER_ENV, "")
    candidate = Path(folder).expanduser() / FILE_NAME if folder else None
    return candidate if candidate is not None and candidate.is_file() else None


def read_keras_npz(path: Path) -> Source:
    """MNIST from an .npz with arrays x_train, y_train, x_test, y_test (Keras' mnist.npz), checked."""
    where = f"task.path {str(path)!r}"
    arrays = load_npz(path, KERAS_KEYS, where)
    missing = [key for key in KERAS_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{where}: arrays {missing} are missing (it has {sorted(arrays)}; Keras' layout)")
    return source_from_arrays(
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        where=where,
        num_classes=CLASSES,
    )


def _hub_task(task: TaskConfig) -> TaskConfig:
    """task as the hf dataset `ylecun/mnist` with its train and test splits and detected columns."""
    return dataclasses.replace(
        task,
        dataset="hf",
        path=HUB_ID,
        image_column="",
        label_column="",
        hf_train_split="train",
        hf_test_split="test",
    )


def mnist_source(task: TaskConfig, seed: int) -> Source:
    """MNIST's training and test sets from the local copy (`local_copy`), else from the hub."""
    local = local_copy(task)
    if local is not None:
        return read_keras_npz(local)
    from .hf import hf_source  # imports no Hugging Face library until it loads

    try:
        return hf_source(_hub_task(task), seed)
    except ValueError as err:
        folder = os.environ.get(DATA_FOLDER_ENV, "")
        searched = f"{DATA_FOLDER_ENV}={folder!r} holds no {FILE_NAME}"
        if not folder:
            searched = f"{DATA_FOLDER_ENV} is unset"
        reason = str(err).removeprefix(f"task.path {HUB_ID!r}: ")
        raise ValueError(
            f"task.dataset 'mnist': no local copy (task.path is empty, {searched}) and the hub "
            f"copy {HUB_ID!r} cannot be loaded ({reason}). Either put Keras' {FILE_NAME} (arrays "
            f"x_train, y_train, x_test, y_test) in a folder and set {DATA_FOLDER_ENV} to it, or name "
            f"the file with task.path; or go online with the hf extra (pip install -c "
            f'constraints.txt ".[hf]")'
        ) from err
