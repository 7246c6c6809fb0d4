"""The peers of one Ray actor (`launcher.engine = "ray"`): what a `client/gossip/host.py` process hosts,
driven by method calls instead of argv and stdout.

The Ray engine (launcher/gossip/ray_engine.py) makes this class a threaded Ray actor, so that its methods
are called while its peers run; the class itself never imports Ray at module level. The driver
calls, in order:

    place(count)    -> Placement: the actor's node (Ray's address of it) and `count` free ports
                    there, one per peer it will host
    start(bundles)  the peers' node configs and the files they name (link keys, certificates,
                    token: the driver's results folder may be on another machine), written to a
                    private temporary folder of the actor's node; returns once the peers are built
                    (serving, their data read) or failed to build
    go()            the built peers run their rounds, in threads; the driver calls it on every
                    actor once all are built, so that no actor's peers start their rounds while
                    another's are still reading their data (round 1 waits only round_timeout for
                    the neighbours: peers started seconds apart would run ahead alone)
    take(timeout, linger)
                    -> (events, logs, code): the event lines and log lines produced since the last
                    call (waiting up to `timeout` for the first, then `linger` more for those that
                    follow it: one call carries every record of its peers' rounds of that time,
                    not one call per record), and the exit status once every peer has ended and
                    every line was taken (None before)
    stop()          stops every peer (the run is stopping); the exit status is then STOPPED

The event lines are those a peer process writes to its stdout (`schema.lines.encode`), so the
driver handles them exactly as a local run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedgossip.base.ports import free_ports
from fedgossip.base.signals import Shutdown
from fedgossip.base.threads import THREAD_ENV
from fedgossip.client.gossip.host import Hosted, build_peers, run_hosted
from fedgossip.config import dump_toml, load_config
from fedgossip.schema.events import RECORD
from fedgossip.schema.lines import encode

PEER_FILES = ("ca_file", "cert_file", "key_file", "client_ca_file", "token_file", "link_keys_file")
"""The [peer] keys that name files: shipped to the actor with the node config."""
STOPPED = 143  # the exit status of a stopped actor: as a peer process stopped by SIGTERM (128 + 15)
MAX_TAKE = 2000  # lines per take(), so that one reply stays small
_END = ("end", "")


@dataclass(frozen=True)
class Placement:
    """Where an actor runs: its Ray node's id and address, its process id and its peers' ports."""

    node_id: str
    ip: str
    pid: int
    ports: list[int]


@dataclass(frozen=True)
class NodeBundle:
    """A node config as TOML text, with the contents of the files its [peer] section names."""

    node: int
    config: str
    files: dict[str, bytes]

    @classmethod
    def read(cls, path: Path) -> NodeBundle:
        """The bundle of a node config the launcher wrote."""
        peer = load_config(path).peer
        assert peer is not None, f"{path} has no [peer] section"
        files = {key: Path(getattr(peer, key)).read_bytes() for key in PEER_FILES if getattr(peer, key)}
        return cls(peer.id, path.read_text(), files)

    def unpack(self, folder: Path) -> Path:
        """Write the files (owner-only) and the node config naming them into `folder`; its path."""
        own = folder / f"node-{self.node}"
        own.mkdir(mode=0o700)
        paths = {}
        for key, content in self.files.items():
            path = own / key
            path.touch(mode=0o600)
            path.write_bytes(content)
            paths[key] = str(path)
        raw = own / "given.toml"
        raw.write_text(self.config)
        config = load_config(raw)
        assert config.peer is not None
        path = folder / f"node-{self.node}.toml"
        path.write_text(dump_toml(config.replace(peer=dataclasses.replace(config.peer, **paths))))
        return path


class _Lines(logging.Handler):
    """Log records of the actor's process, queued as log lines for the driver."""

    def __init__(self, lines: queue.Queue) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.put(("log", self.format(record)))


class ActorHost:
    """The peers of one actor, their events and logs queued until the driver takes them."""

    def __init__(self, threads: int, import_path: Sequence[str]) -> None:
        os.environ.update({name: str(threads) for name in THREAD_ENV})  # before torch is imported
        sys.path[:0] = [entry for entry in import_path if entry not in sys.path]  # users' strategies
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._code: int | None = None
        self._hosted: list[Hosted] = []
        self._shutdown = Shutdown()  # never installed: stop() ends the peers, not a signal
        self._lock = threading.Lock()
        self._built = threading.Event()  # the peers are built (or failed to be)
        self._go = threading.Event()  # run them (go), or stop
        self._folder = Path(tempfile.mkdtemp(prefix="fedgossip-actor-"))
        root = logging.getLogger()
        root.addHandler(_Lines(self._lines))
        root.setLevel(logging.INFO)

    def place(self, count: int) -> Placement:
        """The actor's node and `count` free ports on its address (Ray's address of the node)."""
        import ray  # this method runs inside a Ray worker

        ip = ray.util.get_node_ip_address()
        node_id = ray.get_runtime_context().get_node_id()
        return Placement(node_id, ip, os.getpid(), free_ports(count, ip))

    def start(self, bundles: Sequence[NodeBundle]) -> None:
        """Build the peers of `bundles` in the background (it reads the data); return once they
        are built: they run their rounds at `go`."""
        threading.Thread(target=self._run, args=(list(bundles),), name="peers", daemon=True).start()
        self._built.wait()

    def go(self) -> None:
        """Let the built peers run their rounds (at once if they are not built yet: when they are)."""
        self._go.set()

    def _emit(self, event: dict) -> None:
        """Queue a peer's event line (the emit function the peers are built with)."""
        kind = RECORD if event.get("type") == RECORD else "event"
        self._lines.put((kind, encode(event).decode().rstrip("\n")))

    def _run(self, bundles: list[NodeBundle]) -> None:
        code = 2
        try:
            peers = build_peers([str(bundle.unpack(self._folder)) for bundle in bundles], self._emit)
            self._built.set()
            self._go.wait()
            if peers is not None:
                with self._lock:
                    self._hosted = [Hosted(peer, self._emit, self._shutdown) for peer in peers]
                    if self._shutdown.stopping:  # stopped while they were being built or waiting for go
                        for one in self._hosted:
                            one.close()
                        self._hosted = []
                if self._hosted:  # not stopped before they ran
                    code = run_hosted(self._hosted)
        except Exception as err:  # e.g. the node's disk is full: the driver sees it, the actor lives on
            logging.getLogger("fedgossip.actor").exception("the peers could not run")
            self._emit({"type": "error", "error": f"{type(err).__name__}: {err}"})
            code = 1
        finally:
            self._built.set()
            self._close()
            self._code = STOPPED if self._shutdown.stopping else code
            self._lines.put(_END)

    def take(self, timeout: float, linger: float = 0.0) -> tuple[list[str], list[str], int | None]:
        """The event and log lines since the last call (waiting up to `timeout` seconds for the
        first, then `linger` seconds more for the lines that follow it; at most MAX_TAKE), and the
        exit status once the peers have ended and every line was taken."""
        events: list[str] = []
        logs: list[str] = []
        ended = False
        with contextlib.suppress(queue.Empty):
            item = self._lines.get(timeout=timeout)
            until = time.monotonic() + linger
            while True:
                if item == _END:
                    ended = True
                    break
                (logs if item[0] == "log" else events).append(item[1])
                if len(events) + len(logs) >= MAX_TAKE:
                    break
                item = self._lines.get(timeout=max(0.0, until - time.monotonic()))
        return events, logs, self._code if ended else None

    def stop(self) -> None:
        """Stop every peer: they stop serving and their round loops end."""
        self._shutdown.begin()
        self._go.set()
        self._close()

    def _close(self) -> None:
        with self._lock:
            for one in self._hosted:
                one.close()
        shutil.rmtree(self._folder, ignore_errors=True)
