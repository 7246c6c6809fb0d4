"""TaskConfig: the validated description of what nodes learn and how they are made unequal."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .datasets import DATASETS, dataset_entry
from .partitions import SCHEMES
from .registry import model_entry
from .validation import check_choice, check_int, check_real

PARTITIONS = (*SCHEMES, "none")
INITS = ("own", "shared")
DEVICES = ("cpu", "cuda", "auto")


def _check_noise(name: str, value: object, high: float) -> float | tuple[float, ...]:
    """Return a noise setting as a float (ramp maximum) or a tuple of per-node levels."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(check_real(f"{name}[{i}]", v, low=0.0, high=high) for i, v in enumerate(value))
    return check_real(name, value, low=0.0, high=high)


@dataclass(frozen=True)
class TaskConfig:
    """What every node learns (data, partition, model, optimiser) and how nodes are made unequal.

    Data: `dataset` (registered in `datasets`), `path` for the file datasets (an .npz file; a
    Hugging Face id or local folder; a prepared shard folder), the Hugging Face `image_column` /
    `label_column` ("" = detected) and `hf_train_split` / `hf_test_split` ("" = no test split:
    our split).
    `partition = "none"` gives every node the whole training set (a device with its own file).
    Model: `model` is a registered name or a user's "package.module:function" (see `registry`);
    `device` cpu | cuda | auto. SGD: learning_rate, momentum, weight_decay (torch models).
    `stream_chunks` > 0 streams the data (see `stream`): round t trains on each node's chunk t of
    its partition and evaluates on every node's clean chunk t + 1 (both modes; 0 = no stream).
    """

    dataset: str = "digits"
    path: str = ""
    image_column: str = ""
    label_column: str = ""
    hf_train_split: str = "train"
    hf_test_split: str = "test"
    model: str = "mlp"
    device: str = "cpu"
    partition: str = "iid"
    alpha: float = 0.5
    shards_per_node: int = 2
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    test_fraction: float = 0.2
    init: str = "own"
    label_noise: float | tuple[float, ...] = 0.0
    feature_noise: float | tuple[float, ...] = 0.0
    hidden: int = 64
    threads: int = 1
    synthetic_samples: int = 2000
    synthetic_features: int = 20
    synthetic_classes: int = 4
    stream_chunks: int = 0

    def __post_init__(self) -> None:
        """Validate every field (naming it and its allowed values); normalise numbers, lists."""
        check_choice("task.dataset", self.dataset, DATASETS)
        model_entry(self.model)
        check_choice("task.device", self.device, DEVICES)
        check_choice("task.partition", self.partition, PARTITIONS)
        check_choice("task.init", self.init, INITS)
        self._check_data_keys()
        if model_entry(self.model).images and dataset_entry(self.dataset).tabular:
            raise ValueError(
                f"task.model {self.model!r} needs images; task.dataset {self.dataset!r} is tabular "
                "(use mlp, linear or your own model)"
            )
        classes = check_int("task.synthetic_classes", self.synthetic_classes, low=2)
        normalised = {
            "alpha": check_real("task.alpha", self.alpha, low=0.0, low_open=True),
            "shards_per_node": check_int("task.shards_per_node", self.shards_per_node, low=1),
            "local_epochs": check_int("task.local_epochs", self.local_epochs, low=1),
            "batch_size": check_int("task.batch_size", self.batch_size, low=1),
            "learning_rate": check_real("task.learning_rate", self.learning_rate, low=0.0, low_open=True),
            "momentum": check_real("task.momentum", self.momentum, low=0.0, high=1.0, high_open=True),
            "weight_decay": check_real("task.weight_decay", self.weight_decay, low=0.0),
            "test_fraction": check_real(
                "task.test_fraction",
                self.test_fraction,
                low=0.0,
                high=1.0,
                low_open=True,
                high_open=True,
            ),
            "label_noise": _check_noise("task.label_noise", self.label_noise, high=1.0),
            "feature_noise": _check_noise("task.feature_noise", self.feature_noise, high=float("inf")),
            "hidden": check_int("task.hidden", self.hidden, low=1),
            "threads": check_int("task.threads", self.threads, low=1),
            "synthetic_samples": check_int(
                "task.synthetic_samples", self.synthetic_samples, low=10 * classes
            ),
            "synthetic_features": check_int("task.synthetic_features", self.synthetic_features, low=1),
            "stream_chunks": check_int("task.stream_chunks", self.stream_chunks, low=0),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    def _check_data_keys(self) -> None:
        """task.path is required by (and only allowed for) the file datasets; the column and split
        names are strings."""
        for name in ("path", "image_column", "label_column", "hf_train_split", "hf_test_split"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"task.{name} must be a string; got {getattr(self, name)!r}")
        entry = dataset_entry(self.dataset)
        if entry.path and not self.path:
            raise ValueError(f"task.dataset {self.dataset!r} needs task.path: {entry.path}")
        if self.path and not entry.path:
            readers = [name for name, other in DATASETS.items() if other.path]
            raise ValueError(
                f"task.path applies to the datasets {', '.join(readers)}; task.dataset is {self.dataset!r}"
            )
        if not self.hf_train_split:
            raise ValueError("task.hf_train_split must not be empty")
        if self.stream_chunks and not entry.loaded_whole:
            raise ValueError(
                "task.stream_chunks needs a dataset every node loads whole (the evaluation set holds "
                f"every node's next chunk); task.dataset {self.dataset!r} is read as one shard per node"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TaskConfig:
        """Build from a mapping such as a TOML [task] table, rejecting unknown keys."""
        known = {field.name for field in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"unknown key task.{key} (known: {', '.join(sorted(known))})")
        return cls(**values)
