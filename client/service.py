"""The gRPC face of a gossip peer: accept pushes into the inbox, serve the current model, report health.

Every push is untrusted: token, header, sizes, dtypes, shapes, finiteness and round are checked by
`ModelAssembler`; a bad one is answered with its status code, logged, and never merged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import grpc
import numpy as np

from fedgossip.client.inbox import Inbox
from fedgossip.client.security import token_matches
from fedgossip.client.wire import ModelAssembler, TensorSpec, WireError, assemble, encode
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc

log = logging.getLogger(__name__)


class GossipService(gossip_pb2_grpc.GossipServicer):
    """Servicer of one peer. `publish` sets the model that GetModel returns."""

    def __init__(
        self,
        node: int,
        specs: Sequence[TensorSpec],
        inbox: Inbox,
        *,
        neighbours: Sequence[int] | None,
        rounds: int,
        max_bytes: int,
        token: str | None,
        rounds_ahead: int = 4,
    ) -> None:
        self.node = node
        self.specs = list(specs)
        self.inbox = inbox
        self.neighbours = neighbours
        self.rounds = rounds
        self.max_bytes = max_bytes
        self.token = token
        self.rounds_ahead = rounds_ahead
        self.state = "starting"
        self.completed = 0
        self._lock = threading.Lock()
        self._published: tuple[list[np.ndarray], int] | None = None

    def publish(self, arrays: list[np.ndarray], num_examples: int, completed: int) -> None:
        """Make `arrays` the model GetModel serves, after `completed` rounds."""
        with self._lock:
            self._published = (arrays, num_examples)
            self.completed = completed

    def PushModel(self, request_iterator: Iterator[gossip_pb2.ModelChunk], context: grpc.ServicerContext):
        self._authorize(context)
        low = self.inbox.open_round
        assembler = ModelAssembler(
            self.specs,
            senders=self.neighbours,
            rounds=(1, min(self.rounds, low + self.rounds_ahead)),
            max_bytes=self.max_bytes,
        )
        try:
            message = assemble(request_iterator, assembler)
        except WireError as err:
            log.warning("refused push from %s: %s", context.peer(), err)
            context.abort(err.code, str(err))
        if not self.inbox.put(message):
            return gossip_pb2.PushReply(accepted=False, detail=f"round {message.round} is closed")
        return gossip_pb2.PushReply(accepted=True)

    def GetModel(self, request: gossip_pb2.GetModelRequest, context: grpc.ServicerContext):
        self._authorize(context)
        with self._lock:
            published, completed = self._published, self.completed
        if published is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "no model published yet")
        arrays, num_examples = published
        names = [s.name for s in self.specs]
        yield from encode(self.node, completed, num_examples, names, arrays)

    def Health(self, request: gossip_pb2.HealthRequest, context: grpc.ServicerContext):
        return gossip_pb2.HealthReply(node=self.node, round=self.completed, state=self.state)

    def _authorize(self, context: grpc.ServicerContext) -> None:
        if not token_matches(context, self.token):
            log.warning("refused call without a valid token from %s", context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
