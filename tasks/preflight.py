"""What the launcher checks of every node's data before any node starts, for per-node evaluation
(task.eval local or both: each node needs a local test split and a training example left) and the
fedgmm model (no more components than a node's training examples): a ValueError naming the key,
which `fedgossip run` turns into exit 2 (a node would otherwise fail alone, after the start)."""

from __future__ import annotations

import numpy as np

from .config import TaskConfig
from .data import load_source, split_source
from .datasets import dataset_entry
from .local_eval import held_out
from .partitions import COVARIATE


def node_sizes(task: TaskConfig, num_nodes: int, seed: int) -> list[int]:
    """How many training examples each node's partition holds (before its local split)."""
    source = split_source(load_source(task, seed), task.test_fraction, seed)
    if task.partition == COVARIATE:
        from .covariate import node_partition, source_groups

        groups = source_groups(source, task.shift_groups, seed)[0]
        return [len(rows) for rows in node_partition(task, source, groups, num_nodes, seed)[:num_nodes]]
    from .build import node_rows

    parts = node_rows(task, source.y, num_nodes, seed)
    return [len(source.y)] * num_nodes if parts is None else [len(rows) for rows in parts]


def check_node_data(task: TaskConfig, num_nodes: int, seed: int) -> None:
    """Refuse a task.eval or task.gmm_components that some node's data cannot satisfy (datasets
    the nodes load themselves; a launcher-prepared dataset is checked by each node)."""
    entry = dataset_entry(task.dataset)
    if (task.eval == "global" and task.model != "fedgmm") or not entry.source or entry.prepared:
        return
    sizes = np.array(node_sizes(task, num_nodes, seed))
    node = int(sizes.argmin())
    if task.eval != "global" and sizes[node] < 2:
        raise ValueError(
            f"task.eval = {task.eval!r}: node {node} holds {sizes[node]} training example(s) of "
            f"task.partition {task.partition!r}; it needs 2 to keep one for its local test split "
            "(fewer nodes, or more data)"
        )
    kept = sizes - [held_out(int(n), task.test_fraction) if task.eval != "global" else 0 for n in sizes]
    node = int(kept.argmin())
    if task.model == "fedgmm" and kept[node] < task.gmm_components:
        raise ValueError(
            f"task.gmm_components = {task.gmm_components} is more than node {node}'s {kept[node]} "
            "training examples"
        )
