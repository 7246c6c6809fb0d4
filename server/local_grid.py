"""An in-process Grid: N nodes in this process, each message handled at once by a ClientApp.

No SuperLink, no ports, no Ray: `Strategy.start()` and the whole federation run in one process.
Used by the launcher's `engine = "inprocess"` and by tests. Each node has its own Context (node
config with partition-id/num-partitions, persistent state), like a SuperNode; node ids are random
64-bit integers drawn from `id_seed`, like the ones a SuperLink hands out.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, Metadata, RecordDict
from flwr.serverapp import Grid

SUPERLINK_NODE_ID = 1
CLIENT_APP_RAISED_EXCEPTION = 2

ClientAppCallable = Callable[[Message, Context], Message]


def claim_server_identity(run_id: int) -> None:
    """Make this process the ServerApp of run `run_id` for Flower's Message constructor (which
    reads the sender's run and node id from the process-wide TaskIdentity, as a ServerApp
    process started by a SuperLink has it)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID


def _own_copy(content: RecordDict) -> RecordDict:
    """What a SuperNode would receive: its own ConfigRecords (Flower's SecAgg+ mod pops keys from
    them; one message content may go to several nodes), the same read-only arrays and metrics."""
    copy = RecordDict()
    for name, record in content.items():
        copy[name] = ConfigRecord(dict(record)) if isinstance(record, ConfigRecord) else record
    return copy


class LocalGrid(Grid):
    """Nodes that answer every message synchronously, in the order the messages are pushed."""

    def __init__(
        self,
        client_app: ClientAppCallable,
        num_nodes: int,
        run_config: dict[str, Any],
        *,
        run_id: int = 1,
        id_seed: int = 0,
    ) -> None:
        rng = random.Random(id_seed)
        self.client_app = client_app
        self._run_id = run_id
        self._run = None
        self.contexts: dict[int, Context] = {}
        for partition in range(num_nodes):
            node_id = rng.getrandbits(63) + 2
            node_config = {"partition-id": partition, "num-partitions": num_nodes}
            self.contexts[node_id] = Context(run_id, node_id, node_config, RecordDict(), dict(run_config))
        self._replies: dict[str, Message] = {}
        self.messages_handled = 0
        claim_server_identity(run_id)

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Hand each message to its node's ClientApp now; keep the reply for pull_messages."""
        ids = []
        for message in messages:
            context = self.contexts.get(message.metadata.dst_node_id)
            if context is None:
                continue
            message_id = uuid.uuid4().hex
            addressed = Message(
                metadata=Metadata(
                    run_id=self._run_id,
                    message_id=message_id,
                    src_node_id=SUPERLINK_NODE_ID,
                    dst_node_id=message.metadata.dst_node_id,
                    reply_to_message_id="",
                    group_id=message.metadata.group_id,
                    created_at=time.time(),
                    ttl=message.metadata.ttl,
                    message_type=message.metadata.message_type,
                ),
                content=_own_copy(message.content),
            )
            try:
                reply = self.client_app(addressed, context)
            except Exception as err:  # a crashing ClientApp is an error reply, as on a SuperNode
                reply = Message(
                    Error(CLIENT_APP_RAISED_EXCEPTION, f"{type(err).__name__}: {err}"), reply_to=addressed
                )
            self.messages_handled += 1
            self._replies[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(list(self.push_messages(messages)))
