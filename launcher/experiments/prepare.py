"""Prepare an experiment's data before any node starts: heavy sources (Hugging Face datasets, the
full MNIST) are loaded once, split and partitioned with our seeded partitions, and written as one
.npz shard per node plus the global test set, so node processes read numpy files only. The
launcher calls it once per run; a user can call it to prepare shards for devices by hand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedgossip.tasks.build import node_rows
from fedgossip.tasks.data import load_source, split_source
from fedgossip.tasks.datasets import dataset_entry
from fedgossip.tasks.eval_subset import balanced_rows
from fedgossip.tasks.files import write_shards
from fedgossip.tasks.partitions import COVARIATE
from fedgossip.tasks.preflight import check_node_data
from fedgossip.tasks.stream import check_chunks, evaluation_chunk

if TYPE_CHECKING:
    from fedgossip.config import ExperimentConfig
    from fedgossip.tasks import TaskConfig
    from fedgossip.tasks.source import Source

SHARDS_FOLDER = "data"


def _stream_chunks(
    task: TaskConfig, size: int, count: int, seed: int, parts: list[np.ndarray] | None
) -> list[np.ndarray] | None:
    """The training rows of every evaluation chunk of a streamed task (None without a stream)."""
    if not task.stream_chunks:
        return None
    parts = parts if parts is not None else [np.arange(size)] * count
    check_chunks(parts, task.stream_chunks)
    return [evaluation_chunk(parts, task.stream_chunks, chunk, seed) for chunk in range(task.stream_chunks)]


def _check_eval_examples(source: Source, task: TaskConfig, seed: int) -> None:
    """Raise the nodes' ValueError now if the test set cannot give task.eval_examples' subset."""
    if task.eval_examples and source.y_test is not None:
        balanced_rows(source.y_test, source.num_classes, task.eval_examples, seed)


def prepare_shards(config: ExperimentConfig, results_dir: Path) -> ExperimentConfig:
    """The config the node processes should run with.

    A dataset whose registry entry is `prepared` (task.dataset = "hf": flwr-datasets / datasets
    are imported here only; "mnist") is loaded, split (its test split, else the seeded stratified
    split), partitioned by task.partition among nodes.count nodes, and written to results_dir/data
    (with a streamed task's evaluation chunks); the returned config reads those shards (dataset =
    "prepared", path = that folder). Node i then trains on exactly the rows it would have had
    loading the dataset itself. Other file datasets get an absolute task.path (node processes may
    run in other folders); the rest is returned unchanged. A task.eval_examples that the test set
    cannot give is refused here, before any node starts (ValueError).
    """
    task = config.task
    entry = dataset_entry(task.dataset)
    seed, count = config.experiment.seed, config.nodes.count
    check_node_data(task, count, seed)  # task.eval's local splits, fedgmm's components (tasks/preflight.py)
    if task.eval_examples and entry.source and not entry.prepared:
        _check_eval_examples(split_source(load_source(task, seed), task.test_fraction, seed), task, seed)
    if not entry.path:
        return config
    if not entry.prepared or task.partition == COVARIATE:  # covariate: the nodes read the file themselves
        if not task.path:
            return config
        path = str(Path(task.path).expanduser().resolve())
        return config.replace(task=dataclasses.replace(task, path=path))
    source = split_source(load_source(task, seed), task.test_fraction, seed)
    _check_eval_examples(source, task, seed)
    folder = (Path(results_dir) / SHARDS_FOLDER).resolve()
    parts = node_rows(task, source.y, count, seed)
    write_shards(folder, source, parts, count, _stream_chunks(task, len(source.y), count, seed, parts))
    return config.replace(task=dataclasses.replace(task, dataset="prepared", path=str(folder)))
