"""The sections of an experiment config that tune how a runtime runs it: where the launcher starts
node processes, transport security, the gossip peers' schedule and defences, the Flower engines,
and one peer's place in the network. Each is a frozen dataclass that declares the constraint of
each field (`fedgossip.base.constraints`), checked at construction, errors naming the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from numbers import Integral, Real
from typing import ClassVar

from fedgossip.base.constraints import (
    Constrained,
    Constraint,
    InstanceOf,
    Interval,
    ListOf,
    Registered,
    Satisfies,
    StrOptions,
    TableOf,
    require,
)
from fedgossip.schema.codecs import CODECS, FLOWER_CODECS

SCHEDULES = ("sync", "async", "ticks")
ASYNC_UNITS = ("epoch", "step")
ENGINES = ("local", "ray", "simulation")  # launcher.engine: where gossip node processes run
FLAG = InstanceOf(bool)
TEXT = InstanceOf(str)
POSITIVE = Interval(Real, 0, closed="neither")
NON_NEGATIVE = Interval(Real, 0)
NODE_ID = Satisfies(lambda value: isinstance(value, str) and value.isdigit(), "a node id", "x")


def is_host_port(address: object, lowest_port: int = 1) -> bool:
    """Whether `address` is HOST:PORT: a host name or address (an IPv6 one in brackets) and a port
    in `lowest_port`..65535."""
    if not isinstance(address, str):
        return False
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            return False
    elif ":" in host:  # an IPv6 address without brackets: where would its port begin?
        return False
    has_port = port.isascii() and port.isdigit() and lowest_port <= int(port) <= 65535
    return has_port and bool(host) and not any(c.isspace() for c in host)


LISTEN = Satisfies(
    lambda value: is_host_port(value, lowest_port=0),
    "HOST:PORT with a port in 0..65535 (0: any free port)",
    "127.0.0.1:65536",
)
ADDRESS = Satisfies(is_host_port, "HOST:PORT with a port in 1..65535", "127.0.0.1:0")


def is_ray_address(address: object) -> bool:
    """Whether `address` is "auto", "" or HOST:PORT with a port in 1..65535."""
    return address in ("", "auto") or is_host_port(address)


@dataclass(frozen=True)
class LauncherSection(Constrained):
    """Where and how the launcher starts gossip node processes.

    engine: "local" (processes on this machine), "ray" (one Ray actor per node process, spread over
    a Ray cluster's machines: launcher/gossip/ray_engine.py) or "simulation" (the virtual-time
    engine: every peer in one process on a virtual clock, client/gossip/virtual.py). fork_server
    (local and simulation engines): fork them from one parent that has imported numpy, torch, the
    task code and the peer's own (gRPC's too, no gRPC state) instead of starting each afresh:
    start-up in a fraction of a second, the imported code shared copy-on-write. ray_address (ray
    engine): "auto" (the cluster `ray start` runs on this machine), HOST:PORT of a cluster's head,
    or "" (start a Ray of this machine alone).
    simulation_threads (simulation engine, sync gossip): how many peers train, then collect,
    merge and evaluate, at once (each with task.threads torch threads; 2: a 2-core machine's
    cores); the records do not depend on it.
    network (local engine): "loopback" (every peer on 127.0.0.1) or "namespaces" (every node
    process an emulated host: a Linux network namespace of its own with its own address on a
    bridge, launcher/supervision/namespaces.py; needs root and iproute2).
    """

    section_name = "launcher"
    constraints: ClassVar[dict[str, Constraint]] = {
        "fork_server": FLAG,
        "engine": StrOptions(*ENGINES),
        "ray_address": Satisfies(is_ray_address, '"auto", HOST:PORT or "" (start a local Ray)', "head"),
        "simulation_threads": Interval(Integral, 1),
        "network": StrOptions("loopback", "namespaces"),
    }

    fork_server: bool = True
    engine: str = "local"
    ray_address: str = ""
    simulation_threads: int = 2
    network: str = "loopback"


@dataclass(frozen=True)
class SecuritySection(Constrained):
    """Transport security of a launched experiment: TLS, mutual TLS and a shared-secret token.

    The launcher generates a throwaway CA, certificates and token for the run. insecure: plaintext
    gRPC off loopback (launcher.network = "namespaces" without TLS), said explicitly.
    """

    section_name = "security"
    constraints: ClassVar[dict[str, Constraint]] = {
        "tls": FLAG,
        "mutual_tls": FLAG,
        "token": FLAG,
        "insecure": FLAG,
    }

    tls: bool = False
    mutual_tls: bool = False
    token: bool = False
    insecure: bool = False

    def check_together(self) -> None:
        require(self.tls or not self.mutual_tls, "security.mutual_tls", "needs security.tls = true")


@dataclass(frozen=True)
class FlowerSection(Constrained):
    """Flower mode: which engine runs the ServerApp/ClientApps and how nodes are sampled.

    engine: "deployment" (a SuperLink and one SuperNode process per node on loopback),
    "simulation" (Flower's Ray-based simulation engine) or "inprocess" (one process, no ports).
    server_learning_rate: FedAvgM's server learning rate and FedAdam/FedYogi/FedAdagrad's eta.
    server_momentum: FedAvgM's server momentum. proximal_mu: sent to nodes by FedProx.
    num_malicious: Krum/Bulyan's assumed number of malicious nodes.
    round_timeout: how long the ServerApp waits for the replies of one round's messages.
    startup_timeout: how long processes may take to start and nodes to connect and answer.
    simulation_cpus: CPUs per virtual client in the simulation engine (Ray client resources).
    codec: how a ClientApp packs its reply's tensors ("none", "fp16", "int8", or "topk": the
    update to the round's global model, with error feedback; not CHOCO, whose public copies need
    every pair of nodes to talk each round); codec_ratio: the share of values top-k sends.
    secure_aggregation: "secagg+" runs each round's training through Flower's SecAgg+ protocol
    (`server/secure_aggregation.py`): the server learns only the weighted sum of the models. Its
    secagg_* keys: num_shares (0: every sampled node), reconstruction_threshold (0: two thirds of
    the shares, a majority), clipping_range
    (a weight beyond it is an error), quantization_range (levels per weight), max_weight (the
    largest example count; a node with more is an error). Checked in `config/secure_aggregation.py`.
    """

    section_name = "flower"
    constraints: ClassVar[dict[str, Constraint]] = {
        "engine": StrOptions("deployment", "simulation", "inprocess"),
        "fraction_train": Interval(Real, 0, 1, closed="right"),
        "fraction_evaluate": Interval(Real, 0, 1),
        "server_learning_rate": POSITIVE,
        "server_momentum": Interval(Real, 0, 1, closed="left"),
        "proximal_mu": NON_NEGATIVE,
        "num_malicious": Interval(Integral, 0),
        "round_timeout": POSITIVE,
        "startup_timeout": POSITIVE,
        "simulation_cpus": Interval(Integral, 1),
        "codec": StrOptions(*FLOWER_CODECS),
        "codec_ratio": Interval(Real, 0, 1, closed="right"),
        "secure_aggregation": StrOptions("none", "secagg+"),
        "secagg_num_shares": Interval(Integral, 0),
        "secagg_reconstruction_threshold": Interval(Integral, 0),
        "secagg_clipping_range": POSITIVE,
        "secagg_quantization_range": Interval(Integral, 2, 2**31),
        "secagg_max_weight": POSITIVE,
    }

    engine: str = "deployment"
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    server_learning_rate: float = 0.1
    server_momentum: float = 0.9
    proximal_mu: float = 0.01
    num_malicious: int = 0
    round_timeout: float = 300.0
    startup_timeout: float = 120.0
    simulation_cpus: int = 1
    codec: str = "none"
    codec_ratio: float = 0.1
    secure_aggregation: str = "none"
    secagg_num_shares: int = 0
    secagg_reconstruction_threshold: int = 0
    secagg_clipping_range: float = 8.0
    secagg_quantization_range: int = 2**22
    secagg_max_weight: float = 1000.0


@dataclass(frozen=True)
class GossipSection(Constrained):
    """How a gossip peer schedules its rounds and defends them against slow, frozen and hostile
    neighbours.

    schedule: "sync" (rounds with a barrier: every peer waits for its neighbours' models of the
    round) or "async" (no barrier, `fedgossip.client.gossip.async_schedule`: each peer trains one
    async_unit at a time, "epoch" (one train() call, task.local_epochs epochs) or "step" (one
    minibatch), then waits a seeded random interval in async_interval = [lo, hi] seconds, pushes,
    and merges once as many fresh models came as it has neighbours, or async_merge_timeout
    seconds after its last merge) or "ticks" (the authors' tick schedule,
    `fedgossip.client.gossip.ticks`: a node trains one minibatch at tick 0 and then every
    randint(lo, hi) ticks, train_every_ticks = [lo, hi], pushes after each training and merges
    once as many models came as it has neighbours; it evaluates every eval_every_ticks ticks, one
    record per evaluation, experiment.rounds of them; a tick lasts tick_s seconds in peer
    processes). max_pushes: pushes served at once (0: 2 per neighbour + 4);
    idle_timeout: seconds a push stream may stay silent; max_norm_ratio: refuse received models
    whose norm exceeds this multiple of the own model's (0 = off, so attacks stay measurable);
    catch_up_rounds: how many rounds behind its neighbours a peer must fall before it fetches a
    neighbour's model; divergence_limit: consecutive rounds of non-finite training before the
    peer stops; degraded_share: the run is "degraded" when a node merged nothing in more than this
    share of its rounds (async: its units whose merge came by timeout and found nothing fresh).
    codec: how a push packs its tensors (`fedgossip.schema.codecs`: "none", "fp16", "int8",
    "topk" with error feedback, "choco": CHOCO-gossip); codec_ratio: the share of values top-k
    and CHOCO send per tensor; codec_gamma: CHOCO's consensus step size.
    """

    section_name = "gossip"
    constraints: ClassVar[dict[str, Constraint]] = {
        "schedule": StrOptions(*SCHEDULES),
        "async_unit": StrOptions(*ASYNC_UNITS),
        "async_interval": ListOf(NON_NEGATIVE, length=2),
        "async_merge_timeout": POSITIVE,
        "train_every_ticks": ListOf(Interval(Integral, 1), length=2),
        "eval_every_ticks": Interval(Integral, 1),
        "tick_s": POSITIVE,
        "max_pushes": Interval(Integral, 0),
        "idle_timeout": POSITIVE,
        "max_norm_ratio": NON_NEGATIVE,
        "catch_up_rounds": Interval(Integral, 2),
        "divergence_limit": Interval(Integral, 1),
        "degraded_share": Interval(Real, 0, 1),
        "codec": Registered(CODECS),
        "codec_ratio": Interval(Real, 0, 1, closed="right"),
        "codec_gamma": Interval(Real, 0, 1, closed="right"),
    }

    schedule: str = "sync"
    async_unit: str = "epoch"
    async_interval: tuple[float, ...] = (0.0, 0.1)
    async_merge_timeout: float = 5.0
    train_every_ticks: tuple[int, ...] = (8, 12)
    eval_every_ticks: int = 100
    tick_s: float = 0.05

    max_pushes: int = 0
    idle_timeout: float = 10.0
    max_norm_ratio: float = 0.0
    catch_up_rounds: int = 2
    divergence_limit: int = 3
    degraded_share: float = 0.5
    codec: str = "none"
    codec_ratio: float = 0.1
    codec_gamma: float = 0.1

    def check_together(self) -> None:
        low, high = self.async_interval
        require(
            low <= high, "gossip.async_interval", f"must be [lo, hi] seconds with lo <= hi; got {[low, high]}"
        )
        low, high = self.train_every_ticks
        require(
            low <= high,
            "gossip.train_every_ticks",
            f"must be [lo, hi] ticks with lo <= hi; got {[low, high]}",
        )


@dataclass(frozen=True)
class PeerSection(Constrained):
    """One gossip peer's place in the network: only in node configs (`fedgossip peer`).

    `neighbours` maps each neighbour's node id to its address ("host:port"). Paths are to PEM files,
    read (and checked) where the peer runs, not here: the launcher may write them afterwards.
    Plaintext on a non-loopback address needs `insecure = true`, said explicitly.
    `link_keys_file` holds the secrets of this peer's links (client/gossip/transport/identity.py):
    with it, or with
    mutual TLS and node certificates, every caller is identified and may push only as itself.
    """

    section_name = "peer"
    constraints: ClassVar[dict[str, Constraint]] = {
        "id": Interval(Integral, 0),
        "listen": LISTEN,
        "neighbours": TableOf(NODE_ID, ADDRESS, optional=True),
        "run_start": Interval(Real),
        "ca_file": TEXT,
        "cert_file": TEXT,
        "key_file": TEXT,
        "client_ca_file": TEXT,
        "token_file": TEXT,
        "link_keys_file": TEXT,
        "insecure": FLAG,
        "max_model_mb": POSITIVE,
    }

    id: int = 0
    listen: str = "127.0.0.1:0"
    neighbours: dict[str, str] | None = None
    run_start: float = 0.0
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    token_file: str = ""
    link_keys_file: str = ""
    insecure: bool = False
    max_model_mb: float = 2048.0

    def check_together(self) -> None:
        require(
            str(self.id) not in (self.neighbours or {}), "peer.neighbours", "must not name the peer itself"
        )
        require(
            bool(self.cert_file) == bool(self.key_file), "peer.cert_file", "and peer.key_file go together"
        )
        require(
            not self.client_ca_file or bool(self.cert_file),
            "peer.client_ca_file",
            "needs a server certificate",
        )
