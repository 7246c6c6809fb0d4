"""One gossip peer: a gRPC server, senders to its neighbours, and a learner for one data partition.

Synchronous rounds: train, push the model to every neighbour, wait (up to the round timeout) for
the neighbours' models of this round, merge them in sender order with the configured strategy,
evaluate, emit a metrics record. A neighbour that missed a round is not waited for again until it
is heard from again in step (a model one round late counts: it stands in for this round's), so a
dead or frozen peer costs its neighbours one timeout, not one per round. With
`gossip.schedule = "async"` the same peer runs `fedgossip.client.gossip.async_schedule` instead: no barrier,
each peer at its own pace (the helpers `_start`, `_checked`, `_train`, `_push`, `_merge`,
`_record` and `_finish` serve both schedules).

The strategy's round plan (`fedgossip.client.gossip.rounds`) may stream the data, push the model to some
neighbours only (the others get a notice that none comes, so they do not wait for it: fair
gossip) and add fields to the record.

Nothing from the network or from training crashes a peer: a merge or a training step that yields
non-finite values is discarded (the node keeps its previous model) and recorded; only repeated
divergence of its own training stops a peer ("diverged at round r"). A peer that fell
`gossip.catch_up_rounds` behind its neighbours fetches a neighbour's model (GetModel), adopts its
round, and goes on from there.

Each record carries the `layer_variance` of the model kept. Under a launcher that measures the
consensus distance (`experiment.consensus_every`), the peer also serves its previous model and,
after its last round, waits (up to OBSERVER_WAIT_S) until the observer has read its last model.

Run one by hand with `fedgossip peer NODE.toml`, or `python -m fedgossip.client.gossip.peer NODE.toml`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import Collection
from concurrent import futures
from typing import Any, TextIO

import grpc
import numpy as np

from fedgossip.base.seeding import stream
from fedgossip.base.signals import Shutdown
from fedgossip.client.gossip.async_inbox import AsyncInbox
from fedgossip.client.gossip.async_schedule import AsyncLoop
from fedgossip.client.gossip.inbox import Inbox
from fedgossip.client.gossip.rounds import round_plan
from fedgossip.client.gossip.transport import eventloop as loop
from fedgossip.client.gossip.transport.grpc_server import LoopServer
from fedgossip.client.gossip.transport.network import FaultySender, Link
from fedgossip.client.gossip.transport.security import (
    call_metadata,
    channel_credentials,
    check_plaintext,
    read_link_keys,
    read_token,
    server_credentials,
)
from fedgossip.client.gossip.transport.sender import NeighbourSender, close_channels, open_channels
from fedgossip.client.gossip.transport.service import Authenticator, GossipService
from fedgossip.client.gossip.transport.wire import (
    CHANNEL_OPTIONS,
    ModelAssembler,
    ModelMessage,
    WireError,
    encode,
)
from fedgossip.config import ExperimentConfig, load_config
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
from fedgossip.scenario.attacks import model_attacker, poisoner, record_fields
from fedgossip.scenario.resample import epoch_of, k_out_graph
from fedgossip.scenario.roles import CrashClock, Events, roles
from fedgossip.schema.events import Emit, record_event
from fedgossip.schema.lines import LineWriter
from fedgossip.schema.records import record
from fedgossip.schema.tensors import is_finite, specs_of
from fedgossip.strategies.diagnostics import layer_variance
from fedgossip.tasks import build_learner

log = logging.getLogger("fedgossip.peer")

DELIVERY_GRACE_S = 2.0  # how long a round waits for its model to reach the neighbours in step
MAX_WAIT_TIMEOUTS = 3  # a round waits at most this many round timeouts for live neighbours
OBSERVER_WAIT_S = 5.0  # how long a finished peer keeps serving for the observer to read its last model
LOOP_SLACK_S = 5.0  # beyond a call's gRPC timeout, how long the round loop waits for the event loop
HEALTH_POLL_S = 0.2  # how often a crashed peer asks whether its neighbours went far enough
# with churn, a neighbour that crashed comes back within a second, not after gRPC's growing backoff
QUICK_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]


class Diverged(Exception):
    """The node's own training kept producing NaN or Inf."""


class GossipPeer:
    """A peer built from a node config (an experiment config with a [peer] section)."""

    def __init__(self, config: ExperimentConfig) -> None:
        if config.peer is None:
            raise ValueError("a peer needs a [peer] section (id, listen, neighbours)")
        self.config = config
        self.peer = config.peer
        self.gossip = config.gossip
        self.started = time.time()
        self.run_start = config.peer.run_start or self.started
        check_plaintext(self.peer)
        token, links = read_token(self.peer), read_link_keys(self.peer)
        auth = Authenticator(token, links, certificates=bool(self.peer.client_ca_file))
        # the launcher's observer reads the last model (consensus distance) before the peer exits
        self.observed = bool(links and links.observer and config.observes_consensus)
        if not auth.identifies:
            log.warning(
                "callers are not identified (no peer.link_keys_file, no mutual TLS): "
                "any caller may push as any neighbour"
            )
        self.scenario = config.scenario
        seed, count = config.experiment.seed, config.nodes.count
        self.roles = roles(self.scenario, self.peer.id, count, seed)
        self.events = Events(self.peer.id, self.run_start)
        poison = poisoner(self.roles.attack, self.scenario)
        self.learner = build_learner(config.task, self.peer.id, count, seed, poison=poison)
        self.initial = self.learner.get_weights()
        rng = stream(seed, "attack", self.peer.id)
        self.attack = model_attacker(self.roles.attack, self.scenario, self.initial, rng)
        self.crashes = CrashClock(self.scenario, self.roles, self.peer.id, seed)
        self.rejoined: dict[str, Any] = {}  # rounds_missed and rejoin_s, for the next record
        self._epoch: tuple[int, set[int]] | None = None  # the resampling epoch and its neighbours
        self.names = list(self.learner.names)
        self.specs = specs_of(self.names, self.learner.get_weights())
        self.shared = [i for i, name in enumerate(self.names) if name not in self.learner.local_names]
        self.neighbours = {int(k): v for k, v in (self.peer.neighbours or {}).items()}
        self.inbox = AsyncInbox() if self.gossip.schedule == "async" else Inbox()
        self.plan = round_plan(config, self.peer.id, list(self.neighbours))
        self.max_bytes = int(self.peer.max_model_mb * 2**20)
        self.service = GossipService(
            self.peer.id,
            self.specs,
            self.inbox,
            neighbours=list(self.neighbours),
            rounds=config.experiment.rounds,
            max_bytes=self.max_bytes,
            auth=auth,
            max_pushes=self.gossip.max_pushes or 2 * len(self.neighbours) + 4,
            idle_timeout=self.gossip.idle_timeout,
            max_norm_ratio=self.gossip.max_norm_ratio,
        )
        self.service.keep_previous = self.observed  # the observer may read a round late
        self.server = self._serve(self.peer.listen)
        self.port = self.server.port
        credentials = channel_credentials(self.peer)
        options = CHANNEL_OPTIONS + (QUICK_RECONNECT if self.scenario.churn else [])
        self.channels = open_channels(self.neighbours, credentials, options)
        self.stubs = {node: gossip_pb2_grpc.GossipStub(c) for node, c in self.channels.items()}
        self.metadata = {node: call_metadata(token, links, node) for node in self.neighbours}
        self.senders = {node: self._sender(node, stub) for node, stub in self.stubs.items()}

    def _serve(self, listen: str, *, exclusive: bool = True) -> LoopServer:
        """Start the gRPC server on `listen` (`exclusive`: see LoopServer)."""
        credentials = server_credentials(self.peer)
        return LoopServer(self.service, listen, credentials, CHANNEL_OPTIONS, exclusive=exclusive)

    def _sender(self, node: int, stub: gossip_pb2_grpc.GossipStub) -> NeighbourSender:
        """The push queue to `node`: through the scenario's network faults, if any."""
        if not self.scenario.network_faults:
            return NeighbourSender(node, stub, self.metadata[node], self._on_reply)
        config = self.config
        link = Link(self.scenario, self.peer.id, node, config.nodes.count, config.experiment.seed)
        return FaultySender(node, stub, self.metadata[node], self._on_reply, link, self.events)

    def run(self, emit: Emit) -> None:
        """Run every round (or, with gossip.schedule "async", every local unit: `AsyncLoop`),
        calling `emit` with each metrics record; Diverged if training keeps failing."""
        if self.gossip.schedule == "async":
            AsyncLoop(self).run(emit)
            return
        rounds = self.config.experiment.rounds
        current = self._start(emit)
        round_, divergences = 1, 0
        while round_ <= rounds:
            if self.crashes.crashes(round_):
                current = self._crash(round_, emit)
                round_ = self.service.completed + 1
                continue
            caught_up = self._catch_up(round_)
            if caught_up is not None:
                current = caught_up.arrays
                emit(self._caught_up_record(caught_up, round_))
                round_ = caught_up.round + 1  # their models of it that came before are held
                continue
            self.service.state = "training"
            self.learner = self.plan.learner(round_, self.learner)
            own, train_loss, divergences = self._checked(round_, current, self._train(), divergences)
            timeout = self.config.experiment.round_timeout
            deadline = time.monotonic() + timeout
            self.service.state = "waiting"
            linked = self._linked(round_)
            expected = linked - self.inbox.silent()  # neighbours whose Health did not answer
            pending = self._push(round_, own, linked, expected, deadline, self.plan.recipients(round_))
            missing, silent = self._wait_for(round_, expected, deadline)
            noticed = self.inbox.notices(round_)  # they send no model this round, yet are in step
            messages = self.inbox.close(round_)
            heard = [m.sender for m in messages]
            # the first round waits for connections being set up; the last must reach everyone
            edge = round_ in (1, rounds)
            until = deadline if edge else time.monotonic() + min(DELIVERY_GRACE_S, timeout / 4)
            in_step = {m.sender for m in messages if m.round == round_} | noticed
            sent = self._delivered(pending, in_step, until)
            if missing:
                log.warning(
                    "round %d: no model from %s (not answering: %s)", round_, sorted(missing), sorted(silent)
                )
            self.inbox.mark_silent(silent - set(heard) - noticed)
            current, test_loss, test_accuracy, discarded = self._merge(round_, current, own, messages)
            emit(
                self._record(
                    round_,
                    current,
                    messages,
                    train_loss=train_loss,
                    test_loss=test_loss,
                    test_accuracy=test_accuracy,
                    bytes_sent=sent,
                    discarded=discarded,
                    **self.plan.fields(round_),
                )
            )
            self._emit_events(emit)
            round_ += 1
        self._finish(emit)

    def _start(self, emit: Emit) -> list[np.ndarray]:
        """Serve the initial model, say "ready" and announce the node's roles; the initial model."""
        current = self.learner.get_weights()
        self.service.publish(current, self.learner.num_examples, 0)
        emit(
            {
                "type": "ready",
                "node": self.peer.id,
                "port": self.port,
                "setup_s": round(time.time() - self.started, 3),  # learner + server, after imports
            }
        )
        self._announce_roles()
        return current

    def _checked(
        self, round_: int, current: list[np.ndarray], train_loss: float, divergences: int
    ) -> tuple[list[np.ndarray], float | None, int]:
        """The trained model, its loss and the count of non-finite trainings in a row; a training
        that gave NaN or Inf is undone (the model trained from, `current`, and no loss), and
        Diverged raised once gossip.divergence_limit of them came in a row."""
        own = self.learner.get_weights()
        if math.isfinite(train_loss) and all(map(is_finite, own)):
            return own, train_loss, 0
        divergences += 1
        log.warning("round %d: training gave NaN or Inf; keeping the previous model", round_)
        if divergences >= self.gossip.divergence_limit:
            raise Diverged(
                f"diverged at round {round_}: training gave NaN or Inf in {divergences} rounds "
                "in a row (is task.learning_rate too high?)"
            )
        self.learner.set_weights(current)
        return current, None, divergences

    def _record(
        self,
        round_: int,
        current: list[np.ndarray],
        messages: list[ModelMessage],
        *,
        discarded: str | None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Publish the model kept after round `round_`'s merge of `messages` (`current`) and return
        the round's record event (the attacker remembers the model, for a stale attack)."""
        self.service.publish(current, self.learner.num_examples, round_)
        if self.attack is not None:
            self.attack.remember(current)
        return record_event(
            record(
                self.peer.id,
                round_,
                self.run_start,
                num_examples=self.learner.num_examples,
                bytes_received=sum(m.nbytes for m in messages),
                neighbours_heard=[m.sender for m in messages],
                merged=0 if discarded else len(messages),
                refused=self.inbox.take_refused(),
                discarded=discarded,
                **fields,
                layer_variance=layer_variance(self.names, current),
                **self._scenario_fields(round_),
            )
        )

    def _finish(self, emit: Emit) -> None:
        """After the last round: the last events, state "done", and (observed) the observer's read."""
        self._emit_events(emit)
        self.service.state = "done"
        if self.observed:
            self.service.observed.wait(OBSERVER_WAIT_S)

    def _wait_for(self, round_: int, neighbours: set[int], deadline: float) -> tuple[set[int], set[int]]:
        """Wait for the neighbours' models of `round_` until `deadline`; then ask the missing ones
        (Health) and wait longer, up to MAX_WAIT_TIMEOUTS round timeouts in all, for those that
        answer that they are working on this round or the one before (a model one round late
        stands in): a neighbour held up by its own neighbour is waited for, one that does not
        answer (frozen, dead), is further behind or already ahead (its model was refused) is not.
        So a stalled peer delays the others in one wave, not round after round.

        Returns the neighbours still missing, and those of them that did not answer.
        """
        timeout = self.config.experiment.round_timeout
        limit = deadline + (MAX_WAIT_TIMEOUTS - 1) * timeout
        missing = self.inbox.wait(round_, neighbours, deadline)
        silent: set[int] = set()
        while missing and time.monotonic() < limit:
            rounds = self._health(missing, min(1.0, timeout / 4))
            silent |= missing - rounds.keys()
            busy = {node for node, done in rounds.items() if round_ - 2 <= done < round_}
            if not busy:
                break
            missing = self.inbox.wait(round_, busy, min(limit, time.monotonic() + timeout)) | (missing - busy)
        return missing, silent & missing

    def _health(self, nodes: set[int], timeout: float) -> dict[int, int]:
        """The rounds completed by those of `nodes` whose Health answers within `timeout`."""

        async def ask() -> dict[int, int]:
            calls = {n: self.stubs[n].Health(gossip_pb2.HealthRequest(), timeout=timeout) for n in nodes}
            replies = await asyncio.gather(*calls.values(), return_exceptions=True)
            answered = zip(calls, replies, strict=True)
            return {n: r.round for n, r in answered if not isinstance(r, BaseException)}

        try:
            return loop.call(ask(), timeout + LOOP_SLACK_S)
        except TimeoutError:
            return {}

    def _merge(
        self, round_: int, start: list[np.ndarray], own: list[np.ndarray], messages: list[ModelMessage]
    ) -> tuple[list[np.ndarray], float, float, str | None]:
        """Merge (the plan's, from the model trained from, `start`) and evaluate; a merge that
        fails or yields non-finite values or loss is discarded.

        Returns the model kept, its test loss and accuracy, and why a merge was discarded (or None).
        """
        merged = own
        # the rule's result is validated (count, shapes, finiteness); a failure is logged
        outcome = self.plan.merge(round_, start, own, self.learner.num_examples, messages, self.shared)
        discarded = "merge failed" if outcome.error else None
        if outcome.model is not None and discarded is None:  # local tensors keep the node's own values
            merged = list(own)
            for i, array in zip(self.shared, outcome.model, strict=True):
                merged[i] = array
        self.learner.set_weights(merged)
        test_loss, test_accuracy = self.learner.evaluate()
        if merged is not own and not math.isfinite(test_loss):
            log.warning("round %d: the merged model's test loss is not finite; keeping the own model", round_)
            merged, discarded = own, "merged loss not finite"
            self.learner.set_weights(own)
            test_loss, test_accuracy = self.learner.evaluate()
        return merged, test_loss, test_accuracy, discarded

    def _catch_up(self, round_: int, margin: int | None = None) -> ModelMessage | None:
        """If neighbours are `margin` (default: catch_up_rounds) rounds ahead, fetch and adopt the
        furthest one's model (not older than round `round_`, or `round_ + margin` for a negative
        margin: a peer that rejoins takes any neighbour's model not behind its own)."""
        margin = self.gossip.catch_up_rounds if margin is None else margin
        progress = self.inbox.progress()
        ahead = [n for n in self.stubs if progress.get(n, 0) >= round_ + margin]
        for node in sorted(ahead, key=lambda n: -progress[n]):
            try:
                message = self._fetch(node)
            except (grpc.RpcError, WireError, TimeoutError) as err:
                log.warning("catch-up from node %d failed: %s", node, err)
                continue
            if message.round >= round_ + min(margin, 0):
                self.learner.set_weights(message.arrays)
                self.inbox.skip_to(message.round + 1)
                self.service.publish(message.arrays, self.learner.num_examples, message.round)
                log.info("round %d: caught up with node %d at round %d", round_, node, message.round)
                return message
        return None

    def _fetch(self, node: int) -> ModelMessage:
        """A neighbour's current model (GetModel), checked like any push."""
        assembler = ModelAssembler(
            self.specs, senders=[node], rounds=(0, self.config.experiment.rounds), max_bytes=self.max_bytes
        )
        timeout = self.config.experiment.round_timeout

        async def fetch() -> ModelMessage:
            stream = self.stubs[node].GetModel(
                gossip_pb2.GetModelRequest(), timeout=timeout, metadata=self.metadata[node]
            )
            async for chunk in stream:
                assembler.add(chunk)
            return assembler.finish()

        return loop.call(fetch(), timeout + LOOP_SLACK_S)

    def _caught_up_record(self, message: ModelMessage, behind: int, **extra: Any) -> dict[str, Any]:
        """The record of a jump: the adopted model's round, evaluated, with where it came from."""
        test_loss, test_accuracy = self.learner.evaluate()
        return record_event(
            record(
                self.peer.id,
                message.round,
                self.run_start,
                train_loss=None,
                test_loss=test_loss,
                test_accuracy=test_accuracy,
                num_examples=self.learner.num_examples,
                bytes_sent=0,
                bytes_received=message.nbytes,
                neighbours_heard=[],
                merged=0,
                refused=0,
                discarded=None,
                caught_up_from=message.sender,
                jumped_from=behind,
                layer_variance=layer_variance(self.names, message.arrays),
                **extra,
            )
        )

    def _train(self, unit: str = "epoch") -> float:
        """Train one round (`unit` "epoch": one train() call; "step": one minibatch, async gossip);
        a straggler then waits until it took `slowdown` times as long."""
        started = time.monotonic()
        loss = self.learner.train_step() if unit == "step" else self.learner.train()
        if self.roles.slowdown > 1:
            time.sleep((self.roles.slowdown - 1) * (time.monotonic() - started))
        return loss

    def _announce_roles(self) -> None:
        """The scenario events of the start: the node's attack, its slowdown."""
        if self.roles.attack is not None:
            self.events.add("attack", 0, attack=self.roles.attack)
        if self.roles.slowdown > 1:
            self.events.add("straggler", 0, slowdown=self.roles.slowdown)

    def _crash(self, round_: int, emit: Emit) -> list[np.ndarray]:
        """Crash at the start of `round_`: stop serving and forget the model while the neighbours
        go scenario.down_rounds rounds on, then serve again on the same port and rejoin by
        adopting the model of the furthest neighbour not behind it (GetModel). Returns the model
        it goes on with; the neighbours that do not answer are not waited for (`mark_silent`),
        the others are (their models of the round it lands in, pushed while it was coming back,
        are held), so it does not run on alone."""
        self.events.add("crash", round_, down_rounds=self.scenario.down_rounds)
        self._emit_events(emit)
        self.service.state = "crashed"
        self.server.stop(grace=0.0)
        self.learner.set_weights(self.initial)
        self._stay_down(round_ - 1 + self.scenario.down_rounds)
        back = time.monotonic()
        self.service.publish(self.initial, self.learner.num_examples, round_ - 1)
        # its own port again, whose old socket the stopped server may not have closed yet
        self.server = self._serve(f"{self.peer.listen.rpartition(':')[0]}:{self.port}", exclusive=False)
        answered = self._health(set(self.stubs), self.config.experiment.round_timeout / 4)
        for node, done in answered.items():
            self.inbox.note(node, done, refused=False)
        caught_up = self._catch_up(round_, margin=-1)
        current = self.initial if caught_up is None else caught_up.arrays
        resume = self.service.completed + 1
        rejoined = {"rounds_missed": resume - round_, "rejoin_s": round(time.monotonic() - back, 4)}
        self.events.add(
            "rejoin", resume, from_node=None if caught_up is None else caught_up.sender, **rejoined
        )
        if caught_up is not None and caught_up.round >= round_:  # the record of the jump says it
            emit(self._caught_up_record(caught_up, round_, **rejoined))
        else:  # in step with its neighbours: the next record says it
            self.rejoined = rejoined
        self.inbox.mark_silent(set(self.stubs) - answered.keys())
        self._emit_events(emit)
        return current

    def _stay_down(self, until: int) -> None:
        """Wait (asking the neighbours' Health) until one of them completed round `until`, or
        MAX_WAIT_TIMEOUTS round timeouts per round to wait have passed (neighbours gone)."""
        timeout = self.config.experiment.round_timeout
        limit = time.monotonic() + MAX_WAIT_TIMEOUTS * timeout * self.scenario.down_rounds
        while time.monotonic() < limit:
            if max(self._health(set(self.stubs), min(1.0, timeout / 4)).values(), default=0) >= until:
                return
            time.sleep(HEALTH_POLL_S)

    def _scenario_fields(self, round_: int) -> dict[str, Any]:
        """The scenario's fields of this round's record (none without a scenario)."""
        fields: dict[str, Any] = {}
        if self.roles.attack is not None:
            fields["attack"] = self.roles.attack
        fields.update(record_fields(self.scenario, self.learner))
        if self.scenario.network_faults:
            fields.update(self.events.take_counts(round_))
        fields.update(self.rejoined)
        self.rejoined = {}
        return fields

    def _emit_events(self, emit: Emit) -> None:
        for event in self.events.take():
            emit(event)

    def _on_reply(self, node: int, reply: gossip_pb2.PushReply) -> None:
        """A neighbour's reply says which round it is in (how far behind it this peer may be)."""
        self.inbox.note(node, reply.round or None, refused=False)

    def _linked(self, round_: int) -> set[int]:
        """The neighbours of `round_`: the static ones, or (scenario.resample_every) the epoch's
        random k-out draw, announced as a "topology" event when an epoch starts."""
        every = self.scenario.resample_every
        if not every:
            return set(self.neighbours)
        epoch = epoch_of(round_, every)
        if self._epoch is None or self._epoch[0] != epoch:
            config = self.config
            graph = k_out_graph(
                config.nodes.count, self.scenario.resample_degree, config.experiment.seed, epoch
            )
            self._epoch = (epoch, graph[self.peer.id])
            self.events.add("topology", round_, neighbours=sorted(self._epoch[1]))
        return set(self._epoch[1])

    def _push(
        self,
        round_: int,
        arrays: list,
        linked: set[int],
        alive: set[int],
        deadline: float,
        recipients: set[int],
    ) -> dict[int, futures.Future]:
        """Queue this round's model for the `recipients` among the neighbours linked this round,
        a notice that none comes for the other linked ones; return the sends (and notices, 0
        bytes) by node.

        Neighbours in `alive` are waited for (`wait_for_ready`) until the deadline, so a peer that
        starts late still gets round 1; the others get one fail-fast attempt.
        """
        if self.attack is not None:
            arrays = self.attack.forge(arrays)
        chunks = encode(self.peer.id, round_, self.learner.num_examples, self.names, arrays)
        notice = gossip_pb2.WithholdNotice(sender=self.peer.id, round=round_)
        return {
            node: sender.send(chunks, deadline, wait=node in alive)
            if node in recipients
            else sender.withhold(notice, deadline, wait=node in alive)
            for node, sender in self.senders.items()
            if node in linked
        }

    @staticmethod
    def _delivered(pending: dict[int, futures.Future], heard: Collection[int], until: float) -> int:
        """Bytes of this round's model delivered to the neighbours heard from in time this round
        (their model or their notice that none comes; a notice of ours counts 0 bytes).

        Those neighbours are in step and accept at once, so the wait is short; it is bounded by
        `until` (a monotonic time): a neighbour that froze right after its push holds nobody. In
        the first round (connections still being set up) and the last (the final model must reach
        them before the peer exits) `until` is the deadline. Sends to other neighbours are not waited for.
        """
        sends = [pending[node] for node in heard if node in pending]
        done, _ = futures.wait(sends, timeout=max(0.0, until - time.monotonic()))
        return sum(f.result() for f in done)

    def close(self) -> None:
        """Stop serving and drop the neighbour connections (cancelling sends still in flight)."""
        for sender in self.senders.values():
            sender.close()
        close_channels(list(self.channels.values()))
        self.server.stop(grace=1.0)


def configure_logging(who: str = "node") -> None:
    """Log to stderr (the process's log file), each line naming `who` (a logging format field)."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {who}: %(message)s",
    )


def run_to_end(peer: GossipPeer, emit: Emit) -> int:
    """Run all of `peer`'s rounds; 0 when done, 1 (an error event emitted) when it diverged.
    A KeyboardInterrupt (the process's shutdown) goes through."""
    try:
        peer.run(emit)
    except Diverged as err:
        log.error("%s", err)
        emit({"type": "error", "node": peer.peer.id, "error": str(err)})
        return 1
    return 0


def run_peer(config_path: str, overrides: list[str] | None = None, metrics: TextIO | None = None) -> int:
    """Entry point of a peer process: load the node config, run all rounds, return an exit status."""
    configure_logging()
    emit = LineWriter(metrics or sys.stdout)
    try:
        peer = GossipPeer(load_config(config_path, overrides or []))
    except ValueError as err:
        log.error("%s", err)
        emit({"type": "error", "error": str(err)})
        return 2
    shutdown = Shutdown().install()  # SIGTERM/SIGINT end the peer like Ctrl-C, once; later ones ignored
    try:
        code = run_to_end(peer, emit)
    except KeyboardInterrupt:
        return shutdown.exit_code
    finally:
        shutdown.begin()
        peer.close()
    if code == 0:
        emit({"type": "done", "node": peer.peer.id})
    return code


if __name__ == "__main__":
    sys.exit(run_peer(sys.argv[1], sys.argv[2:]))
