"""What the fedgossip ServerApp and ClientApp agree on: run-config keys, record keys, limits.

Both apps read the experiment from the Flower run config (`config-toml`, the experiment config as
TOML text, plus optional `overrides`), so a remote SuperNode needs nothing but the installed
fedgossip package and its `--node-config "partition-id=I num-partitions=N"`. This module imports
no Flower, no torch and nothing of fedgossip: the launcher uses it too. The experiment config of a
run config is `fedgossip.config.flower_run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Run-config keys ([tool.flwr.app.config] of the app's pyproject.toml)
CONFIG_TOML = "config-toml"  # the experiment config as TOML text; "" = the built-in default
OVERRIDES = "overrides"  # "section.key=value" items separated by ";", applied on top
RECORDS_PATH = "records-path"  # where the ServerApp appends its JSON lines; "" = log only
RUN_START = "run-start"  # epoch seconds the launcher started the run; 0 = ServerApp start
MODEL_PATH = "model-path"  # where the ServerApp saves the final global model (.npz); "" = nowhere

RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    CONFIG_TOML: "",
    OVERRIDES: "",
    RECORDS_PATH: "",
    RUN_START: 0.0,
    MODEL_PATH: "",
}

# Node-config keys (flower-supernode --node-config; set by the simulation engine itself)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"

# Record keys inside messages
ARRAYS = "arrays"  # ArrayRecord: the model, tensors named as the Learner names them
CONFIG = "config"  # ConfigRecord sent to nodes (server-round, ...)
METRICS = "metrics"  # MetricRecord of a reply
NODE = "node"  # ConfigRecord of a reply: partition-id, num-partitions, fedgossip version
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train_loss"
TEST_LOSS = "test_loss"
TEST_ACCURACY = "test_accuracy"
EPSILON = "epsilon"  # train reply metric: the node's spent privacy budget ([privacy])
LOCAL_ACCURACY = "local_accuracy"  # evaluate reply with task.eval local or both: on the node's own split
STATE = "fedgossip"  # ConfigRecord in context.state: per-node state that survives rounds
SHUFFLE_STATE = "shuffle-state"
LOCAL_TENSORS = "fedgossip-local"  # ArrayRecord in context.state: the node's own local tensors (BatchNorm)
GENERATORS = "fedgossip-generators"  # ArrayRecord in context.state: a learner's training RNGs (dropout)
MOMENTUM = "fedgossip-momentum"  # ArrayRecord in context.state: momentum buffers kept (task.keep_momentum)
SERVER_ROUND = "server-round"  # ConfigRecord key of train/evaluate messages (Flower's own name)
KEEP_MODEL = "keep-model"  # evaluate config: keep this message's model as the node's own model
KEPT_MODEL = "kept-model"  # ArrayRecord in context.state: the node's own model (strategy fair)
CODEC = "codec"  # `node` ConfigRecord of a train reply: the codec its tensors are packed with (flower.codec)
RESIDUAL = "fedgossip-residual"  # ArrayRecord in context.state: what top-k replies left out (flower.codec)

MAX_NUM_EXAMPLES = 1 << 40


def save_model(path: str | Path, arrays: Mapping[str, Any]) -> None:
    """Save a model (tensor name -> numpy array) as an .npz file, written whole then renamed."""
    import numpy as np

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as sink:
        np.savez(sink, **dict(arrays))
    partial.replace(target)


def load_model(path: str | Path) -> dict[str, Any]:
    """A model saved by `save_model`, tensor name -> numpy array, in saved order."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def partition_problem(partition: Any, partitions: Any, num_nodes: int) -> str | None:
    """What is wrong with a node's partition-id and num-partitions for an experiment of `num_nodes`
    nodes (None: nothing); the SuperNode's own check and the server's handshake say it alike."""
    if isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < num_nodes:
        return f"{PARTITION_ID}={partition!r} must be an integer in [0, {num_nodes})"
    if partitions != num_nodes:
        return f"{NUM_PARTITIONS}={partitions!r} does not match the experiment's nodes.count={num_nodes}"
    return None


def node_partition(node_config: Mapping[str, Any], num_nodes: int) -> int:
    """The partition id of a SuperNode, checked against the experiment's node count."""
    if PARTITION_ID not in node_config:
        raise ValueError(
            f"this SuperNode has no {PARTITION_ID} in its node config: start it with "
            f'--node-config "{PARTITION_ID}=I {NUM_PARTITIONS}={num_nodes}"'
        )
    partition = node_config[PARTITION_ID]
    problem = partition_problem(partition, node_config.get(NUM_PARTITIONS, num_nodes), num_nodes)
    if problem:
        raise ValueError(f"node config {problem}")
    return partition
