"""The virtual-time engine's process (`launcher.engine = "simulation"`): every peer of a gossip
run in this one process, driven by a virtual clock instead of wall time.

Each peer is a whole `GossipPeer` (its learner, round plan, scenario roles, own model, records)
whose transport is in process (`fedgossip.client.gossip.inprocess`): a push is checked by the
receiver's service as a gRPC push is, and lands at once. What differs from peer processes is
only who decides when things happen:
- synchronous gossip (`SyncRounds`): each round in two phases over all peers: every peer
  trains (launcher.simulation_threads peers at once), then pushes in node order (`push`), then
  every peer collects its neighbours' models, merges, evaluates and records (`collect`,
  launcher.simulation_threads at once; events in node order). Each peer's work is unchanged and
  nobody waits, so the records equal those of peer processes whose pushes all arrive in time;
- asynchronous gossip (`AsyncLoop`): an event per unit on the virtual clock
  (`fedgossip.client.gossip.clock`): train, then after the unit's seeded pause (virtual seconds)
  push, merge if due (the merge timeout in virtual seconds) and record;
- the tick schedule (`fedgossip.client.gossip.ticks`): every tick exactly, in phases.
Compute takes zero virtual time: a unit's training or evaluation does not move the clock, only
the schedule's pauses do. The records' `time_s` is the virtual time (async: seconds; ticks:
tick x gossip.tick_s); in sync gossip it stays the wall time.

Events go to stdout as a host process's do (each names its node). A peer that diverges ends
alone (an error event), the others go on without it.

    python -m fedgossip.client.gossip.virtual NODE-0.toml NODE-1.toml ...
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fedgossip.base.signals import Shutdown
from fedgossip.client.gossip.async_schedule import AsyncLoop
from fedgossip.client.gossip.clock import VirtualClock
from fedgossip.client.gossip.inprocess import InProcessNetwork
from fedgossip.client.gossip.own_model import Diverged, Trained
from fedgossip.client.gossip.peer import GossipPeer, configure_logging
from fedgossip.client.gossip.sync_schedule import Sent, SyncRounds
from fedgossip.client.gossip.ticks import TickNode, run_ticks
from fedgossip.config import load_config
from fedgossip.schema.events import Emit
from fedgossip.schema.lines import LineWriter

log = logging.getLogger("fedgossip.virtual")


class Peers:
    """The peers of the process, those still running, and their end (an error event for one
    that diverged, "done" for the others)."""

    def __init__(self, peers: Sequence[GossipPeer], emit: Emit) -> None:
        self.all = list(peers)
        self.emit = emit
        self.diverged: set[int] = set()

    def running(self) -> list[GossipPeer]:
        return [p for p in self.all if p.node not in self.diverged]

    def guard(self, peer: GossipPeer, step: Callable[[], Any]) -> Any:
        """Run one `step` of `peer`; if its training diverged, end it alone (None)."""
        try:
            return step()
        except Diverged as err:
            log.error("%s", err)
            self.emit({"type": "error", "node": peer.node, "error": str(err)})
            self.diverged.add(peer.node)
            return None

    def finish(self) -> int:
        """The last events of each running peer and its "done"; the exit status (1: one diverged)."""
        for peer in self.running():
            peer.finish(self.emit)
            self.emit({"type": "done", "node": peer.node})
        return 1 if self.diverged else 0


def virtual_time(emit: Emit, clock: VirtualClock, scale: float) -> Emit:
    """`emit` with each record's `time_s` the virtual time now (x `scale`)."""

    def emit_virtual(event: dict[str, Any]) -> None:
        if event.get("type") == "record":
            event["record"]["time_s"] = round(clock.now * scale, 4)
        emit(event)

    return emit_virtual


def run_sync(peers: Peers, threads: int) -> None:
    """Synchronous gossip: every round, all peers train, push (node order), then all collect.
    Trainings and collects are independent (each touches its own peer only), so `threads` of
    them run at once; pushes and events go in node order."""
    emit = peers.emit
    schedules = {p.node: SyncRounds(p) for p in peers.all}
    current = {p.node: p.start(emit) for p in peers.all}
    rounds = peers.all[0].config.experiment.rounds

    def collect(peer: GossipPeer, round_: int, sent: Sent) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        current[peer.node] = schedules[peer.node].collect(round_, current[peer.node], sent, events.append)
        return events

    def train(peer: GossipPeer, round_: int) -> Trained | Diverged:
        try:
            return peer.model.train(round_, current[peer.node])
        except Diverged as err:  # ended by `guard`, in node order
            return err

    def outcome(result: Trained | Diverged) -> Trained:
        if isinstance(result, Diverged):
            raise result
        return result

    with ThreadPoolExecutor(threads, thread_name_prefix="peers") as pool:
        for round_ in range(1, rounds + 1):
            training = peers.running()
            results = list(pool.map(train, training, [round_] * len(training)))
            sent = {}
            for peer, result in zip(training, results, strict=True):
                trained = peers.guard(peer, lambda r=result: outcome(r))
                if trained is not None:
                    sent[peer.node] = schedules[peer.node].push(round_, trained)
            running = peers.running()
            collected = pool.map(collect, running, [round_] * len(running), [sent[p.node] for p in running])
            for events in collected:
                for event in events:
                    emit(event)


def run_async(peers: Peers, clock: VirtualClock) -> None:
    """Asynchronous gossip on the virtual clock: each unit's pause in virtual seconds."""
    emit = virtual_time(peers.emit, clock, 1.0)
    loops = {p.node: AsyncLoop(p, clock) for p in peers.all}
    current = {p.node: loops[p.node].begin(emit) for p in peers.all}
    units = peers.all[0].config.experiment.rounds

    def train(peer: GossipPeer, unit: int) -> None:
        loop = loops[peer.node]
        trained = peers.guard(peer, lambda: loop.train(unit, current[peer.node]))
        if trained is not None:
            clock.at(clock.now + loop.pause(), lambda: finish(peer, unit, trained))

    def finish(peer: GossipPeer, unit: int, trained: Any) -> None:
        current[peer.node] = loops[peer.node].finish_unit(unit, current[peer.node], trained, emit)
        if unit < units:
            train(peer, unit + 1)

    for peer in peers.all:
        train(peer, 1)
    clock.run()


def run_virtual(config_paths: Sequence[str]) -> int:
    """Entry point of the virtual-time process: build every peer on one in-process network and
    run the configured schedule; 0 when every peer finished, 1 if one diverged, 2 for a bad
    config (no peer started), 128 + the signal when stopped."""
    configure_logging("virtual")
    emit = LineWriter(sys.stdout)
    network = InProcessNetwork()
    try:
        built = [GossipPeer(load_config(path), network) for path in config_paths]
    except ValueError as err:
        log.error("%s", err)
        emit({"type": "error", "error": str(err)})
        return 2
    peers = Peers(sorted(built, key=lambda p: p.node), emit)
    shutdown = Shutdown().install()
    schedule = peers.all[0].gossip.schedule
    try:
        if schedule == "async":
            run_async(peers, VirtualClock())
        elif schedule == "ticks":
            clock = VirtualClock()
            emit_ticks = virtual_time(emit, clock, peers.all[0].gossip.tick_s)
            nodes = [TickNode(p) for p in peers.all]
            run_ticks(nodes, clock, emit_ticks, peers.guard)
        else:
            run_sync(peers, peers.all[0].config.launcher.simulation_threads)
        return peers.finish()
    except KeyboardInterrupt:
        return shutdown.exit_code
    finally:
        shutdown.begin()
        for peer in peers.all:
            peer.close()


if __name__ == "__main__":
    sys.exit(run_virtual(sys.argv[1:]))
