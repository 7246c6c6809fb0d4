"""The fixed class-balanced evaluation subset (task.eval_examples): the same test examples for
every node and both runtimes, drawn once from the experiment seed (the authors of the
vanishing-variance paper evaluate on 100 class-balanced test images)."""

from __future__ import annotations

import numpy as np

from fedgossip.base.seeding import stream


def balanced_rows(labels: np.ndarray, num_classes: int, examples: int, seed: int) -> np.ndarray:
    """Sorted rows of `labels` holding exactly examples // num_classes of each class, drawn without
    replacement from the seed's "eval_subset" stream (not the node's): every node gets the same.
    ValueError naming task.eval_examples when it is not a multiple of the class count or asks
    more of a class than the test set has."""
    if examples % num_classes:
        raise ValueError(
            f"task.eval_examples = {examples} must be a multiple of the dataset's {num_classes} classes "
            "(the subset holds as many examples of every class)"
        )
    per_class = examples // num_classes
    counts = np.bincount(labels, minlength=num_classes)
    if counts.min() < per_class:
        raise ValueError(
            f"task.eval_examples = {examples} asks {per_class} test examples of every class; class "
            f"{int(counts.argmin())} has {int(counts.min())} (at most {int(counts.min()) * num_classes})"
        )
    rng = stream(seed, "eval_subset")
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(chosen))
