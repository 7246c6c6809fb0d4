"""Learning tasks: datasets, partitions among nodes, node heterogeneity and models.

Importing this package loads numpy only; torch or scikit-learn is imported when a learner of that
kind is built (a torch peer never loads sklearn).
"""

from .build import build_learner, node_dataset, stream_learner
from .config import TaskConfig
from .data import Dataset, load_dataset
from .learner import Learner
from .partitions import partition_indices

__all__ = [
    "Dataset",
    "Learner",
    "TaskConfig",
    "build_learner",
    "load_dataset",
    "node_dataset",
    "partition_indices",
    "stream_learner",
]
