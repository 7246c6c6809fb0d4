"""Prepare an experiment's data before any node starts: heavy sources (Hugging Face datasets) are
loaded once, split and partitioned with our seeded partitions, and written as one .npz shard per
node plus the global test set, so node processes read numpy files only.

It lives in tasks/ beside the sources and partitions it uses (the launcher only calls it), and a
user can call it to prepare shards for devices by hand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from fedgossip.tasks.build import node_rows
from fedgossip.tasks.data import load_source, split_source
from fedgossip.tasks.datasets import dataset_entry
from fedgossip.tasks.files import write_shards

if TYPE_CHECKING:
    from fedgossip.config import ExperimentConfig

SHARDS_FOLDER = "data"


def prepare_shards(config: ExperimentConfig, results_dir: Path) -> ExperimentConfig:
    """The config the node processes should run with.

    A dataset whose registry entry is `prepared` (task.dataset = "hf": flwr-datasets / datasets
    are imported here only) is loaded, split (its test split, else the seeded stratified split),
    partitioned by task.partition among nodes.count nodes, and written to results_dir/data; the
    returned config reads those shards (dataset = "prepared", path = that folder). Node i then
    trains on exactly the rows it would have had loading the dataset itself. Other file datasets
    get an absolute task.path (node processes may run in other folders); the rest is returned
    unchanged.
    """
    task = config.task
    entry = dataset_entry(task.dataset)
    if not entry.path:
        return config
    if not entry.prepared:
        path = str(Path(task.path).expanduser().resolve())
        return config.replace(task=dataclasses.replace(task, path=path))
    seed, count = config.experiment.seed, config.nodes.count
    source = split_source(load_source(task, seed), task.test_fraction, seed)
    folder = (Path(results_dir) / SHARDS_FOLDER).resolve()
    write_shards(folder, source, node_rows(task, source.y, count, seed), count)
    return config.replace(task=dataclasses.replace(task, dataset="prepared", path=str(folder)))
