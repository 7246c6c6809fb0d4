"""The gRPC face of a gossip peer (grpc.aio): accept pushes into the inbox, serve the model, report health.

Why asyncio: a thread-pool server gives every open stream a thread, so a handful of streams that
send a header and then nothing starve it (Health and real neighbours included). On one event loop
a silent stream costs a coroutine, each read has its own inactivity deadline, and limits are plain
counters: at most `max_pushes` pushes at once and one per sender (RESOURCE_EXHAUSTED beyond), while
Health and GetModel never wait behind pushes.

A model that fits in one chunk (every model under `wire.CHUNK_BYTES`) comes as one unary call,
PushWhole, whose handler is PushModel's with a one-chunk stream: the same checks, answers and limits.
(A stream costs gRPC five batches on the sender's event loop and four on the receiver's, each a
wakeup of its loop through gRPC's poller thread; a unary call one and three.)

Every push is untrusted: the caller's identity (link key or certificate) is checked before a byte is
read or decoded (requests arrive as bytes: `add_to_server`), then the header (sender = caller, round
window, codec = the peer's `gossip.codec`, sizes, dtypes, shapes) and, at the end, the payloads'
decoding, finiteness and the optional norm bound (of the model a differential codec's difference
stands for: `compression.PushCompression.incoming`). Status codes: UNAUTHENTICATED (no or wrong
credentials), PERMISSION_DENIED (sender is not the caller or not a neighbour), INVALID_ARGUMENT
(malformed, or another codec), RESOURCE_EXHAUSTED (too big, too many at once), DEADLINE_EXCEEDED (a
stream fell silent), UNAVAILABLE (GetModel before the first model). A well-
formed push of a closed round, of a round too far ahead, or beyond the norm bound is answered
`accepted = false` with the receiver's round. A Withhold notice (the neighbour sends no model this
round) is checked the same way: identity, sender = caller and a neighbour, round within the run.
Bytes that are no request are INVALID_ARGUMENT (after UNAUTHENTICATED, for a caller without
credentials). Refusals are logged through a `RefusalLog`: a few lines per interval, whoever calls
and however often.

GetModel serves the current model; to the run's observer asking for a measured round
(`ROUND_KEY`), the model published after that round if the peer still keeps it (`retained`: a
peer the observer reads keeps those models until read, since the observer may be rounds late);
to the observer saying it is done with the peer (`DONE_KEY`: its read of the last round failed),
nothing, and the finished peer stops waiting for that read (`observed`).
A model published with a `shared` version (privacy.mechanism "dp-share": the peer's last noised
release) serves that version to every reader but the run's observer, who proved its secret: a
neighbour catching up, or any other caller, never gets the peer's own model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

import grpc
import numpy as np
from google.protobuf.message import Message

from fedgossip.client.gossip.async_inbox import AsyncInbox
from fedgossip.client.gossip.compression import PushCompression
from fedgossip.client.gossip.inbox import Inbox
from fedgossip.client.gossip.transport.identity import (
    NODE_KEY,
    OBSERVER,
    LinkKeys,
    Unauthenticated,
    node_of_certificate,
    token_matches,
)
from fedgossip.client.gossip.transport.refusals import RefusalLog, caller_host
from fedgossip.client.gossip.transport.retained import RetainedModels, nbytes
from fedgossip.client.gossip.transport.wire import (
    Chunk,
    ModelAssembler,
    ModelMessage,
    WireError,
    decode,
    encode,
    parse_chunk,
    serialize,
)
from fedgossip.proto import gossip_pb2
from fedgossip.schema.codecs import NONE
from fedgossip.schema.tensors import ModelRejected, TensorSpec, check_norm, model_norm

CUT = "the push was cut before its end (deadline or cancel)"

log = logging.getLogger(__name__)

ROUND_KEY = "x-fedgossip-round"  # GetModel metadata: the round wanted, if the peer still holds it
# GetModel metadata of the observer's word that it reads no more of the peer's models (none served)
DONE_KEY = "x-fedgossip-observer-done"
# what GetModel serves: (model, num_examples, completed, norm, what readers other than the observer get)
Published = tuple[list[np.ndarray], int, int, float, list[np.ndarray]]
SERVICE = gossip_pb2.DESCRIPTOR.services_by_name["Gossip"].full_name


@dataclass(frozen=True)
class Authenticator:
    """How callers prove who they are: a shared token, per-link keys, client certificates."""

    token: str | None = None
    links: LinkKeys | None = None
    certificates: bool = False  # mutual TLS: the client certificate names the node

    @property
    def identifies(self) -> bool:
        """Whether callers are identified (else a header's sender is taken at its word)."""
        return self.links is not None or self.certificates

    def caller(self, context: grpc.aio.ServicerContext) -> int | None:
        """The caller's node id (None when callers are not identified); Unauthenticated if wrong."""
        metadata = {m.key: m.value for m in context.invocation_metadata() or ()}
        if not token_matches(metadata, self.token):
            raise Unauthenticated("missing or wrong token")
        by_key = self.links.verify(metadata) if self.links is not None else None
        by_cert = self._certificate_node(context) if self.certificates else None
        if by_key is not None and by_cert is not None and by_key != by_cert:
            raise Unauthenticated(f"link key of node {by_key} with the certificate of node {by_cert}")
        return by_key if by_key is not None else by_cert

    def reader(self, context: grpc.aio.ServicerContext) -> int | str | None:
        """Who may read this peer's model (GetModel): a caller as in `caller`, or the run's
        observer (`OBSERVER`, proved by its secret and, with mutual TLS, a certificate so named)."""
        metadata = {m.key: m.value for m in context.invocation_metadata() or ()}
        if metadata.get(NODE_KEY) != OBSERVER:
            return self.caller(context)
        if not token_matches(metadata, self.token):
            raise Unauthenticated("missing or wrong token")
        if self.links is None:
            raise Unauthenticated("this peer has no observer key")
        self.links.verify_observer(metadata)
        if self.certificates:
            names = context.auth_context().get("x509_common_name", [])
            if [n.decode(errors="replace") for n in names] != [OBSERVER]:
                raise Unauthenticated(f"the observer's client certificate is not named {OBSERVER!r}")
        return OBSERVER

    @staticmethod
    def _certificate_node(context: grpc.aio.ServicerContext) -> int:
        names = context.auth_context().get("x509_common_name", [])
        nodes = {node_of_certificate(n.decode(errors="replace")) for n in names}
        if len(nodes) != 1 or None in nodes:
            raise Unauthenticated("client certificate names no node (expected CN node-ID)")
        return nodes.pop()


class GossipService:
    """Servicer of one peer (its requests undecoded: see `add_to_server`). `publish` sets the model
    that GetModel returns."""

    def __init__(
        self,
        node: int,
        specs: Sequence[TensorSpec],
        inbox: Inbox | AsyncInbox,
        *,
        neighbours: Sequence[int] | None,
        rounds: int,
        max_bytes: int,
        auth: Authenticator,
        max_pushes: int,
        idle_timeout: float,
        max_norm_ratio: float = 0.0,
        compression: PushCompression | None = None,
    ) -> None:
        self.node = node
        self.specs = list(specs)
        self.inbox = inbox
        self.neighbours = None if neighbours is None else frozenset(neighbours)
        self.rounds = rounds
        self.max_bytes = max_bytes
        self.auth = auth
        self.max_pushes = max_pushes
        self.idle_timeout = idle_timeout
        self.max_norm_ratio = max_norm_ratio
        self.compression = compression or PushCompression(NONE, specs, gamma=0.0)
        self.state = "starting"
        self.completed = 0
        self._published: Published | None = None
        self.observed = threading.Event()  # set once the observer has read the last round's model
        # the models of measured rounds kept until the observer reads them (none until `retain_for_observer`)
        self._retained: RetainedModels[Published] = RetainedModels(0, rounds)
        self._in_flight: set[int] = set()
        self._pushes = 0  # only touched on the event loop: no lock needed
        self._refusals = RefusalLog(log)

    def publish(
        self,
        arrays: list[np.ndarray],
        num_examples: int,
        completed: int,
        shared: list[np.ndarray] | None = None,
    ) -> None:
        """Make `arrays` the model GetModel serves, after `completed` rounds (one atomic swap);
        `shared`, if given, is what it serves to every reader but the observer."""
        norm = model_norm(arrays) if self.max_norm_ratio > 0 else 0.0
        self._published = (arrays, num_examples, completed, norm, arrays if shared is None else shared)
        self._retained.keep(completed, self._published, nbytes(arrays, shared or ()))
        self.completed = completed

    def retain_for_observer(self, every: int) -> None:
        """Keep the model of every `every`-th round and the last until the run's observer reads it."""
        self._retained = RetainedModels(every, self.rounds)

    async def PushModel(self, request_iterator, context: grpc.aio.ServicerContext):
        return await self._push(context, partial(self._read, context))

    async def PushWhole(self, request: bytes, context: grpc.aio.ServicerContext):
        """A model in one chunk (`request`), pushed as one unary call: PushModel's checks and
        answers (a model that needs more chunks is INVALID_ARGUMENT: fewer bytes than declared)."""
        rest = [request]

        async def read() -> Chunk | None:
            return parse_chunk(rest.pop()) if rest else None

        return await self._push(context, read)

    async def _push(
        self, context: grpc.aio.ServicerContext, read: Callable[[], Awaitable[Chunk | None]]
    ) -> gossip_pb2.PushReply:
        """Take one push whose chunks `read` gives (None at the end), after the caller's identity."""
        caller = await self._identify(context)
        sender, counted = None, False
        try:
            if self._pushes >= self.max_pushes:
                raise WireError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self._pushes} pushes in progress")
            self._pushes, counted = self._pushes + 1, True
            if caller is not None:  # an identified caller holds one push at most, header or not
                sender = self._hold(caller)
            assembler = self._assembler()
            first = await read()
            if first is None:
                raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "empty push: no header")
            header = self._header(assembler, first, caller)
            if caller is None:
                sender = self._hold(header.sender)
            closed = self._closed(header.round, sender)
            if closed is not None:
                return closed
            while (chunk := await read()) is not None:
                assembler.add(chunk)
            return self._admit(self.compression.incoming(assembler.finish()), sender)
        except WireError as err:
            await self._refuse("push", caller if sender is None else sender, context, err)
        except asyncio.CancelledError:  # cancelled while reading: nobody to answer
            who = caller if sender is None else sender
            self._refused("push", who, context.peer(), grpc.StatusCode.CANCELLED, CUT)
            raise
        finally:
            self._pushes -= counted
            self._in_flight.discard(sender)

    def deliver(self, chunks: Sequence[Chunk], caller: int) -> gossip_pb2.PushReply:
        """A push from the identified node `caller` in this process (the virtual-time engine,
        `fedgossip.client.gossip.inprocess`; a co-located peer, `handoff`): the same checks as
        PushModel's, in the same order (header, sender = caller, round window, finiteness, norm
        bound), into the same inbox; a refused push is counted and logged as PushModel's and
        answered `accepted = false`."""
        try:
            assembler = self._assembler()
            if not chunks:
                raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "empty push: no header")
            header = self._header(assembler, chunks[0], caller)
            closed = self._closed(header.round, caller)
            if closed is not None:
                return closed
            for chunk in chunks[1:]:
                assembler.add(chunk)
            return self._admit(self.compression.incoming(assembler.finish()), caller)
        except WireError as err:
            self._refused("push", caller, "", err.code, str(err))
            return self._reply(False, str(err))

    def _assembler(self) -> ModelAssembler:
        """A fresh assembler checking a push against this peer's specs, neighbours, rounds and size."""
        return ModelAssembler(
            self.specs,
            senders=self.neighbours,
            rounds=(1, self.rounds),
            max_bytes=self.max_bytes,
            codec=self.compression.codec,
        )

    @staticmethod
    def _header(assembler: ModelAssembler, first: Chunk, caller: int | None) -> gossip_pb2.ModelHeader:
        """The first chunk's header, checked (PERMISSION_DENIED when an identified caller pushes
        as another node)."""
        assembler.add(first)
        header = assembler.header
        if caller is not None and header.sender != caller:
            raise WireError(
                grpc.StatusCode.PERMISSION_DENIED, f"node {caller} pushed as node {header.sender}"
            )
        return header

    def _closed(self, round_: int, sender: int | None) -> gossip_pb2.PushReply | None:
        """The answer to a push of a closed round (noted), None when its round may be used (a
        model further ahead is held) or its difference must still move the sender's copy (a
        differential codec: the inbox refuses it after)."""
        if self.inbox.window(round_) != "closed" or self.compression.codec.differential:
            return None
        self.inbox.note(sender, round_)
        return self._reply(False, f"round {round_} is closed")

    def _admit(self, message: ModelMessage, sender: int | None) -> gossip_pb2.PushReply:
        """Put a complete, finite model into the inbox unless the norm bound refuses it."""
        implausible = self._implausible(message.arrays)
        if implausible:
            self.inbox.note(sender, message.round)
            self._refusals.warning(
                (sender, "norm"), "refused model of node %d, round %d: %s", sender, message.round, implausible
            )
            return self._reply(False, implausible)
        refused = self.inbox.put(message)
        if refused:
            return self._reply(False, f"round {message.round} is {refused}")
        return self._reply(True)

    async def _refuse(
        self, what: str, who: int | str | None, context: grpc.aio.ServicerContext, err: WireError
    ) -> NoReturn:
        """Count, log and answer a refused `what` (push, notice, call) from `who` (None: unknown)."""
        self._refused(what, who, context.peer(), err.code, str(err))
        await context.abort(err.code, str(err))

    def _refused(
        self, what: str, who: int | str | None, address: str, code: grpc.StatusCode, why: str
    ) -> None:
        """Count a refused call (a bad push proves nothing about its sender being in the round) and
        log it, at most once an interval per caller (its node id, else its `address`) and code."""
        self.inbox.note(None)
        key = who if who is not None else caller_host(address)
        name = who if who is not None else address
        self._refusals.warning((key, what, code), "refused %s from %s: %s", what, name, why)

    def _hold(self, sender: int) -> int:
        """Mark a push from `sender` as in progress; RESOURCE_EXHAUSTED if one already is."""
        if sender in self._in_flight:
            raise WireError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"a push from node {sender} is in progress")
        self._in_flight.add(sender)
        return sender

    async def GetModel(self, request: bytes, context: grpc.aio.ServicerContext):
        reader = await self._identify(context, self.auth.reader)
        await self._decode(gossip_pb2.GetModelRequest, request, reader, context)
        metadata = dict(context.invocation_metadata() or ())
        if reader == OBSERVER and DONE_KEY in metadata:
            self.observed.set()  # its fetch of the last round failed: a finished peer need not wait
            return
        wanted = metadata.get(ROUND_KEY, "")
        kept = self._retained.get(int(wanted)) if reader == OBSERVER and wanted.isdigit() else None
        published = self._published if kept is None else kept
        if published is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no model published yet")
        own, num_examples, completed, _, shared = published
        arrays = own if reader == OBSERVER else shared
        names = [s.name for s in self.specs]
        for chunk in encode(self.node, completed, num_examples, names, arrays):
            await context.write(chunk)
        if kept is not None:
            self._retained.release(completed)
        if reader == OBSERVER and completed >= self.rounds and wanted == str(completed):
            self.observed.set()  # the observer asked for the last round and has it

    async def Health(self, request: bytes, context: grpc.aio.ServicerContext):
        await self._decode(gossip_pb2.HealthRequest, request, None, context)
        return gossip_pb2.HealthReply(node=self.node, round=self.completed, state=self.state)

    async def Withhold(self, request: bytes, context: grpc.aio.ServicerContext):
        """A neighbour's notice that it sends no model in a round: its sender must be the caller
        (when callers are identified) and a neighbour; the round within the run."""
        caller = await self._identify(context)
        try:
            notice = decode(gossip_pb2.WithholdNotice, request)
            self._check_notice(notice.sender, notice.round, caller)
        except WireError as err:
            await self._refuse("notice", caller, context, err)
        return self._withhold(notice)

    def deliver_notice(self, notice: gossip_pb2.WithholdNotice, caller: int) -> gossip_pb2.PushReply:
        """A notice from the identified node `caller` in this process: Withhold's checks and answer."""
        try:
            self._check_notice(notice.sender, notice.round, caller)
        except WireError as err:
            self._refused("notice", caller, "", err.code, str(err))
            return self._reply(False, str(err))
        return self._withhold(notice)

    def _withhold(self, notice: gossip_pb2.WithholdNotice) -> gossip_pb2.PushReply:
        refused = self.inbox.withhold(notice.sender, notice.round)
        return self._reply(refused is None, f"round {notice.round} is {refused}" if refused else "")

    def _check_notice(self, sender: int, round_: int, caller: int | None) -> None:
        """WireError unless `sender` is the caller (if identified) and a neighbour, `round_` in the run."""
        if caller is not None and sender != caller:
            raise WireError(
                grpc.StatusCode.PERMISSION_DENIED, f"node {caller} sent a notice as node {sender}"
            )
        if self.neighbours is not None and sender not in self.neighbours:
            raise WireError(grpc.StatusCode.PERMISSION_DENIED, f"node {sender} is not a neighbour")
        if not 1 <= round_ <= self.rounds:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, f"round {round_} is outside 1..{self.rounds}")

    async def _identify(self, context: grpc.aio.ServicerContext, who=None) -> int | str | None:
        """The caller as `who` (default: `Authenticator.caller`) tells; UNAUTHENTICATED if wrong."""
        try:
            return (who or self.auth.caller)(context)
        except Unauthenticated as err:
            await self._refuse("call", None, context, WireError(grpc.StatusCode.UNAUTHENTICATED, str(err)))

    async def _decode(
        self,
        message_type: type[Message],
        request: bytes,
        who: int | str | None,
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Refuse a request (of `who`, None: unknown) that is no `message_type`: INVALID_ARGUMENT."""
        try:
            decode(message_type, request)
        except WireError as err:
            await self._refuse("call", who, context, err)

    async def _read(self, context: grpc.aio.ServicerContext) -> Chunk | None:
        """The next chunk, None at the end of the stream. Bytes that are no chunk, a stream silent
        for `idle_timeout`, or one that ends past its deadline, are a WireError; a cancelled one
        raises CancelledError. grpc.aio reads a stream cut at its deadline or cancelled as its end,
        though its sender saw the push fail (it may have frozen mid-push: the model proves nothing
        about it)."""
        try:
            raw = await asyncio.wait_for(context.read(), self.idle_timeout)
        except asyncio.TimeoutError:
            raise WireError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"stream silent for {self.idle_timeout:g}s"
            ) from None
        if raw is not grpc.aio.EOF:
            return parse_chunk(raw)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise WireError(grpc.StatusCode.CANCELLED, CUT)
        await asyncio.sleep(0)  # a cancellation read as the end lands here
        return None

    def _implausible(self, arrays: list[np.ndarray]) -> str | None:
        """Why a finite model is not plausible (norm bound), None if it is or the bound is off."""
        published = self._published
        if self.max_norm_ratio <= 0 or published is None:
            return None
        try:
            check_norm(arrays, ratio=self.max_norm_ratio, own_norm=published[3])
        except ModelRejected as err:
            return str(err)
        return None

    def _reply(self, accepted: bool, detail: str = "") -> gossip_pb2.PushReply:
        return gossip_pb2.PushReply(accepted=accepted, detail=detail, round=self.inbox.open_round)


def add_to_server(service: GossipService, server: grpc.aio.Server) -> None:
    """Serve `service` on `server` with its requests undecoded (bytes): each handler decodes them
    once it knows who is calling, so bytes that are no message are an answer (INVALID_ARGUMENT,
    UNAUTHENTICATED first without credentials), not gRPC's UNKNOWN with a traceback logged per call."""
    handlers = {
        "PushModel": grpc.stream_unary_rpc_method_handler(
            service.PushModel, response_serializer=gossip_pb2.PushReply.SerializeToString
        ),
        "PushWhole": grpc.unary_unary_rpc_method_handler(
            service.PushWhole, response_serializer=gossip_pb2.PushReply.SerializeToString
        ),
        "GetModel": grpc.unary_stream_rpc_method_handler(service.GetModel, response_serializer=serialize),
        "Health": grpc.unary_unary_rpc_method_handler(
            service.Health, response_serializer=gossip_pb2.HealthReply.SerializeToString
        ),
        "Withhold": grpc.unary_unary_rpc_method_handler(
            service.Withhold, response_serializer=gossip_pb2.PushReply.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
