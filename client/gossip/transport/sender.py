"""Pushes to one neighbour, newest model first, never holding the round loop (and the notices that
no model comes this round, see `NeighbourSender.withhold`).

Each neighbour has a one-model slot and a coroutine on the process's event loop
(`eventloop.py`; grpc.aio calls, no thread): `send` puts a model in the slot and returns
a future at once; a model still waiting in the slot when a newer one comes is replaced (its
future says 0 bytes). A model of one chunk goes as one unary call (PushWhole), a longer one as a
stream (PushModel). A round's pushes to several neighbours wake their coroutines with one call
onto the loop (`queue` each, then `wake` them all): one loop wakeup a round, not one a neighbour.
A push to a neighbour that does not answer ends at its timeout, so a frozen neighbour delays only
its own sends. A push refused for a passing reason (the neighbour is busy with pushes, or not
serving yet) is tried again every RETRY_S until its deadline, unless a newer model replaces it. A
push the neighbour cut before its deadline (it found the stream silent for gossip.idle_timeout:
this process was too busy to feed it) is tried again even when a newer model waits, which goes
next: the neighbour is most likely still in that model's round, waiting for it, and takes no model
of a later round in its stead. `open_channels` makes the grpc.aio channels the senders' stubs use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from functools import partial

import grpc

from fedgossip.client.gossip.transport import eventloop as loop
from fedgossip.client.gossip.transport.wire import WireChunk
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc

log = logging.getLogger(__name__)

OnReply = Callable[[int, gossip_pb2.PushReply], None]
RETRY_S = 0.1  # pause before pushing again after a transient refusal or a cut
TRANSIENT = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})
# the status a receiver cuts a silent stream with (transport/service.py); a call past its deadline too
CUT_STATUS = grpc.StatusCode.DEADLINE_EXCEEDED
# how a push may end when it was cut, or passed its deadline, while this process stalled in its
# stream: as CUT_STATUS, or as a local cancellation (grpc.aio cancels a call whose stalled write
# fails before the call's status reached Python; on an idle machine it is the usual outcome)
CUT_ENDINGS = frozenset({CUT_STATUS, grpc.StatusCode.CANCELLED})
QUIET = TRANSIENT | {CUT_STATUS}  # push failures the retry logic logs itself (or not at all)
OPEN_TIMEOUT = 30.0  # making or closing channels on the loop (no network: creation is lazy)


def open_channels(
    addresses: Mapping[int, str],
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, int]],
) -> dict[int, grpc.aio.Channel]:
    """A grpc.aio channel (on the process's loop) to each address, by node: TLS with `credentials`,
    plaintext without."""

    async def make() -> dict[int, grpc.aio.Channel]:
        return {
            node: grpc.aio.secure_channel(address, credentials, list(options))
            if credentials
            else grpc.aio.insecure_channel(address, list(options))
            for node, address in addresses.items()
        }

    return loop.call(make(), OPEN_TIMEOUT)


def close_channels(channels: Sequence[grpc.aio.Channel]) -> None:
    """Close channels made by `open_channels` (cancelling their calls in flight)."""

    async def close() -> None:
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)

    with contextlib.suppress(TimeoutError):
        loop.call(close(), OPEN_TIMEOUT)


async def _event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; whether it is set."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


def _settle(result: futures.Future, nbytes: int) -> None:
    """Give a send's future its bytes (once: a future the caller cancelled stays cancelled)."""
    with contextlib.suppress(futures.InvalidStateError):
        result.set_result(nbytes)


@dataclass
class _Job:
    chunks: Sequence[WireChunk]
    deadline: float
    wait: bool
    result: futures.Future


def wake(senders: Iterable[NeighbourSender]) -> None:
    """Wake the coroutines of `senders` to push what their slots hold: one call onto the loop."""
    events = [sender._wake for sender in senders]
    if events:
        loop.call_soon(_set_all, events)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


class NeighbourSender:
    """The push queue (one slot deep) of one neighbour; `stub` is on a channel of `open_channels`."""

    def __init__(
        self,
        node: int,
        stub: gossip_pb2_grpc.GossipStub,
        metadata: Sequence[tuple[str, str]],
        on_reply: OnReply,
        min_timeout: float = 1.0,
    ) -> None:
        self.node = node
        self._stub = stub
        self._metadata = tuple(metadata)
        self._on_reply = on_reply
        self._min_timeout = min_timeout
        self._lock = threading.Lock()  # the slot and the closed flag: set by callers, read on the loop
        self._job: _Job | None = None
        self._closed = False
        self._wake = asyncio.Event()  # a model in the slot, or closed (set on the loop only)
        self._closing = asyncio.Event()
        self._worker = loop.submit(self._work())

    def send(self, chunks: Sequence[WireChunk], deadline: float, *, wait: bool) -> futures.Future:
        """Queue a model (replacing one not yet sent) and wake the sender; the future gives the
        bytes delivered.

        `wait`: wait for the neighbour to be reachable (a live neighbour that starts late), until
        `deadline` (monotonic); otherwise one fail-fast attempt.
        """
        result = self.queue(chunks, deadline, wait=wait)
        wake([self])
        return result

    def queue(self, chunks: Sequence[WireChunk], deadline: float, *, wait: bool) -> futures.Future:
        """`send` without waking the sender: `wake` it (with the round's other senders) next."""
        job = _Job(chunks, deadline, wait, futures.Future())
        with self._lock:
            if self._closed:
                _settle(job.result, 0)
                return job.result
            if self._job is not None:
                _settle(self._job.result, 0)  # replaced by a newer model before it was sent
            self._job = job
        return job.result

    def withhold(self, notice: gossip_pb2.WithholdNotice, deadline: float, *, wait: bool) -> futures.Future:
        """Tell the neighbour that no model comes from this peer in `notice.round` (fair gossip),
        without holding the caller: one unary call, its reply handled like a push's, a failure
        logged (the neighbour then waits for the model as for a silent one, up to its timeout).
        The future is done (0 bytes) when the call is."""
        timeout = max(self._min_timeout, deadline - time.monotonic())

        async def notify() -> int:
            call = partial(
                self._stub.Withhold, notice, timeout=timeout, metadata=self._metadata, wait_for_ready=wait
            )
            reply = await self._answer("notice", call, quiet=frozenset())
            if not isinstance(reply, grpc.StatusCode):
                self._on_reply(self.node, reply)
            return 0

        return loop.submit(notify())

    def close(self) -> None:
        """Stop the coroutine after the push in progress; a model still waiting is dropped."""
        with self._lock:
            self._closed = True
            if self._job is not None:
                _settle(self._job.result, 0)
                self._job = None
        loop.call_soon(self._shut)

    def _shut(self) -> None:
        self._closing.set()
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                job, self._job = self._job, None
            if job is not None:
                delivered = 0
                try:
                    delivered = await self._transmit(job)
                finally:
                    _settle(job.result, delivered)

    async def _transmit(self, job: _Job) -> int:
        """Push one model, again after each transient refusal or cut until its deadline; bytes
        delivered (by the push that arrived: a cut one delivered none)."""
        outcome = await self._push(job)
        while isinstance(outcome, grpc.StatusCode) and not await self._retry_later(job, outcome):
            outcome = await self._push(job)
        if isinstance(outcome, grpc.StatusCode):
            log.info(
                "push to node %d given up (%s): deadline, newer model or closed", self.node, outcome.name
            )
            return 0
        return outcome

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds` (a message in flight); True if the sender closed meanwhile."""
        return await _event(self._closing, seconds)

    def _waiting(self) -> bool:
        """Whether the sender closed or a newer model waits in the slot."""
        with self._lock:
            return self._closed or self._job is not None

    async def _retry_later(self, job: _Job, failed: grpc.StatusCode) -> bool:
        """After a transient refusal or a cut (`failed`), wait RETRY_S and say whether to give up
        instead: the deadline passed, the sender closed, or (after a refusal) a newer model waits."""
        if not self._waiting():
            self._wake.clear()  # a send's wake-up runs on this loop after this line: none is lost
            await _event(self._wake, RETRY_S)
        with self._lock:
            stop = self._closed or (self._job is not None and failed not in CUT_ENDINGS)
        return stop or time.monotonic() + RETRY_S > job.deadline

    async def _push(self, job: _Job) -> int | grpc.StatusCode:
        """Push one model (PushWhole when it is one chunk, else PushModel's stream); a refused or
        failed push is logged, never raised. Returns bytes delivered,
        or the status of a failure worth trying again: a transient refusal (the neighbour is busy
        or not up yet) or a cut (see `_cut`)."""
        whole = len(job.chunks) == 1  # one unary call: a fraction of a stream's cost
        call = partial(
            self._stub.PushWhole if whole else self._stub.PushModel,
            job.chunks[0] if whole else iter(job.chunks),
            timeout=max(self._min_timeout, job.deadline - time.monotonic()),
            metadata=self._metadata,
            wait_for_ready=job.wait,
        )
        reply = await self._answer("push", call, quiet=QUIET)
        if isinstance(reply, grpc.StatusCode):
            return reply if reply in TRANSIENT or (reply in CUT_ENDINGS and self._cut(job, reply)) else 0
        self._on_reply(self.node, reply)
        if not reply.accepted:
            log.info("node %d did not use our model: %s", self.node, reply.detail)
            return 0
        return sum(len(c.data) for c in job.chunks)

    def _cut(self, job: _Job, ending: grpc.StatusCode) -> bool:
        """After a push ended as one of CUT_ENDINGS, say (logged) whether the receiver cut it before
        the job's deadline (it found the stream silent: worth pushing again) or the deadline
        passed; a push cancelled because the sender closed is neither."""
        with self._lock:
            if self._closed:
                return False
        if time.monotonic() < job.deadline:
            log.info("push to node %d cut by the receiver (stream silent too long): pushing again", self.node)
            return True
        log.warning("push to node %d failed: %s (its deadline passed)", self.node, ending.name)
        return False

    async def _answer(
        self, what: str, call: Callable[[], Awaitable[gossip_pb2.PushReply]], quiet: frozenset
    ) -> gossip_pb2.PushReply | grpc.StatusCode:
        """The reply of the call `call()` makes, or the status it failed with, logged unless in
        `quiet` (CANCELLED for a call cut at shutdown: a closed channel never crashes the loop)."""
        try:
            return await call()
        except grpc.RpcError as err:
            if err.code() not in quiet:
                log.warning("%s to node %d failed: %s %s", what, self.node, err.code().name, err.details())
            return err.code()
        except (Exception, asyncio.CancelledError) as err:  # a channel closed under the call
            log.warning("%s to node %d failed: %s", what, self.node, type(err).__name__)
            return grpc.StatusCode.CANCELLED
