"""The experiment config: TOML in, validated frozen dataclasses out, and back to TOML.

`load_config` is the one entry point used by the launcher, the gossip peer and the Flower apps, so a
config means the same thing to every part. Unknown sections and keys, wrong types and bad values all
raise ValueError naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgossip.base.constraints import TYPE_NAMES, StrOptions
from fedgossip.config.privacy import PrivacySection
from fedgossip.config.runtime_sections import (
    FlowerSection,
    GossipSection,
    LauncherSection,
    PeerSection,
    SecuritySection,
)
from fedgossip.config.sections import (
    ExperimentSection,
    NodesSection,
    ScenarioSection,
    StrategySection,
    TopologySection,
)
from fedgossip.config.secure_aggregation import check_secure_aggregation
from fedgossip.schema.codecs import CODECS
from fedgossip.strategies import mechanisms, registry
from fedgossip.tasks import TaskConfig
from fedgossip.tasks.registry import model_entry

FEDGMM_RULES = ("average", "fedavg")  # the rules that aggregate task.model "fedgmm" as FedGMM

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

QUICKSTART = Path(__file__).with_name("quickstart.toml")
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; this bounds reading /dev/zero or a huge file
INT64 = (-(2**63), 2**63 - 1)  # TOML integers are 64-bit; larger ones would crash numpy/protobuf


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: one section per TOML table."""

    experiment: ExperimentSection = field(default_factory=ExperimentSection)
    task: TaskConfig = field(default_factory=TaskConfig)
    nodes: NodesSection = field(default_factory=NodesSection)
    topology: TopologySection = field(default_factory=TopologySection)
    strategy: StrategySection = field(default_factory=StrategySection)
    security: SecuritySection = field(default_factory=SecuritySection)
    gossip: GossipSection = field(default_factory=GossipSection)
    flower: FlowerSection = field(default_factory=FlowerSection)
    launcher: LauncherSection = field(default_factory=LauncherSection)
    scenario: ScenarioSection = field(default_factory=ScenarioSection)
    privacy: PrivacySection = field(default_factory=PrivacySection)
    peer: PeerSection | None = None

    def __post_init__(self) -> None:
        mode, name = self.experiment.mode, self.strategy.name
        if not registry.is_user_reference(name):
            StrOptions(*registry.names(mode)).check(f"strategy.name (mode {mode})", name)
        elif mode == "gossip":  # every peer runs it: import it now (a Flower server imports it itself)
            try:
                registry.resolve(name)
            except ValueError as err:
                raise ValueError(f"strategy.name {err}") from None
        self.scenario.check_nodes(self.nodes.count, mode, self.flower.engine)
        self.privacy.check_task(self.task)
        if self.launcher.engine in ("ray", "simulation") and mode != "gossip":
            raise ValueError(
                f'launcher.engine "{self.launcher.engine}" runs gossip peers; Flower mode has its own '
                'engines (flower.engine: "simulation" runs on Ray)'
            )
        own = mechanisms.mechanism(name)
        if own is not None:
            own.check_nodes(self.strategy.params, self.nodes.count)
            if own.task_model is not None and self.task.model != own.task_model:
                raise ValueError(
                    f"strategy.name {name!r} needs task.model = {own.task_model!r}; got {self.task.model!r}"
                )
        sampled = max(int(self.nodes.count * self.flower.fraction_train), min(2, self.nodes.count))
        self.privacy.check_flower(mode, name, sampled, own is not None)
        check_secure_aggregation(self, sampled)
        if self.gossip.schedule == "async":
            self._check_async()
        if self.gossip.schedule == "ticks":
            self._check_ticks()
        if self.launcher.engine == "simulation":
            self._check_simulation()
        self._check_network()
        if mode == "gossip" and CODECS[self.gossip.codec].differential:
            self._check_differential_codec()
        if mode == "flower" and self.flower.codec != "none" and own is not None:
            raise ValueError(  # a mechanism's replies may carry more than the model a codec packs
                f"flower.codec {self.flower.codec!r} packs a merge rule's train replies; "
                f"strategy.name {name!r} is a mechanism: use flower.codec = 'none'"
            )
        sends_mu = ("proximal_mu", "flower.proximal_mu") in getattr(registry.lookup(name), "config_args", ())
        if sends_mu and self.flower.proximal_mu > 0 and not model_entry(self.task.model).family.proximal:
            raise ValueError(
                f"strategy.name {name!r} trains with a proximal term (flower.proximal_mu > 0) that "
                f"task.model {self.task.model!r} does not have: "
                "use a torch model or flower.proximal_mu = 0"
            )
        if self.task.model == "fedgmm" and name not in FEDGMM_RULES:  # its weights are weighted sums
            raise ValueError(
                "task.model 'fedgmm' travels as responsibility-weighted sums that only a weighted mean "
                f"aggregates into FedGMM: strategy.name must be one of {', '.join(FEDGMM_RULES)}; "
                f"got {name!r}"
            )
        if self.task.model == "fedgmm" and mode == "gossip" and self.task.init != "shared":
            raise ValueError(  # component k must mean the same on every peer for their sums to mix
                "task.model 'fedgmm' in gossip mode averages the peers' components by position: "
                f'task.init must be "shared" (one initial mixture for every node); got {self.task.init!r}'
            )

    def _check_async(self) -> None:
        """Refuse what asynchronous gossip cannot run: it has no common rounds, which Flower mode,
        fair gossip's rounds of selection and churn's crash rounds are made of."""
        refused = (
            (self.experiment.mode != "gossip", f"experiment.mode {self.experiment.mode!r}", "gossip mode"),
            (
                not mechanisms.runs_with(self.strategy.name, "async"),
                f"strategy.name {self.strategy.name!r}",
                "synchronous rounds of selection",
            ),
            (self.scenario.churn, "scenario.crash_round/crash_rate", "synchronous crash rounds"),
        )
        for refuse, key, needs in refused:
            if refuse:
                raise ValueError(f"gossip.schedule 'async' cannot run with {key}: it needs {needs}")

    def _check_ticks(self) -> None:
        """Refuse what the tick schedule cannot run: it has no rounds in common (Flower mode,
        mechanisms' rounds of selection, churn's crash rounds) and trains on a fixed partition."""
        refused = (
            (self.experiment.mode != "gossip", f"experiment.mode {self.experiment.mode!r}", "gossip mode"),
            (
                mechanisms.mechanism(self.strategy.name) is not None,
                f"strategy.name {self.strategy.name!r}",
                "its rounds of selection",
            ),
            (self.scenario.churn, "scenario.crash_round/crash_rate", "synchronous crash rounds"),
            (bool(self.task.stream_chunks), "task.stream_chunks", "a round's chunk of the stream"),
        )
        for refuse, key, needs in refused:
            if refuse:
                raise ValueError(f"gossip.schedule 'ticks' cannot run with {key}: it needs {needs}")

    def _check_network(self) -> None:
        """Refuse what emulated hosts (launcher.network = "namespaces") and the kernel's network
        layer cannot run: another engine, plaintext not said to be meant, partitions by round."""
        namespaces = self.launcher.network == "namespaces"
        if namespaces and self.launcher.engine != "local":
            raise ValueError(
                f"launcher.network 'namespaces' puts the local engine's node processes in emulated hosts; "
                f"launcher.engine {self.launcher.engine!r} has none (use launcher.engine = 'local')"
            )
        if namespaces and self.experiment.mode == "flower" and self.flower.engine != "deployment":
            raise ValueError(
                "launcher.network 'namespaces' puts the SuperLink and SuperNodes of flower.engine = "
                f"'deployment' in emulated hosts; flower.engine {self.flower.engine!r} has no processes "
                "to place"
            )
        if namespaces and not self.security.tls and not self.security.insecure:
            raise ValueError(
                "launcher.network 'namespaces' puts the peers off loopback, where plaintext gRPC is "
                "refused: set security.tls = true (or security.insecure = true to mean plaintext)"
            )
        if self.scenario.network_layer == "kernel":
            if not namespaces:
                raise ValueError(
                    "scenario.network_layer 'kernel' shapes the links between emulated hosts: it needs "
                    "launcher.network = 'namespaces'"
                )
            if self.nodes.per_process > 1:
                raise ValueError(
                    "nodes.per_process > 1 is not supported by scenario.network_layer = 'kernel': the peers "
                    "of one process hand models over in memory, past any link the kernel shapes"
                )
            if self.scenario.partition_groups:
                raise ValueError(
                    "scenario.partition_groups is not supported by scenario.network_layer = 'kernel' yet "
                    "(the kernel knows no rounds): use network_layer = 'sender'"
                )

    def _check_differential_codec(self) -> None:
        """Refuse what a differential codec (top-k with error feedback, CHOCO) cannot run with: a
        push is a difference to the copy each neighbour keeps of the sender, so every neighbour
        must get every push, in order (no lost, replaced or withheld push)."""
        refused = (
            (self.gossip.schedule != "sync", f"gossip.schedule {self.gossip.schedule!r}", "sync rounds"),
            (
                mechanisms.mechanism(self.strategy.name) is not None,
                f"strategy.name {self.strategy.name!r}",
                "every neighbour to get every push (a mechanism may withhold some)",
            ),
            (self.scenario.churn, "scenario.crash_round/crash_rate", "no lost push (a crash loses some)"),
            (
                self.scenario.network_faults,
                "scenario.delay_ms/loss/bandwidth_mbps/partition_groups",
                "no lost push (faults lose some)",
            ),
            (bool(self.scenario.resample_every), "scenario.resample_every", "fixed neighbours"),
        )
        for refuse, key, needs in refused:
            if refuse:
                raise ValueError(
                    f"gossip.codec {self.gossip.codec!r} cannot run with {key}: it needs {needs}"
                )

    def _check_simulation(self) -> None:
        """Refuse what the virtual-time engine (all peers in one process, no sockets) does not
        run yet: transport security, and the scenario parts that need wall time or sockets."""
        scenario, security = self.scenario, self.security
        refused = (
            (security.tls, "security.tls", "true"),
            (security.mutual_tls, "security.mutual_tls", "true"),
            (security.token, "security.token", "true"),
            (scenario.churn, "scenario.crash_round/crash_rate", "crashes"),
            (scenario.network_faults, "scenario.delay_ms/loss/bandwidth_mbps/partition_groups", "faults"),
            (bool(scenario.stragglers or scenario.straggler_fraction), "scenario.stragglers", "stragglers"),
        )
        for refuse, key, value in refused:
            if refuse:
                raise ValueError(
                    f"{key} ({value}) is not supported by launcher.engine = 'simulation' yet "
                    "(all peers in one process, no sockets, compute takes no virtual time)"
                )

    @property
    def observes_consensus(self) -> bool:
        """Whether the launcher measures the consensus distance (every experiment.consensus_every
        rounds, over the peers' models of one round): never for async gossip, which has no rounds
        in common; not yet in the virtual-time engine, whose peers serve no GetModel."""
        return (
            bool(self.experiment.consensus_every)
            and self.gossip.schedule == "sync"
            and self.launcher.engine != "simulation"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML-ready) of every section, defaults included."""
        out = {}
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if section is not None:
                out[f.name] = {k: _plain(v) for k, v in dataclasses.asdict(section).items() if v is not None}
        return out

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with whole sections replaced."""
        return dataclasses.replace(self, **sections)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a TOML config (the built-in quickstart when `path` is None) and apply `--set` overrides."""
    data = read_config_data(path)
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data)


def read_config_data(path: str | Path | None = None) -> dict[str, Any]:
    """The TOML table of a config file (the built-in quickstart when `path` is None), unchecked."""
    source = Path(path) if path is not None else QUICKSTART
    try:
        return tomllib.loads(read_config_text(source))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source} is not valid TOML: {err}") from None


def read_config_text(source: Path) -> str:
    """The text of a config file; every way of not being one (missing, a directory, unreadable,
    too big, not UTF-8) is a ValueError naming the path and the reason."""
    try:
        with open(source, "rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"config file not found: {source}") from None
    except OSError as err:
        raise ValueError(f"cannot read config file {source}: {err.strerror or err}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"config file {source} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {source} is not UTF-8 text (byte {err.start}: {err.reason})") from None


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `section.key=value` override in place; the value is parsed as TOML, else a string.

    The key may go deeper into nested tables: `strategy.params.f=1`.
    """
    key, sep, raw = item.partition("=")
    path = key.strip().split(".")
    if not sep or len(path) < 2 or not all(path):
        raise ValueError(f"--set expects section.key=value; got {item!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    set_key(data, key.strip(), value)


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted `key` (`section.key`, or deeper: `strategy.params.f`) of `data` in place."""
    path = key.split(".")
    if len(path) < 2 or not all(path):
        raise ValueError(f"a key is section.key; got {key!r}")
    table = data
    for depth, name in enumerate(path[:-1]):
        table = table.setdefault(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"--set {key.strip()}: {'.'.join(path[: depth + 1])} is not a table")
    table[path[-1]] = value


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a nested dict (parsed TOML) into an ExperimentConfig."""
    hints = field_hints(ExperimentConfig)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"unknown section [{unknown[0]}]; known: {', '.join(hints)}")
    sections = {}
    for name, table in data.items():
        if not isinstance(table, Mapping):
            raise ValueError(f"[{name}] must be a table")
        sections[name] = build_section(_section_class(hints[name]), table, name)
    return ExperimentConfig(**sections)


def build_section(cls: type, table: Mapping[str, Any], name: str) -> Any:
    """Build dataclass `cls` from a TOML table, checking key names and value types."""
    hints = field_hints(cls)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise ValueError(f"unknown key {name}.{unknown[0]}; known: {', '.join(hints)}")
    values = {key: _coerce(value, hints[key], f"{name}.{key}") for key, value in table.items()}
    return cls(**values)


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """The type hint of each field of dataclass `cls`, resolved once per class and process (do not
    modify it): `typing.get_type_hints` compiles every annotation of the class, 17 ms for a
    config's sections, which every peer process paid to read its node config."""
    every_hint = typing.get_type_hints(cls)  # the class variables too (section_name, constraints)
    return {f.name: every_hint[f.name] for f in dataclasses.fields(cls)}


def _resolve_section_hints() -> None:
    """Resolve every section's hints now, at import: the fork server imports this module, so the
    peers it forks read their node configs without resolving them again."""
    for hint in field_hints(ExperimentConfig).values():
        field_hints(_section_class(hint))


def dump_toml(config: ExperimentConfig) -> str:
    """The config as TOML text, defaults included, so a run can be repeated exactly."""
    import tomli_w

    return tomli_w.dumps(config.to_dict())


def _section_class(hint: Any) -> type:
    """The dataclass inside an `X | None` hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` (see _check_value) against a field's type hint; widen int to float and lists
    to tuples. A table (`dict[str, X]`) has each value checked against X, errors naming `key.NAME`;
    `Any` takes any TOML value (a strategy's params, checked by the strategy registry).
    """
    _check_value(value, key)
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    table = next((o for o in options if typing.get_origin(o) is dict), None)
    if table is not None and isinstance(value, Mapping):
        item = typing.get_args(table)[1]
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    for option in options:
        ok, converted = _try_type(value, option)
        if ok:
            return converted
    expected = " or ".join(_type_name(o) for o in options if o is not type(None))
    raise ValueError(f"{key} must be {expected}; got {value!r}")


def _check_value(value: Any, key: str) -> None:
    """Refuse what every key of every section refuses: non-finite numbers (inf, nan), integers
    beyond 64 bits and text that is not valid Unicode (lone surrogates from undecodable argv)."""
    if isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            _check_value(item, f"{key}[{index}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_value(item, f"{key}.{name}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number; got {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{key} must fit in 64 bits; got {value}")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{key} must be valid UTF-8 text; got {value!r}") from None


def _try_type(value: Any, option: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(option)
    if option is Any:
        return True, value
    if option is type(None):
        return value is None, None
    if option is bool:
        return isinstance(value, bool), value
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if option is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if option is str:
        return isinstance(value, str), value
    if origin is tuple and isinstance(value, (list, tuple)):
        (item,) = typing.get_args(option)[:1]
        converted = [_try_type(v, item) for v in value]
        return all(ok for ok, _ in converted), tuple(v for _, v in converted)
    return False, None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(option: Any) -> str:
    origin = typing.get_origin(option)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(option)[0])}"
    if origin is dict:
        return "a table"
    return TYPE_NAMES.get(option, str(option))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_resolve_section_hints()
