"""One gossip peer: a gRPC server, clients to its neighbours, and a learner for one data partition.

Synchronous rounds: train, push the model to every neighbour, wait (up to the round timeout) for
the neighbours' models of this round, merge them in sender order with the configured strategy,
evaluate, emit a metrics record. A neighbour that missed a round is not waited for again until it
is heard from, so a dead peer costs its neighbours one timeout, not one per round.

Run one by hand with `fedgossip peer NODE.toml`, or `python -m fedgossip.client.peer NODE.toml`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, TextIO

import grpc

from fedgossip.client.inbox import Inbox
from fedgossip.client.merge import gossip_merge
from fedgossip.client.security import (
    channel_credentials,
    check_plaintext,
    read_token,
    server_credentials,
    token_metadata,
)
from fedgossip.client.service import GossipService
from fedgossip.client.wire import CHANNEL_OPTIONS, encode, specs_of
from fedgossip.config import ExperimentConfig, load_config
from fedgossip.launcher.signals import Shutdown
from fedgossip.proto import gossip_pb2_grpc
from fedgossip.tasks import build_learner

log = logging.getLogger("fedgossip.peer")

Emit = Callable[[dict[str, Any]], None]


class GossipPeer:
    """A peer built from a node config (an experiment config with a [peer] section)."""

    def __init__(self, config: ExperimentConfig) -> None:
        if config.peer is None:
            raise ValueError("a peer needs a [peer] section (id, listen, neighbours)")
        self.config = config
        self.peer = config.peer
        self.started = time.time()
        self.run_start = config.peer.run_start or self.started
        check_plaintext(self.peer)
        self.token = read_token(self.peer)
        self.learner = build_learner(config.task, self.peer.id, config.nodes.count, config.experiment.seed)
        self.names = list(self.learner.names)
        self.neighbours = {int(k): v for k, v in (self.peer.neighbours or {}).items()}
        self.inbox = Inbox()
        self.service = GossipService(
            self.peer.id,
            specs_of(self.names, self.learner.get_weights()),
            self.inbox,
            neighbours=list(self.neighbours),
            rounds=config.experiment.rounds,
            max_bytes=int(self.peer.max_model_mb * 2**20),
            token=self.token,
        )
        self.server, self.port = self._start_server()
        credentials = channel_credentials(self.peer)
        self.channels = {
            node: grpc.secure_channel(address, credentials, CHANNEL_OPTIONS)
            if credentials
            else grpc.insecure_channel(address, CHANNEL_OPTIONS)
            for node, address in self.neighbours.items()
        }
        self.stubs = {node: gossip_pb2_grpc.GossipStub(c) for node, c in self.channels.items()}
        self.pushes = futures.ThreadPoolExecutor(max(2, min(64, 2 * len(self.stubs))), "push")

    def _start_server(self) -> tuple[grpc.Server, int]:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max(8, 2 * len(self.peer.neighbours or {}))),
            options=CHANNEL_OPTIONS,
        )
        gossip_pb2_grpc.add_GossipServicer_to_server(self.service, server)
        credentials = server_credentials(self.peer)
        try:
            if credentials:
                port = server.add_secure_port(self.peer.listen, credentials)
            else:
                port = server.add_insecure_port(self.peer.listen)
        except RuntimeError as err:
            raise ValueError(f"cannot listen on {self.peer.listen}: {err}") from None
        if port == 0:
            raise ValueError(f"cannot listen on {self.peer.listen} (port in use?)")
        server.start()
        return server, port

    def run(self, emit: Emit) -> None:
        """Run every round, calling `emit` with each metrics record."""
        rounds = self.config.experiment.rounds
        timeout = self.config.experiment.round_timeout
        alive = set(self.neighbours)
        emit(
            {
                "type": "ready",
                "node": self.peer.id,
                "port": self.port,
                "setup_s": round(time.time() - self.started, 3),  # learner + server, after imports
            }
        )
        for round_ in range(1, rounds + 1):
            self.service.state = "training"
            train_loss = self.learner.train()
            own = self.learner.get_weights()
            deadline = time.monotonic() + timeout
            self.service.state = "waiting"
            pending = self._push(round_, own, alive, deadline)
            messages = self.inbox.collect(round_, alive, deadline)
            sent = self._delivered(pending, [m.sender for m in messages], deadline)
            heard = [m.sender for m in messages]
            missing = alive - set(heard)
            if missing:
                log.warning("round %d: no model from %s within %.1fs", round_, sorted(missing), timeout)
            alive = (alive - missing) | set(heard)
            merged = gossip_merge(
                self.config.strategy, own, [m.arrays for m in messages], [m.num_examples for m in messages]
            )
            self.learner.set_weights(merged)
            self.service.publish(merged, self.learner.num_examples, round_)
            test_loss, test_accuracy = self.learner.evaluate()
            emit(
                {
                    "type": "round",
                    "node": self.peer.id,
                    "round": round_,
                    "time_s": round(time.time() - self.run_start, 4),
                    "train_loss": train_loss,
                    "test_loss": test_loss,
                    "test_accuracy": test_accuracy,
                    "num_examples": self.learner.num_examples,
                    "bytes_sent": sent,
                    "bytes_received": sum(m.nbytes for m in messages),
                    "neighbours_heard": heard,
                }
            )
        self.service.state = "done"

    def _push(self, round_: int, arrays: list, alive: set[int], deadline: float) -> dict[int, futures.Future]:
        """Send this round's model to every neighbour in the background; return the sends by node.

        Live neighbours are waited for (`wait_for_ready`) until the deadline, so a peer that starts
        late still gets round 1; neighbours that missed a round get one fail-fast attempt.
        """
        chunks = encode(self.peer.id, round_, self.learner.num_examples, self.names, arrays)
        metadata = token_metadata(self.token)
        return {
            node: self.pushes.submit(
                self._push_one, node, stub, chunks, metadata, deadline, wait=node in alive
            )
            for node, stub in self.stubs.items()
        }

    @staticmethod
    def _delivered(pending: dict[int, futures.Future], heard: list[int], deadline: float) -> int:
        """Bytes of this round's model delivered to the neighbours heard from this round.

        Those neighbours are alive and accept at once, so this wait is short; it also guarantees
        that the last round's model reaches them before the peer exits. Sends to silent
        neighbours are not waited for.
        """
        sends = [pending[node] for node in heard if node in pending]
        done, _ = futures.wait(sends, timeout=max(1.0, deadline - time.monotonic()))
        return sum(f.result() for f in done)

    def _push_one(self, node: int, stub, chunks, metadata, deadline: float, *, wait: bool) -> int:
        """Push one model; a refused or failed push is logged, never raised. Returns bytes sent."""
        try:
            reply = stub.PushModel(
                iter(chunks),
                timeout=max(0.1, deadline - time.monotonic()),
                metadata=metadata,
                wait_for_ready=wait,
            )
        except grpc.RpcError as err:
            log.warning("push to node %d failed: %s %s", node, err.code().name, err.details())
            return 0
        if not reply.accepted:
            log.info("node %d did not use our model: %s", node, reply.detail)
        return sum(len(c.data) for c in chunks)

    def close(self) -> None:
        """Stop serving and drop the neighbour connections (cancelling sends still in flight)."""
        self.pushes.shutdown(wait=False, cancel_futures=True)
        for channel in self.channels.values():
            channel.close()
        self.server.stop(grace=1.0).wait(2.0)


def json_lines(stream: TextIO) -> Emit:
    """An emitter writing one JSON object per line, flushed at once."""
    lock = threading.Lock()

    def emit(record: dict[str, Any]) -> None:
        with lock:
            stream.write(json.dumps(record) + "\n")
            stream.flush()

    return emit


def run_peer(config_path: str, overrides: list[str] | None = None, metrics: TextIO | None = None) -> int:
    """Entry point of a peer process: load the node config, run all rounds, return an exit status."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s node: %(message)s",
    )
    emit = json_lines(metrics or sys.stdout)
    try:
        peer = GossipPeer(load_config(config_path, overrides or []))
    except ValueError as err:
        log.error("%s", err)
        emit({"type": "error", "error": str(err)})
        return 2
    shutdown = Shutdown().install()  # SIGTERM/SIGINT end the peer like Ctrl-C, once; later ones ignored
    try:
        peer.run(emit)
    except KeyboardInterrupt:
        return shutdown.exit_code
    finally:
        shutdown.begin()
        peer.close()
    emit({"type": "done", "node": peer.peer.id})
    return 0


if __name__ == "__main__":
    sys.exit(run_peer(sys.argv[1], sys.argv[2:]))
