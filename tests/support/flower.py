"""Flower as the tests drive it: reply Messages as a SuperNode would deliver them, the settings
of a two-SuperNode deployment run, and the check that every process of such a run is gone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)

from fedgossip.base import flower_protocol as p
from fedgossip.config import load_config
from fedgossip.launcher.supervision.proctree import alive
from tests.support.models import NAMES

FLOWER = [
    "--set",
    "experiment.mode=flower",
    "--set",
    "flower.engine=deployment",
    "--set",
    "nodes.count=2",
    "--set",
    "flower.startup_timeout=60",
    "--set",
    "flower.round_timeout=60",
]
"""`fedgossip run` arguments of a Flower deployment run of two SuperNodes on loopback ports."""


def processes_gone(run: Path) -> dict[str, int]:
    """The processes of the run (processes.json) that are still alive."""
    pids = json.loads((run / "processes.json").read_text())
    assert pids.get("superlink") and pids.get("supernode-0") and pids.get("supernode-1")
    assert any(name.startswith("flower-superexe") for name in pids), pids  # descendants were tracked
    return {name: pid for name, pid in pids.items() if name != "flower_run_id" and alive(pid)}


def reply(
    node_id: int,
    arrays: list[np.ndarray] | None,
    examples: int,
    kind: str = MessageType.TRAIN,
    error: str | None = None,
    partition: int | None = None,
) -> Message:
    """A reply Message as a SuperNode would deliver it."""
    metadata = Metadata(
        run_id=1,
        message_id=f"r{node_id}",
        src_node_id=node_id,
        dst_node_id=1,
        reply_to_message_id=f"m{node_id}",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type=kind,
    )
    if error is not None:
        return Message(metadata=metadata, error=Error(2, error))
    content = RecordDict({p.METRICS: MetricRecord({p.TRAIN_LOSS: 0.5, p.NUM_EXAMPLES: examples})})
    if arrays is not None:
        content[p.ARRAYS] = ArrayRecord({n: Array(a) for n, a in zip(NAMES, arrays, strict=True)})
    if partition is not None:
        content[p.NODE] = ConfigRecord({p.PARTITION_ID: partition, p.NUM_PARTITIONS: 4})
    return Message(metadata=metadata, content=content)


def fair_config(*overrides: str):
    """strategy.name = "fair" on an in-process Flower federation of 5 nodes over a streamed task with
    label noise: 3 explore rounds of 7, then exploit rounds selecting 40%; `overrides` on top."""
    return load_config(
        None,
        [
            'experiment.mode="flower"',
            'flower.engine="inprocess"',
            'strategy.name="fair"',
            "nodes.count=5",
            "experiment.rounds=7",
            "task.stream_chunks=6",
            "task.label_noise=0.6",
            "task.local_epochs=2",
            'strategy.params.stopping="fixed"',
            "strategy.params.explore_rounds=3",
            "strategy.params.ratio=0.4",
            *overrides,
        ],
    )


INPROCESS_NODES, INPROCESS_ROUNDS = 4, 3
INPROCESS = [
    'experiment.mode="flower"',
    'flower.engine="inprocess"',
    "flower.fraction_evaluate=0.0",
    f"nodes.count={INPROCESS_NODES}",
    f"experiment.rounds={INPROCESS_ROUNDS}",
    "task.model=linear",
]
"""A small in-process Flower run of the linear model (no evaluation round)."""
