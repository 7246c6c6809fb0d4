"""What the ServerApp sees of each round, as metrics records: a Grid wrapper between the strategy
and the real Grid.

`RecordingGrid` passes every message through unchanged and, on the way, (1) checks every reply as
untrusted input (a packed model unpacked first, `reply_codec`; then `reply_checks`: model tensor
names, dtypes, shapes and finiteness against the global model, example counts, metric values) and
turns a bad reply into an error reply the strategies skip, (2) counts the model bytes each node
received and sent (as sent: packed), and (3) keeps each node's train loss and test metrics of the round.
`flush(round)` turns them into one record per node (labelled by its partition id) and starts the
next round; `take_consensus()` then gives the consensus distance of the client models trained that
round (read-only views of the replies, dropped at the flush).

Under SecAgg+ (`server/secure_aggregation.py`) a round's training is four exchanges of train
messages carrying the protocol's ConfigRecord: their bytes count too (keys, shares, masked
vectors), the masked-vector replies are checked for their train metrics and one masked integer
vector per tensor (plus the weight), and no reply carries a model: `consensus_distance` is absent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Error, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS as SECAGG_RECORD
from flwr.serverapp import Grid

from fedgossip.base import flower_protocol as p
from fedgossip.schema.codecs import NONE, Codec
from fedgossip.schema.fields import SERVER, Record
from fedgossip.schema.records import metric, record
from fedgossip.schema.tensors import TensorSpec
from fedgossip.server.arrays import array_view
from fedgossip.server.reply_checks import (
    check_evaluate_reply,
    check_masked_reply,
    check_train_reply,
    reply_partition,
)
from fedgossip.server.reply_codec import unpack_reply
from fedgossip.strategies.diagnostics import consensus_distance

PULL_INTERVAL = 0.2  # seconds between pulls of replies from a SuperLink (each pull a request)
IN_MEMORY_PULL_INTERVAL = 0.02
"""Seconds between pulls of replies from the simulation runtime's in-memory link state, where a
pull is a look-up in this process: at PULL_INTERVAL a phase waited 0.1 s for nothing on average,
two to three times a round of 100 clients taking 0.1-0.2 s of the ServerApp's wait (session 16)."""
INVALID_REPLY = 100  # error code of a reply rejected by the ServerApp's checks
NO_REPLY = 101  # error code of a node that did not answer within the round timeout


class RoundFailed(RuntimeError):
    """No node delivered a usable model in a training round."""


def array_bytes(content: RecordDict) -> int:
    """Model bytes in a message: the serialised tensors of its ArrayRecords, and SecAgg+'s bytes
    (public keys, encrypted shares, masked vectors) if it carries the protocol's record."""
    tensors = sum(len(array.data) for record in content.array_records.values() for array in record.values())
    protocol = content.config_records.get(SECAGG_RECORD)
    if protocol is None:
        return tensors
    values = [item for value in protocol.values() for item in (value if isinstance(value, list) else [value])]
    return tensors + sum(len(value) for value in values if isinstance(value, bytes))


@dataclass
class NodeRound:
    """One node's part of one round."""

    train_loss: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    local_accuracy: float | None = None  # task.eval local or both
    num_examples: int | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    errors: list[str] = field(default_factory=list)
    model: list[np.ndarray] | None = None  # the model of its train reply (views into the reply)
    epsilon: float | None = None  # the privacy budget its train reply says it spent ([privacy])


def pull_interval(grid: Grid) -> float:
    """Seconds between pulls of replies from `grid`: IN_MEMORY_PULL_INTERVAL from the simulation
    runtime's `InMemoryGrid` (whose module is loaded wherever one exists: it is not imported for
    this, 0.4 s in a ServerApp of the deployment engine), PULL_INTERVAL from any other."""
    module = sys.modules.get("flwr.superlink.grid.inmemory_grid")
    in_memory = module is not None and isinstance(grid, module.InMemoryGrid)
    return IN_MEMORY_PULL_INTERVAL if in_memory else PULL_INTERVAL


def exchange(
    grid: Grid, messages: list[Message], timeout: float | None, interval: float | None = None
) -> tuple[list[Message], dict[str, int]]:
    """Push `messages` and pull their replies every `interval` seconds (`pull_interval(grid)`
    unless given) until all are in or `timeout` passes (Flower's HTTP grid waits 3 s between
    pulls: every phase would wait that long). Returns the replies in the order of the messages
    they answer (not of their arrival, so aggregation sums in the same order in every run) and
    message id -> destination node."""
    interval = pull_interval(grid) if interval is None else interval
    ids = list(grid.push_messages(messages))
    # the grids return the message ids in message order (None for a message not accepted)
    sent_to = {i: m.metadata.dst_node_id for i, m in zip(ids, messages, strict=False) if i}
    pending = set(sent_to)
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending -= {reply.metadata.reply_to_message_id for reply in got}
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        wait = interval if deadline is None else min(interval, deadline - time.monotonic())
        time.sleep(max(0.0, wait))
    order = {message_id: k for k, message_id in enumerate(sent_to)}
    replies.sort(key=lambda reply: order.get(reply.metadata.reply_to_message_id, len(order)))
    return replies, sent_to


class RecordingGrid(Grid):
    """A Grid that checks replies and keeps per-node numbers of the running round."""

    def __init__(
        self,
        grid: Grid,
        labels: dict[int, int],
        specs: list[TensorSpec],
        pull_interval: float | None = None,
        codec: Codec = NONE,
    ) -> None:
        self.grid = grid
        self.codec = codec  # what train replies are packed with (flower.codec)
        self._models_sent: dict[int, ArrayRecord | None] = {}  # node -> the model of its last message
        self.pull_interval = pull_interval
        self.labels = labels
        self.specs = specs
        self.nodes: dict[int, NodeRound] = {}
        self.consensus: dict[str, Any] = {}  # the consensus fields of the last flushed round
        self.phase_seconds: dict[str, float] = {}  # message type -> seconds waited this round
        self._sent_to: dict[str, int] = {}  # message id -> destination node of the last exchange
        self.errors: list[tuple[int | str, str, str]] = []  # (node label, phase, reason) this round

    # --- plain delegation -------------------------------------------------------------------
    def set_run(self, run) -> None:  # pragma: no cover - the real grid is already set up
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover
        return self.grid.pull_messages(message_ids)

    # --- the round's bookkeeping ------------------------------------------------------------
    def label(self, node_id: int) -> int | str:
        return self.labels.get(node_id, f"id-{node_id}")

    def _node(self, node_id: int) -> NodeRound:
        return self.nodes.setdefault(node_id, NodeRound())

    def _fail(self, node_id: int, phase: str, reason: str) -> None:
        self._node(node_id).errors.append(f"{phase}: {reason}")
        self.errors.append((self.label(node_id), phase, reason))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send, wait (at most `timeout`), then check and account every reply."""
        messages = list(messages)
        phase = {m.metadata.message_type for m in messages}
        sent: dict[int, int] = {}
        for message in messages:
            self._models_sent[message.metadata.dst_node_id] = message.content.array_records.get(p.ARRAYS)
            size = array_bytes(message.content)
            sent[message.metadata.dst_node_id] = size
            self._node(message.metadata.dst_node_id).bytes_received += size
        started = time.monotonic()
        replies = self._exchange(messages, timeout)
        for kind in phase:
            self.phase_seconds[kind] = self.phase_seconds.get(kind, 0.0) + time.monotonic() - started
        checked = [self._check(reply) for reply in replies]
        answered = {self._sender(reply) for reply in replies}
        for node_id in sent.keys() - answered:
            self._fail(
                node_id, ",".join(sorted(phase)), f"no reply within {timeout:.0f}s" if timeout else "no reply"
            )
        if MessageType.TRAIN in phase and messages and not any(not r.has_error() for r in checked):
            raise RoundFailed(f"no node delivered a usable model: {summarize_errors(self.errors)}")
        return checked

    def _exchange(self, messages: list[Message], timeout: float | None) -> list[Message]:
        replies, self._sent_to = exchange(self.grid, messages, timeout, self.pull_interval)
        return replies

    def _sender(self, reply: Message) -> int:
        """The node a reply answers for: the addressee of the message it replies to (an error reply
        made by the SuperLink, e.g. "node unavailable", comes from the SuperLink itself)."""
        return self._sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def _check(self, reply: Message) -> Message:
        node_id = self._sender(reply)
        kind = reply.metadata.message_type
        phase = "train" if kind.startswith(MessageType.TRAIN) else "evaluate"
        if reply.has_error():
            self._fail(node_id, phase, reply.error.reason or f"error code {reply.error.code}")
            return reply
        node = self._node(node_id)
        node.bytes_sent += array_bytes(reply.content)
        if node_id not in self.labels and (partition := reply_partition(reply.content)) is not None:
            self.labels[node_id] = partition
        try:
            if phase == "train" and SECAGG_RECORD in reply.content.config_records:
                checked = check_masked_reply(reply.content, self.specs)
                if checked is not None:
                    node.train_loss, node.num_examples = checked
                    node.epsilon = reply.content.metric_records[p.METRICS].get(p.EPSILON)
            elif phase == "train":
                unpack_reply(reply.content, self.codec, self.specs, self._models_sent.get(node_id))
                node.train_loss, node.num_examples = check_train_reply(reply.content, self.specs)
                arrays = next(iter(reply.content.array_records.values()))
                node.model = [array_view(arrays[spec.name]) for spec in self.specs]
                node.epsilon = next(iter(reply.content.metric_records.values())).get(p.EPSILON)
            else:
                node.test_loss, node.test_accuracy, node.local_accuracy = check_evaluate_reply(reply.content)
        except (ValueError, TypeError, KeyError) as err:
            self._fail(node_id, phase, f"rejected reply: {err}")
            return Message(metadata=reply.metadata, error=Error(INVALID_REPLY, f"rejected reply: {err}"))
        return reply

    def flush(
        self, server_round: int, run_start: float, fallback: tuple[float, float] | None
    ) -> list[Record]:
        """The records of the round that just ended, one per node that took part, and a reset.

        A node that trained but was not (or could not be) evaluated gets the server's evaluation
        of the same global model on the same global test set (`"evaluated_by": "server"`), or
        without one (`fallback` None: a round experiment.evaluate_every skips) no test figures
        (`"evaluated_by": null`); a node that delivered nothing usable this round gets no record
        (its errors are reported).
        """
        records = []
        for node_id, node in sorted(self.nodes.items(), key=lambda item: str(self.label(item[0])).zfill(12)):
            if node.train_loss is None and node.test_accuracy is None:
                continue
            evaluated_by: str | None = "node"
            test_loss, test_accuracy = node.test_loss, node.test_accuracy
            if test_accuracy is None:
                evaluated_by = None if fallback is None else "server"
                test_loss, test_accuracy = fallback or (None, None)
            records.append(
                record(
                    self.label(node_id),
                    server_round,
                    run_start,
                    train_loss=node.train_loss,
                    test_loss=test_loss,
                    test_accuracy=test_accuracy,
                    num_examples=node.num_examples,
                    bytes_sent=node.bytes_sent,
                    bytes_received=node.bytes_received,
                    evaluated_by=evaluated_by,
                    **({"errors": node.errors} if node.errors else {}),
                    **({"epsilon": node.epsilon} if node.epsilon is not None else {}),
                    **({} if node.local_accuracy is None else {"local_accuracy": node.local_accuracy}),
                )
            )
        self.consensus = consensus_fields([n.model for n in self.nodes.values() if n.model is not None])
        self.nodes = {}
        return records

    def take_consensus(self) -> dict[str, Any]:
        """The consensus fields of the round flushed last (and a reset)."""
        consensus, self.consensus = self.consensus, {}
        return consensus

    def take_phase_seconds(self) -> dict[str, float]:
        """Seconds spent waiting for each kind of message this round (and a reset)."""
        seconds, self.phase_seconds = self.phase_seconds, {}
        return {f"{kind}_s": round(value, 3) for kind, value in sorted(seconds.items())}

    def take_errors(self) -> list[tuple[int | str, str, str]]:
        errors, self.errors = self.errors, []
        return errors


def server_record(
    server_round: int,
    run_start: float,
    loss: float | None,
    accuracy: float | None,
    num_examples: int,
    nodes: list[dict],
) -> dict:
    """The record of the server's evaluation of the global model after `server_round` (None: the
    round is not evaluated)."""
    trained = [(r["train_loss"], r["num_examples"]) for r in nodes if r["train_loss"] is not None]
    total = sum(n for _, n in trained)
    return record(
        SERVER,
        server_round,
        run_start,
        train_loss=sum(loss_ * n for loss_, n in trained) / total if total else None,
        test_loss=loss,
        test_accuracy=accuracy,
        num_examples=num_examples,
        bytes_sent=sum(r["bytes_received"] for r in nodes),
        bytes_received=sum(r["bytes_sent"] for r in nodes),
    )


def consensus_fields(models: list[list[np.ndarray]]) -> dict[str, Any]:
    """`consensus_distance` of the round's trained client models (null with fewer than two) and
    `consensus_models`; nothing for a round without training (round 0)."""
    if not models:
        return {}
    distance = consensus_distance(models) if len(models) >= 2 else None
    return {"consensus_distance": metric(distance), "consensus_models": len(models)}


def summarize_errors(errors: list[tuple[int | str, str, str]]) -> str:
    """One line for many node errors: nodes with the same reason are listed together."""
    by_reason: dict[str, list[str]] = {}
    for label, _, reason in errors:
        prefix = f"node {label}: "
        by_reason.setdefault(reason.removeprefix(prefix), []).append(str(label))
    parts = [
        f"node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)}: {reason}"
        for reason, nodes in by_reason.items()
    ]
    return "; ".join(parts) or "no reply"


def labels_view(labels: Mapping[int, int]) -> dict[str, int]:
    """node id -> partition id with string keys (JSON)."""
    return {str(k): v for k, v in labels.items()}
