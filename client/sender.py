"""Pushes to one neighbour, newest model first, never holding the round loop (and the notices that
no model comes this round, see `NeighbourSender.withhold`).

Each neighbour has a thread and a one-model slot: `send` puts a model in the slot and returns a
future at once; a model still waiting in the slot when a newer one comes is replaced (its future
says 0 bytes). A push to a neighbour that does not answer ends at its timeout, so a frozen
neighbour delays only its own sends. A push refused for a passing reason (the neighbour is busy
with pushes, or not serving yet) is tried again every RETRY_S until its deadline, unless a newer
model replaces it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc

from fedgossip.proto import gossip_pb2, gossip_pb2_grpc

log = logging.getLogger(__name__)

OnReply = Callable[[int, gossip_pb2.PushReply], None]
RETRY_S = 0.1  # pause before pushing again after a transient refusal
TRANSIENT = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})


@dataclass
class _Job:
    chunks: Sequence[gossip_pb2.ModelChunk]
    deadline: float
    wait: bool
    result: futures.Future


class NeighbourSender:
    """The push queue (one slot deep) of one neighbour."""

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
        self._cond = threading.Condition()
        self._job: _Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"push-{node}", daemon=True)
        self._thread.start()

    def send(self, chunks: Sequence[gossip_pb2.ModelChunk], deadline: float, *, wait: bool) -> futures.Future:
        """Queue a model (replacing one not yet sent); the future gives the bytes delivered.

        `wait`: wait for the neighbour to be reachable (a live neighbour that starts late), until
        `deadline` (monotonic); otherwise one fail-fast attempt.
        """
        job = _Job(chunks, deadline, wait, futures.Future())
        with self._cond:
            if self._closed:
                job.result.set_result(0)
                return job.result
            if self._job is not None:
                self._job.result.set_result(0)  # replaced by a newer model before it was sent
            self._job = job
            self._cond.notify()
        return job.result

    def withhold(self, notice: gossip_pb2.WithholdNotice, deadline: float, *, wait: bool) -> futures.Future:
        """Tell the neighbour that no model comes from this peer in `notice.round` (fair gossip),
        without holding the caller: one unary call, its reply handled like a push's, a failure
        logged (the neighbour then waits for the model as for a silent one, up to its timeout).
        The future is done (0 bytes) when the call is."""
        done: futures.Future = futures.Future()
        timeout = max(self._min_timeout, deadline - time.monotonic())
        try:
            call = self._stub.Withhold.future(
                notice, timeout=timeout, metadata=self._metadata, wait_for_ready=wait
            )
        except Exception as err:  # a closed channel at shutdown, never a crash of the round loop
            log.warning("notice to node %d failed: %s", self.node, err)
            done.set_result(0)
            return done
        call.add_done_callback(lambda call: self._withheld(call, done))
        return done

    def _withheld(self, call: grpc.Future, done: futures.Future) -> None:
        try:
            self._on_reply(self.node, call.result())
        except grpc.RpcError as err:
            log.warning("notice to node %d failed: %s %s", self.node, err.code().name, err.details())
        except Exception as err:  # cancelled at shutdown
            log.warning("notice to node %d failed: %s", self.node, err)
        done.set_result(0)

    def close(self) -> None:
        """Stop the thread after the push in progress; a model still waiting is dropped."""
        with self._cond:
            self._closed = True
            if self._job is not None:
                self._job.result.set_result(0)
                self._job = None
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job, self._job = self._job, None
            job.result.set_result(self._transmit(job))

    def _transmit(self, job: _Job) -> int:
        """Push one model, again after each transient refusal until its deadline; bytes delivered."""
        delivered = self._push(job)
        while delivered is None and not self._retry_later(job):
            delivered = self._push(job)
        if delivered is None:
            log.info("push to node %d given up: busy or not serving until the deadline", self.node)
        return delivered or 0

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds` (a message in flight); True if the sender closed meanwhile."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout=seconds)

    def _retry_later(self, job: _Job) -> bool:
        """After a transient refusal, wait RETRY_S and say whether to give up instead: the deadline
        passed, a newer model is waiting, or the sender closed."""
        with self._cond:
            if self._job is None and not self._closed:
                self._cond.wait(RETRY_S)
            return self._closed or self._job is not None or time.monotonic() + RETRY_S > job.deadline

    def _push(self, job: _Job) -> int | None:
        """Push one model; a refused or failed push is logged, never raised. Returns bytes delivered,
        None after a transient refusal (the neighbour is busy or not up yet) worth trying again."""
        try:
            reply = self._stub.PushModel(
                iter(job.chunks),
                timeout=max(self._min_timeout, job.deadline - time.monotonic()),
                metadata=self._metadata,
                wait_for_ready=job.wait,
            )
        except grpc.RpcError as err:
            if err.code() in TRANSIENT:
                return None
            log.warning("push to node %d failed: %s %s", self.node, err.code().name, err.details())
            return 0
        except Exception as err:  # a closed channel at shutdown, never a crash of the push thread
            log.warning("push to node %d failed: %s", self.node, err)
            return 0
        self._on_reply(self.node, reply)
        if not reply.accepted:
            log.info("node %d did not use our model: %s", self.node, reply.detail)
            return 0
        return sum(len(c.data) for c in job.chunks)
