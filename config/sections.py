"""The sections of an experiment config, each a frozen dataclass validated at construction.

The task section is `fedgossip.tasks.TaskConfig`; the others live here. Every section rejects bad
values with a ValueError that names the offending key, so a typo in a TOML file never becomes a
traceback deep inside a node process.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

from fedgossip.strategies import registry

GOSSIP_STRATEGIES = registry.names("gossip")
FLOWER_STRATEGIES = registry.names("flower")
FLOWER_BUILTIN_STRATEGIES = tuple(registry.FLOWER_BUILTINS)
SCHEDULES = ("sync", "async")
ASYNC_UNITS = ("epoch", "step")
ENGINES = ("local", "ray")  # launcher.engine: where gossip node processes run
# the generators of scenario/topology.py's table (a package above this one: a test ties them)
TOPOLOGIES = ("ring", "regular", "erdos-renyi", "small-world", "complete", "star", "file")
MAX_NAME = 100  # characters; the results folder adds "-YYYYmmdd-HHMMSS", file names stop at 255 bytes


def require(condition: bool, key: str, message: str) -> None:
    """Raise ValueError naming `key` when `condition` is false."""
    if not condition:
        raise ValueError(f"{key} {message}")


def require_choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming `key` when `value` is not one of `choices`."""
    require(value in choices, key, f"must be one of {', '.join(choices)}; got {value!r}")


def file_name_problem(name: str) -> str | None:
    """Why `name` is not a plain file name (it names the results folder), or None if it is one."""
    if not name.strip():
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters; got {len(name)}"
    if name in (".", "..") or "/" in name or "\\" in name:
        return f"must be a plain file name (it names the results folder), not a path; got {name!r}"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return f"must not contain control characters; got {name!r}"
    return None


@dataclass(frozen=True)
class ExperimentSection:
    """What is run: its name, its mode (gossip or flower), how long, and the seed of every choice."""

    name: str = "experiment"
    mode: str = "gossip"
    rounds: int = 20
    seed: int = 0
    round_timeout: float = 30.0
    target_accuracy: float = 0.9
    consensus_every: int = 1  # gossip: the launcher measures the consensus distance every k rounds (0: off)

    def __post_init__(self) -> None:
        problem = file_name_problem(self.name)
        require(problem is None, "experiment.name", str(problem))
        require_choice(self.mode, "experiment.mode", ("gossip", "flower"))
        require(self.rounds >= 1, "experiment.rounds", f"must be >= 1; got {self.rounds}")
        require(self.seed >= 0, "experiment.seed", f"must be >= 0; got {self.seed}")
        require(self.round_timeout > 0, "experiment.round_timeout", "must be > 0 seconds")
        require(0 < self.target_accuracy <= 1, "experiment.target_accuracy", "must be in (0, 1]")
        require(self.consensus_every >= 0, "experiment.consensus_every", "must be >= 0 (0: off)")


@dataclass(frozen=True)
class NodesSection:
    """How many nodes learn together, and (gossip mode) how many peers share one OS process:
    `per_process = k` runs k peers per process, each with its own gRPC server, learner and round
    loop (hundreds of peers on one machine); a crash of a process ends only its k peers."""

    count: int = 8
    per_process: int = 1

    def __post_init__(self) -> None:
        require(self.count >= 2, "nodes.count", f"must be >= 2; got {self.count}")
        require(self.per_process >= 1, "nodes.per_process", f"must be >= 1; got {self.per_process}")


@dataclass(frozen=True)
class LauncherSection:
    """Where and how the launcher starts gossip node processes.

    engine: "local" (processes on this machine) or "ray" (one Ray actor per node process, spread
    over a Ray cluster's machines: launcher/gossip/ray_engine.py). fork_server (local engine): fork them
    from one parent that has imported numpy, torch and the task code (never grpc) instead of
    starting each afresh: start-up in a fraction of a second, the imported code shared
    copy-on-write. ray_address (ray engine): "auto" (the cluster `ray start` runs on this
    machine), HOST:PORT of a cluster's head, or "" (start a Ray of this machine alone).
    """

    fork_server: bool = True
    engine: str = "local"
    ray_address: str = ""

    def __post_init__(self) -> None:
        require_choice(self.engine, "launcher.engine", ENGINES)
        host, _, port = self.ray_address.rpartition(":")
        host_port = bool(host.strip("[]")) and port.isdigit() and 0 < int(port) < 65536
        require(
            self.ray_address in ("", "auto") or host_port,
            "launcher.ray_address",
            f'must be "auto", HOST:PORT or "" (start a local Ray); got {self.ray_address!r}',
        )


@dataclass(frozen=True)
class TopologySection:
    """Who gossips with whom (gossip mode only); built with networkx from the experiment seed."""

    kind: str = "ring"
    degree: int = 4
    probability: float = 0.3
    file: str = ""

    def __post_init__(self) -> None:
        require_choice(self.kind, "topology.kind", TOPOLOGIES)
        require(self.degree >= 1, "topology.degree", f"must be >= 1; got {self.degree}")
        require(0 <= self.probability <= 1, "topology.probability", "must be in [0, 1]")
        require(self.kind != "file" or bool(self.file), "topology.file", "is required for kind 'file'")


@dataclass(frozen=True)
class StrategySection:
    """How models are merged: a rule's name and its parameters (the `[strategy.params]` table).

    The name is one of `fedgossip.strategies.registry` or a user's "package.module:function"
    (whose params pass unchecked). A registered rule's params are checked here, and completed with
    the defaults, so the resolved config repeats the run exactly.
    """

    name: str = "average"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            entry = registry.lookup(self.name)
        except ValueError as err:
            raise ValueError(f"strategy.name {err}") from None
        object.__setattr__(self, "params", entry.bind(self.params, "strategy.params"))


@dataclass(frozen=True)
class SecuritySection:
    """Transport security of a launched experiment: TLS, mutual TLS and a shared-secret token.

    The launcher generates a throwaway CA, certificates and token for the run.
    """

    tls: bool = False
    mutual_tls: bool = False
    token: bool = False

    def __post_init__(self) -> None:
        require(self.tls or not self.mutual_tls, "security.mutual_tls", "needs security.tls = true")


@dataclass(frozen=True)
class FlowerSection:
    """Flower mode: which engine runs the ServerApp/ClientApps and how nodes are sampled.

    engine: "deployment" (a SuperLink and one SuperNode process per node on loopback),
    "simulation" (Flower's Ray-based simulation engine) or "inprocess" (one process, no ports).
    server_learning_rate: FedAvgM's server learning rate and FedAdam/FedYogi/FedAdagrad's eta.
    server_momentum: FedAvgM's server momentum. proximal_mu: sent to nodes by FedProx.
    num_malicious: Krum/Bulyan's assumed number of malicious nodes.
    round_timeout: how long the ServerApp waits for the replies of one round's messages.
    startup_timeout: how long processes may take to start and nodes to connect and answer.
    simulation_cpus: CPUs per virtual client in the simulation engine (Ray client resources).
    """

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

    def __post_init__(self) -> None:
        require_choice(self.engine, "flower.engine", ("deployment", "simulation", "inprocess"))
        require(0 < self.fraction_train <= 1, "flower.fraction_train", "must be in (0, 1]")
        require(0 <= self.fraction_evaluate <= 1, "flower.fraction_evaluate", "must be in [0, 1]")
        require(self.server_learning_rate > 0, "flower.server_learning_rate", "must be > 0")
        require(0 <= self.server_momentum < 1, "flower.server_momentum", "must be in [0, 1)")
        require(self.proximal_mu >= 0, "flower.proximal_mu", "must be >= 0")
        require(self.num_malicious >= 0, "flower.num_malicious", "must be >= 0")
        require(self.round_timeout > 0, "flower.round_timeout", "must be > 0 seconds")
        require(self.startup_timeout > 0, "flower.startup_timeout", "must be > 0 seconds")
        require(self.simulation_cpus >= 1, "flower.simulation_cpus", "must be >= 1")


@dataclass(frozen=True)
class GossipSection:
    """How a gossip peer schedules its rounds and defends them against slow, frozen and hostile
    neighbours.

    schedule: "sync" (rounds with a barrier: every peer waits for its neighbours' models of the
    round) or "async" (no barrier, `fedgossip.client.gossip.async_schedule`: each peer trains one
    async_unit at a time, "epoch" (one train() call, task.local_epochs epochs) or "step" (one
    minibatch), then waits a seeded random interval in async_interval = [lo, hi] seconds, pushes,
    and merges once as many fresh models came as it has neighbours, or async_merge_timeout
    seconds after its last merge). max_pushes: pushes served at once (0: 2 per neighbour + 4);
    idle_timeout: seconds a push stream may stay silent; max_norm_ratio: refuse received models
    whose norm exceeds this multiple of the own model's (0 = off, so attacks stay measurable);
    catch_up_rounds: how many rounds behind its neighbours a peer must fall before it fetches a
    neighbour's model; divergence_limit: consecutive rounds of non-finite training before the
    peer stops; degraded_share: the run is "degraded" when a node merged nothing in more than this
    share of its rounds (async: its units whose merge came by timeout and found nothing fresh).
    """

    schedule: str = "sync"
    async_unit: str = "epoch"
    async_interval: tuple[float, ...] = (0.0, 0.1)
    async_merge_timeout: float = 5.0

    max_pushes: int = 0
    idle_timeout: float = 10.0
    max_norm_ratio: float = 0.0
    catch_up_rounds: int = 2
    divergence_limit: int = 3
    degraded_share: float = 0.5

    def __post_init__(self) -> None:
        require_choice(self.schedule, "gossip.schedule", SCHEDULES)
        require_choice(self.async_unit, "gossip.async_unit", ASYNC_UNITS)
        interval = self.async_interval
        require(
            len(interval) == 2 and 0 <= interval[0] <= interval[1],
            "gossip.async_interval",
            f"must be [lo, hi] seconds with 0 <= lo <= hi; got {list(interval)}",
        )
        require(self.async_merge_timeout > 0, "gossip.async_merge_timeout", "must be > 0 seconds")
        require(self.max_pushes >= 0, "gossip.max_pushes", "must be >= 0")
        require(self.idle_timeout > 0, "gossip.idle_timeout", "must be > 0 seconds")
        require(self.max_norm_ratio >= 0, "gossip.max_norm_ratio", "must be >= 0")
        require(self.catch_up_rounds >= 2, "gossip.catch_up_rounds", "must be >= 2")
        require(self.divergence_limit >= 1, "gossip.divergence_limit", "must be >= 1")
        require(0 <= self.degraded_share <= 1, "gossip.degraded_share", "must be in [0, 1]")


@dataclass(frozen=True)
class PeerSection:
    """One gossip peer's place in the network: only in node configs (`fedgossip peer`).

    `neighbours` maps each neighbour's node id to its address ("host:port"). Paths are to PEM files.
    Plaintext on a non-loopback address needs `insecure = true`, said explicitly.
    `link_keys_file` holds the secrets of this peer's links (client/gossip/transport/identity.py):
    with it, or with
    mutual TLS and node certificates, every caller is identified and may push only as itself.
    """

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

    def __post_init__(self) -> None:
        require(self.id >= 0, "peer.id", f"must be >= 0; got {self.id}")
        require(":" in self.listen, "peer.listen", f"must be HOST:PORT; got {self.listen!r}")
        for key, address in (self.neighbours or {}).items():
            require(key.isdigit(), "peer.neighbours", f"keys must be node ids; got {key!r}")
            require(":" in address, f"peer.neighbours.{key}", f"must be HOST:PORT; got {address!r}")
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
        require(self.max_model_mb > 0, "peer.max_model_mb", "must be > 0")


# "none" and the names of scenario/attacks.py's registry (a package above this one: a test ties them)
ATTACKS = ("none", "sign-flip", "noise", "scale", "free-rider", "stale", "label-flip", "collective")


@dataclass(frozen=True)
class ScenarioSection:
    """What goes wrong in a run, seeded from the experiment seed and recorded in events.jsonl.

    Network (gossip): each push waits delay_ms +- jitter_ms (uniform) plus its size over
    bandwidth_mbps (0: unlimited), and is lost with probability `loss`; in rounds
    partition_rounds = [a, b] the nodes are split into partition_groups contiguous groups (by id)
    whose pushes to each other are lost. Adversaries: `attack` carried out by the nodes `attackers`
    (ids) or, when that is empty, a seeded attacker_fraction of the nodes (the 10% set is inside
    the 20% set). attack_scale: the sign-flip and scaling factor, the noise's standard deviation.
    stale_rounds: how old the model a "stale" attacker sends is. target_label, trigger_size: the
    collective plants its trigger (the last trigger_size features set to the data's maximum) and
    relabels its examples as target_label. Churn: the nodes `crash` (or a seeded crash_fraction)
    crash at crash_round, and every node crashes with probability crash_rate each round. Gossip: a
    crashed node loses its model and stops serving until its neighbours are down_rounds rounds
    past the round it crashed in (it asks their Health; at most down_rounds x 3 round timeouts),
    then rejoins by fetching a neighbour's model. Flower (deployment engine): the launcher stops
    the node's SuperNode process before that round and starts it again, same partition and key,
    for round crash + down_rounds (scenario/churn.py). Stragglers (ids, or a fraction, gossip)
    train `slowdown` times slower.
    Topology (gossip): every resample_every rounds each node draws resample_degree random
    neighbours (k-out, seeded, kept connected); 0: the static [topology] graph.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    bandwidth_mbps: float = 0.0
    partition_groups: int = 0
    partition_rounds: tuple[int, ...] = ()
    attack: str = "none"
    attackers: tuple[int, ...] = ()
    attacker_fraction: float = 0.0
    attack_scale: float = 1.0
    stale_rounds: int = 5
    target_label: int = 0
    trigger_size: int = 4
    crash: tuple[int, ...] = ()
    crash_fraction: float = 0.0
    crash_round: int = 0
    crash_rate: float = 0.0
    down_rounds: int = 3
    stragglers: tuple[int, ...] = ()
    straggler_fraction: float = 0.0
    slowdown: float = 1.0
    resample_every: int = 0
    resample_degree: int = 2

    def __post_init__(self) -> None:
        require(self.down_rounds >= 1, "scenario.down_rounds", "must be >= 1")
        for key in ("delay_ms", "jitter_ms", "bandwidth_mbps"):
            require(getattr(self, key) >= 0, f"scenario.{key}", "must be >= 0")
        require(self.jitter_ms <= self.delay_ms, "scenario.jitter_ms", "must be <= scenario.delay_ms")
        for key in ("loss", "attacker_fraction", "crash_fraction", "straggler_fraction"):
            require(0 <= getattr(self, key) <= 1, f"scenario.{key}", "must be in [0, 1]")
        require(0 <= self.crash_rate < 1, "scenario.crash_rate", "must be in [0, 1)")
        require(self.partition_groups != 1, "scenario.partition_groups", "must be 0 (none) or >= 2")
        require(self.partition_groups >= 0, "scenario.partition_groups", "must be 0 (none) or >= 2")
        rounds = self.partition_rounds
        require(
            (len(rounds) == 2 and 1 <= rounds[0] <= rounds[1]) == bool(self.partition_groups),
            "scenario.partition_rounds",
            "must be [first, last] rounds (1 <= first <= last), given with scenario.partition_groups",
        )
        require_choice(self.attack, "scenario.attack", ATTACKS)
        require(
            self.attack != "none" or not (self.attackers or self.attacker_fraction),
            "scenario.attack",
            "must name an attack when scenario.attackers or attacker_fraction is set",
        )
        for key in ("attackers", "crash", "stragglers"):
            ids = getattr(self, key)
            require(all(i >= 0 for i in ids), f"scenario.{key}", f"must be node ids (>= 0); got {list(ids)}")
            require(len(set(ids)) == len(ids), f"scenario.{key}", f"has a repeated node id: {list(ids)}")
        require(self.stale_rounds >= 1, "scenario.stale_rounds", "must be >= 1")
        require(self.target_label >= 0, "scenario.target_label", "must be >= 0")
        require(self.trigger_size >= 1, "scenario.trigger_size", "must be >= 1")
        require(self.crash_round >= 0, "scenario.crash_round", "must be >= 0 (0: none)")
        require(
            self.crash_round > 0 or not (self.crash or self.crash_fraction),
            "scenario.crash_round",
            "must be >= 1 when scenario.crash or crash_fraction is set",
        )
        require(self.slowdown >= 1, "scenario.slowdown", "must be >= 1 (1: no stragglers)")
        require(self.resample_every >= 0, "scenario.resample_every", "must be >= 0 (0: static)")
        require(self.resample_degree >= 1, "scenario.resample_degree", "must be >= 1")

    def check_nodes(self, count: int, mode: str, engine: str = "deployment") -> None:
        """Refuse node ids beyond `count` and, in Flower mode, what only gossip peers apply, and
        churn on a Flower `engine` without SuperNode processes to stop."""
        for key in ("attackers", "crash", "stragglers"):
            ids = getattr(self, key)
            require(all(i < count for i in ids), f"scenario.{key}", f"names a node >= nodes.count ({count})")
        require(
            self.partition_groups <= count, "scenario.partition_groups", f"must be <= nodes.count ({count})"
        )
        if mode == "flower":
            require(self.attack != "stale", "scenario.attack", "'stale' applies in gossip mode only")
            gossip_only = [key for key in GOSSIP_ONLY if getattr(self, key) != getattr(DEFAULT_SCENARIO, key)]
            require(
                not gossip_only,
                f"scenario.{gossip_only[0] if gossip_only else ''}",
                "applies in gossip mode only (Flower mode runs the attacks and SuperNode churn only)",
            )
            churn = [key for key in CHURN if getattr(self, key) != getattr(DEFAULT_SCENARIO, key)]
            require(
                engine == "deployment" or not self.churn,
                f"scenario.{churn[0] if churn else 'crash'}",
                f"needs flower.engine = 'deployment' (SuperNode processes to stop and restart); "
                f"flower.engine {engine!r} has none",
            )

    @property
    def churn(self) -> bool:
        """Whether nodes crash and rejoin."""
        return bool(self.crash_round or self.crash_rate)

    @property
    def network_faults(self) -> bool:
        """Whether pushes go through network faults (delay, loss, bandwidth cap, partition)."""
        return bool(self.delay_ms or self.loss or self.bandwidth_mbps or self.partition_groups)


GOSSIP_ONLY = (
    "delay_ms",
    "loss",
    "bandwidth_mbps",
    "partition_groups",
    "stragglers",
    "straggler_fraction",
    "resample_every",
)
CHURN = ("crash", "crash_fraction", "crash_round", "crash_rate")
DEFAULT_SCENARIO = ScenarioSection()
