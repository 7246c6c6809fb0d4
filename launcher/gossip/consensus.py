"""The launcher's observer of a gossip run: the consensus distance of the peers' models every k rounds.

When a peer's record of round r arrives (r a multiple of `experiment.consensus_every`, or the last
round), the peer still holds its model of round r however many rounds it has moved on since: it
keeps the model of each measured round until the observer has read it (within
`client.gossip.transport.retained.MAX_RETAINED_BYTES`), and serves it when asked for round r. A
background pool fetches that model with GetModel, under the observer's credentials (accepted by
peers for GetModel only, never for a push), and checks the round the peer says it is (a peer
further behind than its bound serves its current model: one of a later measured round is kept for
that round; a peer's last model is read before it exits, and a peer whose last read failed is told
so, `service.DONE_KEY`, so that it need not wait for it). Once every
peer is accounted for (fetched, not answering, moved on to another round, or gone), one line goes
to `consensus.jsonl`:

    {"round", "time_s", "consensus_distance", "consensus_models", "nodes_skipped", "nodes_moved_on",
     "nodes_missing"}

`consensus_distance` is `fedgossip.strategies.diagnostics.consensus_distance` over the models of
round r only (null with fewer than two); the lists name the peers left out: no answer within the
timeout, a model of another round, no record of round r. The launcher's event loop only submits
work: it never waits for a peer. A fetch is a grpc.aio call on the process's event loop, waited
for at most its timeout plus LOOP_SLACK_S whatever gRPC does: a sync call's stream could wait for
ever (grpcio 1.85: a GetModel that failed UNAVAILABLE while its peer crashed kept its message
due, and the run hung at its end). (Each fetch a task on the loop instead of a pool thread
waiting for its call saved nothing: the loop's extra task steps cost what the threads' hops
did.) A peer that recorded a later round without this one (it caught
up) is missing from it. So that memory stays bounded, the oldest round still open when
`MAX_PENDING_ROUNDS` others are is written with what it has once it waits for no fetch, only for
the records of peers silent for `experiment.round_timeout` (alive but stuck); not sooner: a
launcher short of CPU reads the records late and in bursts, one peer's pipe dozens of rounds ahead
of another's (9 s apart at load 25), and their fetches complete.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from fedgossip.base.certificates import issued_paths
from fedgossip.client.gossip.links import QUICK_RECONNECT
from fedgossip.client.gossip.neighbours import LOOP_SLACK_S
from fedgossip.client.gossip.transport import eventloop as loop
from fedgossip.client.gossip.transport.identity import (
    OBSERVER,
    TOKEN_KEY,
    observer_metadata,
    read_observer_secret,
)
from fedgossip.client.gossip.transport.sender import close_channels, open_channels
from fedgossip.client.gossip.transport.service import DONE_KEY, ROUND_KEY
from fedgossip.client.gossip.transport.wire import CHANNEL_OPTIONS, ModelAssembler, ModelMessage, WireError
from fedgossip.config import ExperimentConfig, PeerSection
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
from fedgossip.reports.records import CONSENSUS
from fedgossip.schema.lines import LineWriter
from fedgossip.schema.records import metric
from fedgossip.schema.tensors import TensorSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("fedgossip.consensus")

MAX_PENDING_ROUNDS = 16  # rounds whose models are held; an older one waiting for silent peers is written
FETCH_TIMEOUT_S = 10.0  # a GetModel longer than this (or the round timeout) counts as no answer
FETCH_WORKERS = 4


@dataclass(frozen=True)
class ObserverAccess:
    """Where the peers listen and how the observer proves itself to them."""

    addresses: dict[int, str]
    metadata: tuple[tuple[str, str], ...]
    credentials: grpc.ChannelCredentials | None
    max_bytes: int

    @classmethod
    def of_nodes(cls, node_configs: list[Path]) -> ObserverAccess:
        """From the node configs the launcher wrote: the peers' addresses and the run's security
        material (the observer's secret beside the link keys; the CA; the observer's certificate
        beside the peers' when they demand mutual TLS; the token)."""
        peers = [PeerSection(**tomllib.loads(path.read_text())["peer"]) for path in node_configs]
        first = peers[0]
        secrets_dir = Path(first.link_keys_file).parent
        metadata = observer_metadata(read_observer_secret(secrets_dir))
        if first.token_file:
            metadata = ((TOKEN_KEY, Path(first.token_file).read_text().strip()), *metadata)
        credentials = None
        if first.ca_file:
            ca = Path(first.ca_file).read_bytes()
            if first.client_ca_file:
                issued = issued_paths(Path(first.cert_file).parent, OBSERVER)
                credentials = grpc.ssl_channel_credentials(
                    ca, issued.key.read_bytes(), issued.cert.read_bytes()
                )
            else:
                credentials = grpc.ssl_channel_credentials(ca)
        return cls(
            {peer.id: peer.listen for peer in peers}, metadata, credentials, int(first.max_model_mb * 2**20)
        )


@contextlib.contextmanager
def observe_consensus(
    config: ExperimentConfig, node_configs: list[Path], results: ResultsFolder, run_start: float
) -> Iterator[ConsensusObserver | None]:
    """The run's observer (None when `experiment.consensus_every` is 0 or the gossip is async:
    `ExperimentConfig.observes_consensus`), closed on the way out; after an error or Ctrl-C
    without waiting for fetches not started."""
    if not config.observes_consensus:
        yield None
        return
    observer = ConsensusObserver(config, ObserverAccess.of_nodes(node_configs), results, run_start)
    try:
        yield observer
    except BaseException:
        observer.close(cancel=True)
        raise
    observer.close()


@dataclass
class _Round:
    """The fetches of one round so far (changed through its methods only: `accounted` and
    `in_flight` are kept with the rest, so that a round's check costs no set over all peers)."""

    models: dict[int, list[np.ndarray]] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    moved_on: list[int] = field(default_factory=list)
    asked: set[int] = field(default_factory=set)  # the peers whose record of the round came
    accounted: set[int] = field(default_factory=set)  # read, not answering or moved on
    in_flight: set[int] = field(default_factory=set)  # asked and not accounted: a fetch under way

    def ask(self, node: int) -> None:
        """Peer `node`'s record of the round came (its fetch is under way unless it was read)."""
        self.asked.add(node)
        if node not in self.accounted:
            self.in_flight.add(node)

    def read(self, node: int, arrays: list[np.ndarray]) -> None:
        """Peer `node` served its model of the round."""
        self.models[node] = arrays
        self._account(node)

    def skip(self, node: int) -> None:
        """Peer `node` did not answer."""
        self.skipped.append(node)
        self._account(node)

    def move_on(self, node: int) -> None:
        """Peer `node` served a model of another round."""
        self.moved_on.append(node)
        self._account(node)

    def _account(self, node: int) -> None:
        self.accounted.add(node)
        self.in_flight.discard(node)


class ConsensusObserver:
    """Fetches the peers' models of every k-th round in the background; writes consensus.jsonl."""

    def __init__(
        self, config: ExperimentConfig, access: ObserverAccess, results: ResultsFolder, run_start: float
    ) -> None:
        self.every = config.experiment.consensus_every
        self.last = config.experiment.rounds
        self.timeout = min(config.experiment.round_timeout, FETCH_TIMEOUT_S)
        self.silent_after = config.experiment.round_timeout  # no record for that long: a peer stuck
        self.access = access
        self.run_start = run_start
        self.path = results.path / CONSENSUS
        self.warnings = results.warnings
        self._writer: LineWriter | None = None
        self._lock = threading.Lock()
        self._rounds: dict[int, _Round] = {}
        self._gone: set[int] = set()
        self._latest: dict[int, int] = {}  # the last round each peer recorded
        self._heard = dict.fromkeys(access.addresses, time.monotonic())  # when its last record came
        self._written: set[int] = set()
        self._specs: list[TensorSpec] | None = None
        # a peer not serving yet, or that crashed, is reconnected within a second of serving (again),
        # and a fetch waits for the connection (until its timeout) instead of failing at once
        options = CHANNEL_OPTIONS + QUICK_RECONNECT
        self._channels = open_channels(access.addresses, access.credentials, options)
        self._stubs = {node: gossip_pb2_grpc.GossipStub(c) for node, c in self._channels.items()}
        self._pool = futures.ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="consensus")

    def wanted(self, round_: int) -> bool:
        """Whether round `round_` is measured: every k-th round, and the last."""
        return self.every > 0 and (round_ % self.every == 0 or round_ == self.last)

    def saw(self, node: int, round_: int) -> None:
        """Peer `node` recorded `round_`: fetch its model now, in the background."""
        if node not in self._stubs:
            return
        with self._lock:
            self._latest[node] = max(self._latest.get(node, 0), round_)
            self._heard[node] = time.monotonic()
            if not self.wanted(round_) or round_ in self._written:  # written without it: too many pending
                self._write_complete()  # rounds it jumped over are complete without it
                if round_ == self.last:  # the peer waits for a read that will not come
                    self._pool.submit(self._release, node)
                return
            entry = self._rounds.setdefault(round_, _Round())
            entry.ask(node)
            if node in entry.models and round_ != self.last:  # the last is asked for: the peer waits
                return  # read already, by a fetch for an earlier round
        self._pool.submit(self._fetch_and_settle, node, round_)

    def gone(self, node: int) -> None:
        """Peer `node` exited: rounds still waiting for it are complete without it."""
        with self._lock:
            self._gone.add(node)
            self._write_complete()

    def close(self, cancel: bool = False) -> None:
        """Finish the fetches in flight (with `cancel`, drop those not started), write the rounds
        still open, drop the connections."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        with self._lock:
            for round_ in sorted(self._rounds):
                self._write(round_)
        close_channels(list(self._channels.values()))
        if self._writer is not None:
            self._writer.close()

    def _fetch_and_settle(self, node: int, round_: int) -> None:
        try:
            served, arrays = self._fetch(node, round_)
        except (grpc.RpcError, WireError, ValueError, TimeoutError) as err:
            detail = err.details() if isinstance(err, grpc.RpcError) else str(err)
            log.debug("consensus: node %d did not serve its model of round %d: %s", node, round_, detail)
            served, arrays = None, None
        with self._lock:
            entry = self._rounds.get(round_)
            later = served is not None and served != round_ and self.wanted(served)
            if later and served not in self._written:  # the model of a later measured round: keep it
                self._rounds.setdefault(served, _Round()).read(node, arrays)
            if entry is not None:  # else written without it (too many rounds pending)
                if arrays is None:
                    entry.skip(node)
                elif served != round_:
                    entry.move_on(node)
                else:
                    entry.read(node, arrays)
            self._write_complete()
        if round_ == self.last and served != round_:  # the peer waits for this read: let it go
            self._release(node)

    def _release(self, node: int) -> None:
        """Tell finished peer `node` that its last model will not be read (the read failed, or
        its round was written without it), so that it exits now rather than when its wait for
        the read ends (`client.gossip.peer.OBSERVER_WAIT_S`). Best effort: a peer that does not
        answer this either is one the launcher could not reach, and its wait stays bounded."""
        with self._lock:
            if node in self._gone:
                return
        metadata = (*self.access.metadata, (DONE_KEY, "1"))

        async def release() -> None:
            stream = self._stubs[node].GetModel(
                gossip_pb2.GetModelRequest(), timeout=self.timeout, metadata=metadata
            )
            async for _ in stream:  # nothing is served
                pass

        try:
            loop.call(release(), self.timeout + LOOP_SLACK_S)
        except (grpc.RpcError, TimeoutError) as err:
            detail = err.details() if isinstance(err, grpc.RpcError) else str(err)
            log.debug("consensus: node %d was not told its last model is not read: %s", node, detail)

    def _fetch(self, node: int, round_: int) -> tuple[int, list[np.ndarray]]:
        """The round and the tensors of `node`'s model of `round_` (its current model if it no
        longer holds that one), checked like any model from the network; TimeoutError past the
        fetch's timeout plus LOOP_SLACK_S. A fetch still queued when its peer's process exited
        fails at once (ValueError), as the call would, without waiting out its timeout: a backlog
        of those held the end of a run for minutes."""
        with self._lock:
            if node in self._gone:
                raise ValueError("its process exited")
        metadata = (*self.access.metadata, (ROUND_KEY, str(round_)))

        async def fetch() -> ModelMessage:
            stream = self._stubs[node].GetModel(
                gossip_pb2.GetModelRequest(), timeout=self.timeout, metadata=metadata, wait_for_ready=True
            )
            assembler = None
            async for chunk in stream:
                assembler = assembler or self._assembler(node, chunk)
                assembler.add(chunk)
            if assembler is None:
                raise ValueError("no model served")
            return assembler.finish()

        message = loop.call(fetch(), self.timeout + LOOP_SLACK_S)
        return message.round, message.arrays

    def _assembler(self, node: int, first: gossip_pb2.ModelChunk) -> ModelAssembler:
        """The checks of `node`'s model whose first chunk is `first` (the first model's header sets
        the specs every later one must match)."""
        with self._lock:
            if self._specs is None:
                self._specs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in first.header.tensors]
            specs = self._specs
        return ModelAssembler(specs, senders=[node], rounds=(0, self.last), max_bytes=self.access.max_bytes)

    def _write_complete(self) -> None:
        """Write every round all peers are accounted for (read, not answering, moved on, gone, or
        past it without recording it), and the oldest beyond the pending limit while they wait
        for no fetch, only for silent peers (lock held)."""
        for round_ in sorted(self._rounds):
            entry = self._rounds[round_]
            if not entry.in_flight and all(self._passed(n, round_, entry) for n in self._stubs):
                self._write(round_)
        while len(self._rounds) > MAX_PENDING_ROUNDS and self._stuck(self._rounds[min(self._rounds)]):
            self._write(min(self._rounds))

    def _passed(self, node: int, round_: int, entry: _Round) -> bool:
        """Whether peer `node` is accounted for in `round_` (no fetch of it under way: lock held):
        read, not answering, moved on, gone (a peer exits once its last model is read, maybe
        before that fetch's answer is counted), or past the round without recording it."""
        return node in entry.accounted or node in self._gone or self._latest.get(node, 0) >= round_

    def _stuck(self, entry: _Round) -> bool:
        """Whether a round waits for no fetch, only for the records of peers silent for
        `silent_after` (lock held)."""
        if entry.in_flight:
            return False  # its fetches are under way
        silent_since = time.monotonic() - self.silent_after
        waited = (n for n in self._stubs if n not in entry.accounted and n not in self._gone)
        return all(self._heard[n] < silent_since for n in waited)

    def _write(self, round_: int) -> None:
        from fedgossip.strategies.diagnostics import consensus_distance

        entry = self._rounds.pop(round_)
        self._written.add(round_)
        models = [entry.models[node] for node in sorted(entry.models)]
        distance = consensus_distance(models) if len(models) >= 2 else None
        line = {
            "round": round_,
            "time_s": round(time.time() - self.run_start, 4),
            "consensus_distance": metric(distance),
            "consensus_models": len(models),
            "nodes_skipped": sorted(entry.skipped),
            "nodes_moved_on": sorted(entry.moved_on),
            "nodes_missing": sorted(set(self._stubs) - entry.accounted),
        }
        try:
            if self._writer is None:
                self._writer = LineWriter(self.path, sync=True)
            self._writer.write(line)
        except OSError as err:
            self.warnings.append(f"could not write {self.path}: {err.strerror or err}")
