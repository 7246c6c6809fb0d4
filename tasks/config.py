"""TaskConfig: the validated description of what nodes learn and how they are made unequal."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

from fedgossip.base.constraints import (
    Constrained,
    Constraint,
    InstanceOf,
    Interval,
    ListOf,
    Registered,
    Satisfies,
    StrOptions,
)

from .datasets import DATASETS, dataset_entry
from .partitions import COVARIATE, DIRICHLET_SAMPLING, SCHEMES
from .registry import model_entry

PARTITIONS = (*SCHEMES, "none", DIRICHLET_SAMPLING, COVARIATE)
EVALS = ("global", "local", "both")
MAX_ROTATIONS = 4  # image groups of the covariate partition: rotations by 0, 90, 180, 270 degrees
INITS = ("own", "shared")
DEVICES = ("cpu", "cuda", "auto")
TEXT = InstanceOf(str)
AT_LEAST_ONE = Interval(Integral, 1)


@dataclass(frozen=True)
class TaskConfig(Constrained):
    """What every node learns (data, partition, model, optimiser) and how nodes are made unequal.

    Data: `dataset` (registered in `datasets`), `path` for the file datasets (an .npz file; a
    Hugging Face id or local folder; a prepared shard folder), the Hugging Face `image_column` /
    `label_column` ("" = detected) and `hf_train_split` / `hf_test_split` ("" = no test split:
    our split).
    `partition = "none"` gives every node the whole training set (a device with its own file);
    "dirichlet-sampling" too, each node drawing its batches (with replacement) by its own
    Dirichlet(`alpha`) label probabilities (the vanishing-variance authors' non-IID setting).
    Model: `model` is a registered name or a user's "package.module:function" (see `registry`);
    `device` cpu | cuda | auto. SGD: learning_rate, momentum, weight_decay (torch models).
    A round trains `local_epochs` epochs, or with `local_steps` > 0 that many minibatches of
    `batch_size` (e.g. 1: the vanishing-variance authors' FL clients, one batch per broadcast).
    `keep_momentum`: the momentum buffers persist from one train() call (round) to the next, as
    in the fair-incentive authors' code (False: fresh buffers every round). A merge or the server
    replacing the weights leaves them as they are (the authors' too); a node that does not train
    in a round (unselected by fair) keeps them unchanged until it trains again.
    `stream_chunks` > 0 streams the data (see `stream`): round t trains on each node's chunk t of
    its partition and evaluates on every node's clean chunk t + 1 (both modes; 0 = no stream).
    `eval_examples` > 0 evaluates on a fixed class-balanced subset of the test set (as many of
    every class, drawn once from the experiment seed: the same for every node and both modes; 0 =
    the whole test set); in a streamed task the nodes evaluate on the round's chunk, so it applies
    to the global test set only (the Flower server's evaluation of the global model).
    `eval`: "global" scores every node on the global test set; "local" on its own test split
    (task.test_fraction of its partition, drawn from its own distribution: `local_eval`); "both"
    on the global one, with the local accuracy beside it in the record (`local_accuracy`).
    `finetune_epochs` > 0 (eval local or both): the local accuracy is that of the model fine-tuned
    that many epochs on the node's own data (FedAvg + local adaptation; the kept model unchanged).
    `partition = "covariate"`: covariate shift among nodes (`covariate`): `shift_groups` input
    distributions (image rotations by 90 degrees, at most 4; shifted features; the components of
    the "gmm-synthetic" dataset), mixed per node by Dirichlet(`shift_alpha`), labels skewed by
    Dirichlet(`alpha`) on top.
    `gmm_components`, `gmm_learners`: model "fedgmm"'s Gaussian input components and learners
    (`fedgmm_learner`; 1 and 1: FedAvg of the same softmax regression); `gmm_embedding` > 0: the
    Gaussians sit on that many principal components of the global test inputs (unlabelled, the
    same on every node), the learners on the raw features. `unseen_nodes` (covariate
    partition): the partition is drawn for nodes.count + unseen_nodes nodes and the last
    unseen_nodes never train: new nodes, adapted to the final model after the run
    (`reports/fedgmm.py`).
    """

    section_name = "task"
    constraints: ClassVar[dict[str, Constraint]] = {
        "dataset": Registered(DATASETS),
        "path": TEXT,
        "image_column": TEXT,
        "label_column": TEXT,
        "hf_train_split": Satisfies(lambda value: isinstance(value, str) and value, "a non-empty string", ""),
        "hf_test_split": TEXT,
        "model": TEXT,  # a registered name or package.module:function: check_together asks the registry
        "device": StrOptions(*DEVICES),
        "partition": StrOptions(*PARTITIONS),
        "alpha": Interval(Real, 0.0, closed="neither"),
        "shards_per_node": AT_LEAST_ONE,
        "local_epochs": AT_LEAST_ONE,
        "local_steps": Interval(Integral, 0),
        "batch_size": AT_LEAST_ONE,
        "learning_rate": Interval(Real, 0.0, closed="neither"),
        "momentum": Interval(Real, 0.0, 1.0, closed="left"),
        "weight_decay": Interval(Real, 0.0),
        "test_fraction": Interval(Real, 0.0, 1.0, closed="neither"),
        "init": StrOptions(*INITS),
        "label_noise": ListOf(Interval(Real, 0.0, 1.0), single=True),  # one ramp maximum, or per node
        "feature_noise": ListOf(Interval(Real, 0.0), single=True),
        "hidden": AT_LEAST_ONE,
        "threads": AT_LEAST_ONE,
        "synthetic_samples": AT_LEAST_ONE,  # and 10 per class: check_together
        "synthetic_features": AT_LEAST_ONE,
        "synthetic_classes": Interval(Integral, 2),
        "stream_chunks": Interval(Integral, 0),
        "eval_examples": Interval(Integral, 0),  # a multiple of the classes: checked on the data
        "keep_momentum": InstanceOf(bool),
        "eval": StrOptions(*EVALS),
        "shift_groups": AT_LEAST_ONE,
        "shift_alpha": Interval(Real, 0.0, closed="neither"),
        "gmm_components": AT_LEAST_ONE,
        "gmm_learners": AT_LEAST_ONE,
        "gmm_embedding": Interval(Integral, 0),
        "unseen_nodes": Interval(Integral, 0),
        "finetune_epochs": Interval(Integral, 0),
    }

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
    local_steps: int = 0
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
    eval_examples: int = 0
    keep_momentum: bool = False
    eval: str = "global"
    shift_groups: int = 4
    shift_alpha: float = 0.4
    gmm_components: int = 3
    gmm_learners: int = 3
    gmm_embedding: int = 0
    unseen_nodes: int = 0
    finetune_epochs: int = 0

    def check_together(self) -> None:
        """The checks that involve several fields: the model against the registry and the data."""
        model_entry(self.model)
        self._check_data_keys()
        if model_entry(self.model).images and dataset_entry(self.dataset).tabular:
            raise ValueError(
                f"task.model {self.model!r} needs images; task.dataset {self.dataset!r} is tabular "
                "(use mlp, linear or your own model)"
            )
        samples = Interval(Integral, 10 * self.synthetic_classes)
        samples.check("task.synthetic_samples", self.synthetic_samples)
        self._check_covariate()
        if self.finetune_epochs and self.eval == "global":
            raise ValueError(
                f"task.finetune_epochs = {self.finetune_epochs} fine-tunes before the local evaluation; "
                'task.eval is "global" (set "local" or "both")'
            )

    def _check_covariate(self) -> None:
        """The covariate partition: not of launcher-prepared shards nor streamed; images have at
        most 4 rotations."""
        if self.partition != COVARIATE:
            if self.unseen_nodes:
                raise ValueError(
                    f"task.unseen_nodes = {self.unseen_nodes} holds nodes out of the covariate partition; "
                    f"task.partition is {self.partition!r}"
                )
            return
        entry = dataset_entry(self.dataset)
        if not entry.source or (entry.prepared and not self._local_mnist()) or self.stream_chunks:
            raise ValueError(
                f"task.partition {COVARIATE!r} needs a dataset the nodes load themselves (mnist: from a "
                f"local copy, task.path or $FEDGOSSIP_DATA/mnist.npz) and no stream; got task.dataset "
                f"{self.dataset!r}, task.stream_chunks {self.stream_chunks}"
            )
        if not entry.tabular and self.shift_groups > MAX_ROTATIONS:
            raise ValueError(
                f"task.shift_groups must be at most {MAX_ROTATIONS} (rotations by 90 degrees) for the "
                f"images of task.dataset {self.dataset!r}; got {self.shift_groups}"
            )

    def _local_mnist(self) -> bool:
        """Whether the dataset is mnist from a local file (the nodes can read it themselves)."""
        from .mnist import local_copy  # here: mnist imports this module

        return self.dataset == "mnist" and local_copy(self) is not None

    def _check_data_keys(self) -> None:
        """task.path is required by the file datasets (mnist: optional) and only allowed for them;
        task.partition = "dirichlet-sampling" excludes task.stream_chunks."""
        entry = dataset_entry(self.dataset)
        if entry.path and entry.path_required and not self.path:
            raise ValueError(f"task.dataset {self.dataset!r} needs task.path: {entry.path}")
        if self.partition == DIRICHLET_SAMPLING and self.stream_chunks:
            raise ValueError(
                f"task.partition {DIRICHLET_SAMPLING!r} samples the whole training set every epoch; "
                f"it cannot be streamed (task.stream_chunks = {self.stream_chunks}): set one of them"
            )
        if self.path and not entry.path:
            readers = [name for name, other in DATASETS.items() if other.path]
            raise ValueError(
                f"task.path applies to the datasets {', '.join(readers)}; task.dataset is {self.dataset!r}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TaskConfig:
        """Build from a mapping such as a TOML [task] table, rejecting unknown keys."""
        known = {field.name for field in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"unknown key task.{key} (known: {', '.join(sorted(known))})")
        return cls(**values)
