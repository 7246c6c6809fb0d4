"""The ServerApp's handshake: ask connected nodes for their partition (a query message each), so
records and sampling use stable partition ids whatever random node ids the SuperNodes registered
with, and a SuperNode started with a wrong or duplicate partition is refused before any training.
Used at the start of a run (`discover_nodes`) and for SuperNodes that come back under churn
(`ask_partitions`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedgossip.base import flower_protocol as p
from fedgossip.server.flower_strategies import NodesMissing
from fedgossip.server.recording import exchange


class HandshakeFailed(RuntimeError):
    """The connected nodes do not make up the experiment's partitions."""


def ask_partitions(
    grid: Grid, nodes: Iterable[int], labels: dict[int, int], count: int, timeout: float
) -> None:
    """Ask `nodes` for their partition and add the answers to `labels` (node id -> partition id).
    A node that does not answer within `timeout` seconds stays unknown. HandshakeFailed when a node
    answers with an error, a partition outside [0, count), a different partition count, or a
    partition another node of `labels` already holds."""
    messages = [
        Message(
            RecordDict({p.CONFIG: ConfigRecord({"ask": p.PARTITION_ID})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    if not messages:
        return
    replies, sent_to = exchange(grid, messages, timeout)
    for reply in replies:
        node = sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        labels[node] = _partition_of(reply, count, node)
    taken: dict[int, int] = {}
    for node, partition in labels.items():
        if partition in taken:
            raise HandshakeFailed(
                f"two SuperNodes (ids {taken[partition]} and {node}) hold partition-id {partition}"
            )
        taken[partition] = node


def discover_nodes(grid: Grid, count: int, timeout: float, interval: float = 0.5) -> dict[int, int]:
    """Node id -> partition id of `count` connected nodes, asked by a query message each.

    Raises NodesMissing when fewer than `count` nodes answered within `timeout` seconds, and
    HandshakeFailed as `ask_partitions` does.
    """
    labels: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while True:
        unknown = [node for node in grid.get_node_ids() if node not in labels]
        ask_partitions(grid, unknown, labels, count, max(1.0, deadline - time.monotonic()))
        if len(labels) >= count:
            return labels
        if time.monotonic() >= deadline:
            missing = sorted(set(range(count)) - set(labels.values()))
            raise NodesMissing(
                f"only {len(labels)} of {count} nodes connected and answered within {timeout:.0f}s; "
                f"missing partition ids {missing}"
            )
        time.sleep(interval)


def _partition_of(reply: Message, count: int, node: int) -> int:
    """The partition a handshake reply reports, checked."""
    if reply.has_error():
        raise HandshakeFailed(f"node {node} failed the handshake: {reply.error.reason}")
    record = reply.content.config_records.get(p.NODE)
    partition = record.get(p.PARTITION_ID) if record is not None else None
    partitions = record.get(p.NUM_PARTITIONS) if record is not None else None
    problem = p.partition_problem(partition, partitions, count)
    if problem:
        raise HandshakeFailed(f"node {node} reports {problem}")
    return partition
