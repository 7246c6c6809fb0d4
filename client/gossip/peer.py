"""One gossip peer: a gRPC server, senders to its neighbours, and a learner for one data partition.

`GossipPeer` builds the node from its config and holds its state; its parts, one job each, are:
its transport (`transports`: a gRPC server, links and Health/GetModel calls; the virtual-time
engine swaps in an in-process one), the schedule that drives the rounds
(`sync_schedule.SyncRounds`; with `gossip.schedule = "async"` `async_schedule.AsyncLoop`;
"ticks": `ticks.TickLoop`), the own model's training and merge (`own_model`), the connections
and pushes to the neighbours (`links`), the wait for them and catch-up (`neighbours`), a
scheduled crash and rejoin (`crash`), the resampled topology (`resampling`), and the records and
scenario events (`round_record`). The strategy's round plan
(`fedgossip.client.gossip.rounds`) may stream the data, push the model to some neighbours only and
add fields to the record.

Nothing from the network or from training crashes a peer: a merge or a training step that yields
non-finite values is discarded (the node keeps its previous model) and recorded; only repeated
divergence of its own training stops a peer ("diverged at round r"). A model that arrives is
checked once, where it enters (`transport.wire`, `transport.service`); the parts trust it.

Under a launcher that measures the consensus distance (`experiment.consensus_every`), the peer
also keeps the models of measured rounds until the observer has read them and, after its last
round, waits (up to OBSERVER_WAIT_S) until the observer has read its last model or said it will
not (its read failed).

Run one by hand with `fedgossip peer NODE.toml`, or `python -m fedgossip.client.gossip.peer NODE.toml`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import numpy as np

from fedgossip.base.seeding import stream
from fedgossip.base.signals import Shutdown
from fedgossip.client.gossip.async_inbox import AsyncInbox
from fedgossip.client.gossip.async_schedule import AsyncLoop
from fedgossip.client.gossip.compression import PushCompression
from fedgossip.client.gossip.crash import Crash
from fedgossip.client.gossip.inbox import Inbox
from fedgossip.client.gossip.own_model import Diverged, OwnModel
from fedgossip.client.gossip.private_sharing import PrivateLinks, SharedModelNoise
from fedgossip.client.gossip.resampling import LinkedNeighbours
from fedgossip.client.gossip.round_record import RoundRecords
from fedgossip.client.gossip.rounds import round_plan
from fedgossip.client.gossip.sync_schedule import SyncRounds
from fedgossip.client.gossip.tick_inbox import TickInbox
from fedgossip.client.gossip.ticks import TickLoop
from fedgossip.client.gossip.transport.identity import LinkKeys
from fedgossip.client.gossip.transport.security import (
    check_plaintext,
    read_link_keys,
    read_token,
)
from fedgossip.client.gossip.transport.service import Authenticator, GossipService
from fedgossip.client.gossip.transports import GrpcTransport, Transport
from fedgossip.config import ExperimentConfig, load_config
from fedgossip.scenario.attacks import model_attacker, poisoner
from fedgossip.scenario.churn import churn_plan
from fedgossip.scenario.roles import CrashClock, Events, roles
from fedgossip.schema.codecs import codec
from fedgossip.schema.events import Emit
from fedgossip.schema.lines import LineWriter
from fedgossip.schema.tensors import specs_of
from fedgossip.tasks import build_learner

log = logging.getLogger("fedgossip.peer")

# gossip.schedule -> the peer's inbox and its schedule
INBOXES: dict[str, type[Inbox | AsyncInbox | TickInbox]] = {
    "sync": Inbox,
    "async": AsyncInbox,
    "ticks": TickInbox,
}
SCHEDULES: dict[str, type[SyncRounds | AsyncLoop | TickLoop]] = {
    "sync": SyncRounds,
    "async": AsyncLoop,
    "ticks": TickLoop,
}

# how long a finished peer keeps serving for the observer to read its last model: a launcher short
# of CPU reads the records late (28 s after the peers' last round, quickstart at load 30); an
# observer whose read fails says so at once (`service.DONE_KEY`), so the bound is for a lost observer
OBSERVER_WAIT_S = 60.0


class GossipPeer:
    """A peer built from a node config (an experiment config with a [peer] section): its learner,
    server, links and parts, which its schedule drives (`run`)."""

    def __init__(self, config: ExperimentConfig, transport: Transport | None = None) -> None:
        if config.peer is None:
            raise ValueError("a peer needs a [peer] section (id, listen, neighbours)")
        self.config = config
        self.peer = config.peer
        self.node = config.peer.id
        self.gossip = config.gossip
        self.started = time.time()
        self.run_start = config.peer.run_start or self.started
        check_plaintext(self.peer)
        token, keys = read_token(self.peer), read_link_keys(self.peer)
        auth = self._authenticator(token, keys)
        # the launcher's observer reads the last model (consensus distance) before the peer exits
        self.observed = bool(keys and keys.observer and config.observes_consensus)
        self.scenario = config.scenario
        seed, count = config.experiment.seed, config.nodes.count
        self.roles = roles(self.scenario, self.node, count, seed)
        self.events = Events(self.node, self.run_start)
        poison = poisoner(self.roles.attack, self.scenario)
        dp_sgd = config.privacy.dp_sgd(config.experiment.rounds)
        self.learner = build_learner(config.task, self.node, count, seed, poison=poison, dp_sgd=dp_sgd)
        self.initial = self.learner.get_weights()
        rng = stream(seed, "attack", self.node)
        self.attack = model_attacker(self.roles.attack, self.scenario, self.initial, rng)
        self.names = list(self.learner.names)
        self.specs = specs_of(self.names, self.initial)
        self.shared = [i for i, name in enumerate(self.names) if name not in self.learner.local_names]
        self.neighbours = {int(k): v for k, v in (self.peer.neighbours or {}).items()}
        self.inbox = INBOXES[self.gossip.schedule]()
        self.plan = round_plan(config, self.node, list(self.neighbours))
        self.max_bytes = int(self.peer.max_model_mb * 2**20)
        pushes = codec(self.gossip.codec, self.gossip.codec_ratio)
        self.compression = PushCompression(pushes, self.specs, self.gossip.codec_gamma)
        self.service = self._service(auth)
        self.transport = GrpcTransport() if transport is None else transport
        self.server = self.transport.serve(self, self.peer.listen)
        self.port = self.server.port
        self.links = self.transport.links(self, token, keys)
        self.sharing = None  # privacy.mechanism "dp-share": the noise on what the peer pushes
        if config.privacy.mechanism == "dp-share":
            self.sharing = SharedModelNoise(config.privacy, self.initial, stream(seed, "dp-share", self.node))
            self.links = PrivateLinks(self.links, self.sharing)
        self.model = OwnModel(self)
        self.records = RoundRecords(self)
        self.watch = self.transport.watch(self)
        clock = CrashClock(self.scenario, self.roles, self.node, seed)
        self.crash = Crash(self, clock, churn_plan(config))
        self.linked = LinkedNeighbours(config, self.node, set(self.neighbours), self.events)

    def _authenticator(self, token: str | None, keys: LinkKeys | None) -> Authenticator:
        """How callers prove who they are (the token, link `keys`, client certificates); a
        warning when they are not identified."""
        auth = Authenticator(token, keys, certificates=bool(self.peer.client_ca_file))
        if not auth.identifies:
            log.warning(
                "callers are not identified (no peer.link_keys_file, no mutual TLS): "
                "any caller may push as any neighbour"
            )
        return auth

    def _service(self, auth: Authenticator) -> GossipService:
        """The gRPC service: it checks every push (`auth`, the model's specs and size, its round
        window, the norm bound) before the model reaches the inbox."""
        service = GossipService(
            self.node,
            self.specs,
            self.inbox,
            neighbours=list(self.neighbours),
            rounds=self.config.experiment.rounds,
            max_bytes=self.max_bytes,
            auth=auth,
            max_pushes=self.gossip.max_pushes or 2 * len(self.neighbours) + 4,
            idle_timeout=self.gossip.idle_timeout,
            max_norm_ratio=self.gossip.max_norm_ratio,
            compression=self.compression,
        )
        if self.observed:  # the observer may read a round late
            service.retain_for_observer(self.config.experiment.consensus_every)
        return service

    def serve_again(self) -> None:
        """Serve again after a crash, on its own port, whose old socket the stopped server may not
        have closed yet."""
        address = f"{self.peer.listen.rpartition(':')[0]}:{self.port}"
        self.server = self.transport.serve(self, address, exclusive=False)

    def run(self, emit: Emit) -> None:
        """Run every round (gossip.schedule "async": every local unit; "ticks": every tick),
        calling `emit` with each metrics record; Diverged if training keeps failing."""
        SCHEDULES[self.gossip.schedule](self).run(emit)

    def start(self, emit: Emit) -> list[np.ndarray]:
        """Serve the initial model, say "ready" and announce the node's roles; the initial model."""
        current = self.learner.get_weights()
        self.service.publish(current, self.learner.num_examples, 0)
        emit(
            {
                "type": "ready",
                "node": self.node,
                "port": self.port,
                "setup_s": round(time.time() - self.started, 3),  # learner + server, after imports
            }
        )
        self.records.announce_roles()
        return current

    def keep(self, model: list[np.ndarray], round_: int) -> None:
        """Serve `model`, the one kept after round `round_` (the attacker remembers it, for a
        stale attack); with dp-share, readers but the observer get the last release instead."""
        shared = None if self.sharing is None else self.sharing.last
        self.service.publish(model, self.learner.num_examples, round_, shared)
        if self.attack is not None:
            self.attack.remember(model)

    def finish(self, emit: Emit) -> None:
        """After the last round: the last events, state "done", and (observed) the observer's read
        of the last model (or its word that it will not read it)."""
        self.records.emit_events(emit)
        self.service.state = "done"
        if self.observed:
            self.service.observed.wait(OBSERVER_WAIT_S)

    def close(self) -> None:
        """Stop serving and drop the neighbour connections (cancelling sends still in flight)."""
        self.links.close()
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
        emit({"type": "error", "node": peer.node, "error": str(err)})
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
        emit({"type": "done", "node": peer.node})
    return code


if __name__ == "__main__":
    sys.exit(run_peer(sys.argv[1], sys.argv[2:]))
