"""The sections of an experiment config that say what is run, each a frozen dataclass that declares
the constraint of each field (`fedgossip.base.constraints`), checked at construction.

The task section is `fedgossip.tasks.TaskConfig`; the sections that tune the runtimes (launcher,
security, gossip, Flower, peer) are in `runtime_sections`. Every section rejects bad values with a
ValueError that names the offending key, so a typo in a TOML file never becomes a traceback deep
inside a node process.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar

from fedgossip.base.constraints import (
    Composite,
    Constrained,
    Constraint,
    InstanceOf,
    Interval,
    ListOf,
    Satisfies,
    StrOptions,
    TableOf,
    require,
)
from fedgossip.strategies import registry

GOSSIP_STRATEGIES = registry.names("gossip")
FLOWER_STRATEGIES = registry.names("flower")
FLOWER_BUILTIN_STRATEGIES = tuple(registry.FLOWER_BUILTINS)
# the generators of scenario/topology.py's table (a package above this one: a test ties them)
TOPOLOGIES = ("ring", "regular", "erdos-renyi", "small-world", "complete", "star", "file")
MAX_NAME = 100  # characters; the results folder adds "-YYYYmmdd-HHMMSS", file names stop at 255 bytes
FRACTION = Interval(Real, 0, 1)
NON_NEGATIVE = Interval(Real, 0)
NODE_IDS = ListOf(Interval(Integral, 0), distinct=True)


def link_ends(name: str) -> tuple[int, int]:
    """The two node ids of a link named "A-B" (ValueError if it is not two distinct ids)."""
    first, sep, second = name.partition("-")
    if not (sep and first.isdigit() and second.isdigit() and int(first) != int(second)):
        raise ValueError(f"not a link: {name!r}")
    return int(first), int(second)


def _is_link(name: object) -> bool:
    try:
        link_ends(name)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return False
    return True


LINK = Satisfies(_is_link, '"A-B" (two distinct node ids)', "0-0")


class FileName(Composite):
    """A plain file name (no path, no control characters) of at most `max_length` characters; its
    error says which of these the value breaks."""

    def __init__(self, max_length: int):
        self.max_length = max_length

    def check(self, key: str, value: Any) -> Any:
        problem = self.problem(value)
        if problem:
            raise ValueError(f"{key} {problem}")
        return value

    def problem(self, name: Any) -> str | None:
        """Why `name` is not a plain file name, or None if it is one."""
        if not isinstance(name, str):
            return f"must be {self}; got {name!r}"
        if not name.strip():
            return "must not be empty"
        if len(name) > self.max_length:
            return f"must be at most {self.max_length} characters; got {len(name)}"
        if name in (".", "..") or "/" in name or "\\" in name:
            return f"must be a plain file name (it names the results folder), not a path; got {name!r}"
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
            return f"must not contain control characters; got {name!r}"
        return None

    def __str__(self) -> str:
        return f"a plain file name of at most {self.max_length} characters"

    def invalid_example(self) -> str:
        return "../name"


@dataclass(frozen=True)
class ExperimentSection(Constrained):
    """What is run: its name, its mode (gossip or flower), how long, and the seed of every choice."""

    section_name = "experiment"
    constraints: ClassVar[dict[str, Constraint]] = {
        "name": FileName(MAX_NAME),
        "mode": StrOptions("gossip", "flower"),
        "rounds": Interval(Integral, 1),
        "seed": Interval(Integral, 0),
        "round_timeout": Interval(Real, 0, closed="neither"),
        "target_accuracy": Interval(Real, 0, 1, closed="right"),
        "consensus_every": Interval(Integral, 0),
        "evaluate_every": Interval(Integral, 1),
    }

    name: str = "experiment"
    mode: str = "gossip"
    rounds: int = 20
    seed: int = 0
    round_timeout: float = 30.0
    target_accuracy: float = 0.9
    consensus_every: int = 1  # gossip: the launcher measures the consensus distance every k rounds (0: off)
    evaluate_every: int = 1  # test figures every k rounds and at the last round (the others' are null)

    def check_together(self) -> None:
        require(
            self.evaluate_every <= self.rounds,
            "experiment.evaluate_every",
            f"must be at most experiment.rounds ({self.rounds}); got {self.evaluate_every}",
        )

    def evaluated(self, round_: int) -> bool:
        """Whether round `round_` evaluates the model on the test set: every `evaluate_every`-th
        round and the last one (the one place that decides it, for gossip, Flower and reports)."""
        return round_ % self.evaluate_every == 0 or round_ == self.rounds

    def whole_test_set(self, round_: int) -> bool:
        """Whether round `round_` evaluates on the whole test set rather than task.eval_examples'
        subset: the last round, so that final figures are exact."""
        return round_ == self.rounds


@dataclass(frozen=True)
class NodesSection(Constrained):
    """How many nodes learn together, and (gossip mode) how many peers share one OS process:
    `per_process = k` runs k peers per process, each with its own gRPC server, learner and round
    loop (hundreds of peers on one machine); a crash of a process ends only its k peers.
    `local_handoff`: peers of one process push to each other in process, not over gRPC (same
    checks, records and scenario faults; client/gossip/handoff.py)."""

    section_name = "nodes"
    constraints: ClassVar[dict[str, Constraint]] = {
        "count": Interval(Integral, 2),
        "per_process": Interval(Integral, 1),
        "local_handoff": InstanceOf(bool),
    }

    count: int = 8
    per_process: int = 1
    local_handoff: bool = True


@dataclass(frozen=True)
class TopologySection(Constrained):
    """Who gossips with whom (gossip mode only); built with networkx from the experiment seed."""

    section_name = "topology"
    constraints: ClassVar[dict[str, Constraint]] = {
        "kind": StrOptions(*TOPOLOGIES),
        "degree": Interval(Integral, 1),
        "probability": FRACTION,
        "file": InstanceOf(str),
    }

    kind: str = "ring"
    degree: int = 4
    probability: float = 0.3
    file: str = ""

    def check_together(self) -> None:
        require(self.kind != "file" or bool(self.file), "topology.file", "is required for kind 'file'")


@dataclass(frozen=True)
class StrategySection(Constrained):
    """How models are merged: a rule's name and its parameters (the `[strategy.params]` table).

    The name is one of `fedgossip.strategies.registry` or a user's "package.module:function"
    (whose params pass unchecked). A registered rule's params are checked here, and completed with
    the defaults, so the resolved config repeats the run exactly.
    """

    section_name = "strategy"
    constraints: ClassVar[dict[str, Constraint]] = {"name": InstanceOf(str), "params": InstanceOf(dict)}

    name: str = "average"
    params: dict[str, Any] = field(default_factory=dict)

    def check_together(self) -> None:
        try:
            entry = registry.lookup(self.name)
        except ValueError as err:
            raise ValueError(f"strategy.name {err}") from None
        object.__setattr__(self, "params", entry.bind(self.params, "strategy.params"))


# "none" and the names of scenario/attacks.py's registry (a package above this one: a test ties them)
ATTACKS = ("none", "sign-flip", "noise", "scale", "free-rider", "stale", "label-flip", "collective")


@dataclass(frozen=True)
class ScenarioSection(Constrained):
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
    crashed node loses its model and stops serving; its neighbours go down_rounds rounds on
    without it, and it rejoins for round crash + down_rounds with a neighbour's model of the
    round before (client/gossip/crash.py: the seeded plan, not timing, decides). Flower
    (deployment engine): the launcher stops the node's SuperNode process before that round and
    starts it again, same partition and key, for round crash + down_rounds (scenario/churn.py).
    Stragglers (ids, or a fraction, gossip) train `slowdown` times slower.
    Topology (gossip): every resample_every rounds each node draws resample_degree random
    neighbours (k-out, seeded, kept connected); 0: the static [topology] graph.
    link_delay_ms: extra delay of single links, {"A-B" = ms} (both directions, on top of delay_ms).
    network_layer: who applies the network settings: "sender" (the peers' senders, seeded, every
    loss and delay an event) or "kernel" (tc netem and a rate limiter per link between emulated
    hosts: launcher.network = "namespaces"; launcher/network/shaping.py).
    """

    section_name = "scenario"
    constraints: ClassVar[dict[str, Constraint]] = {
        "delay_ms": NON_NEGATIVE,
        "jitter_ms": NON_NEGATIVE,
        "loss": FRACTION,
        "bandwidth_mbps": NON_NEGATIVE,
        "partition_groups": Interval(Integral, 0),
        "partition_rounds": ListOf(Interval(Integral, 1)),
        "attack": StrOptions(*ATTACKS),
        "attackers": NODE_IDS,
        "attacker_fraction": FRACTION,
        "attack_scale": Interval(Real),
        "stale_rounds": Interval(Integral, 1),
        "target_label": Interval(Integral, 0),
        "trigger_size": Interval(Integral, 1),
        "crash": NODE_IDS,
        "crash_fraction": FRACTION,
        "crash_round": Interval(Integral, 0),
        "crash_rate": Interval(Real, 0, 1, closed="left"),
        "down_rounds": Interval(Integral, 1),
        "stragglers": NODE_IDS,
        "straggler_fraction": FRACTION,
        "slowdown": Interval(Real, 1),
        "resample_every": Interval(Integral, 0),
        "resample_degree": Interval(Integral, 1),
        "link_delay_ms": TableOf(LINK, NON_NEGATIVE),
        "network_layer": StrOptions("sender", "kernel"),
    }

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
    link_delay_ms: dict[str, float] = field(default_factory=dict)
    network_layer: str = "sender"

    def check_together(self) -> None:
        require(self.jitter_ms <= self.delay_ms, "scenario.jitter_ms", "must be <= scenario.delay_ms")
        require(self.partition_groups != 1, "scenario.partition_groups", "must be 0 (none) or >= 2")
        rounds = self.partition_rounds
        require(
            (len(rounds) == 2 and rounds[0] <= rounds[1]) == bool(self.partition_groups),
            "scenario.partition_rounds",
            "must be [first, last] rounds (1 <= first <= last), given with scenario.partition_groups",
        )
        require(
            self.attack != "none" or not (self.attackers or self.attacker_fraction),
            "scenario.attack",
            "must name an attack when scenario.attackers or attacker_fraction is set",
        )
        require(
            self.crash_round > 0 or not (self.crash or self.crash_fraction),
            "scenario.crash_round",
            "must be >= 1 when scenario.crash or crash_fraction is set",
        )

    def check_nodes(self, count: int, mode: str, engine: str = "deployment") -> None:
        """Refuse node ids beyond `count` and, in Flower mode, what only gossip peers apply, and
        churn on a Flower `engine` without SuperNode processes to stop."""
        for key in ("attackers", "crash", "stragglers"):
            ids = getattr(self, key)
            require(all(i < count for i in ids), f"scenario.{key}", f"names a node >= nodes.count ({count})")
        require(
            self.partition_groups <= count, "scenario.partition_groups", f"must be <= nodes.count ({count})"
        )
        require(
            all(max(link_ends(link)) < count for link in self.link_delay_ms),
            "scenario.link_delay_ms",
            f"names a node >= nodes.count ({count})",
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
        return bool(
            self.delay_ms or self.loss or self.bandwidth_mbps or self.partition_groups or self.link_delay_ms
        )


GOSSIP_ONLY = (
    "delay_ms",
    "link_delay_ms",
    "network_layer",
    "loss",
    "bandwidth_mbps",
    "partition_groups",
    "stragglers",
    "straggler_fraction",
    "resample_every",
)
CHURN = ("crash", "crash_fraction", "crash_round", "crash_rate")
DEFAULT_SCENARIO = ScenarioSection()
