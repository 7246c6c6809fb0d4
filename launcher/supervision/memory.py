"""Refuse node counts that cannot fit in this machine's memory, before anything starts.

Without this check `nodes.count = 500` starts 500 processes and drives the machine out of memory.
The estimate is `fixed + nodes x per node`, from measurements of this project's processes running
side by side (Linux, /proc/PID/smaps_rollup; PSS: a process's own memory plus its share of the
shared libraries, which is what each extra process really costs), rounded up by about 10%:

    gossip peer, torch model (mlp, cnn)   RSS 256 MiB, PSS 166, private 154  (8 peers, digits)
    gossip peer, linear model             RSS 144 MiB, PSS  94, private  87  (8 peers, digits)
    Flower deployment, per node           SuperNode 100 + its SuperExec 93 + a ClientApp 240 PSS
    Flower deployment, once               SuperLink 103 + SuperExec 106 + ServerApp 290 PSS
    the launcher                          RSS 61 MiB, PSS 47
    forked peer, torch MLP (fork server)  RSS 217 MB, PSS 32 (64 peers, digits, all processes' PSS / 64)
    8 peers per forked process, MLP       PSS 1.40 GiB for 256 peers (5.6 MB per peer, 32 processes)
    25 peers per forked process, MLP      PSS 2.86 GiB for 1000 peers (3 MB per peer, 40 processes)

For forked and packed peers the estimate is `fork server + processes x FORKED + further peers x
PACKED_PEER`, kept well above those measurements (a process's private memory grows as it runs);
forked linear-model peers import scikit-learn after the fork (its import starts a thread), so they
are counted like fresh ones.

Flower's simulation engine and the in-process engine run virtual clients inside a few processes,
so their node count is not checked here. The memory available is psutil's
`virtual_memory().available` when psutil is installed, else MemAvailable of /proc/meminfo; where
neither exists the check is skipped. The check is in the launcher, not in config validation: node
configs are validated on small devices too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from fedgossip.config import ExperimentConfig
from fedgossip.launcher.runs.engines import configured_engine
from fedgossip.tasks.registry import MODELS, model_entry

MIB = 2**20
# By memory class (a model family's `memory`, `tasks.registry`), and "flower" for a Flower node.
PER_NODE_MIB = {"torch": 185, "linear": 105, "flower": 480}  # a process of its own, started afresh
FORKED_MIB = {"torch": 45, "linear": 105}  # a process forked by the fork server
PACKED_PEER_MIB = {"torch": 12, "linear": 12}  # each further peer of a process (nodes.per_process)
FORK_SERVER_MIB = {"torch": 120, "linear": 60}
FIXED_MIB = {"gossip": 60, "flower": 600}
PACKING = 25  # the nodes.per_process suggested when peers do not fit
SIMULATION = 'Flower\'s simulation engine (experiment.mode = "flower", flower.engine = "simulation")'


@dataclass(frozen=True)
class Estimate:
    """The memory a run needs: what it is made of and the total, in MiB."""

    what: str
    per_node_mib: int
    fixed_mib: int
    nodes: int

    @property
    def total_mib(self) -> int:
        return self.fixed_mib + self.nodes * self.per_node_mib

    def max_nodes(self, available_mib: float) -> int:
        """The most nodes of this kind that fit in `available_mib`."""
        return max(0, int((available_mib - self.fixed_mib) // self.per_node_mib))


def estimate(config: ExperimentConfig) -> Estimate | None:
    """The memory estimate of `config`, or None for engines whose nodes are not processes of
    this machine (Ray actors run on a cluster's machines)."""
    nodes = config.nodes.count
    if not configured_engine(config).node_processes:
        return None
    if config.experiment.mode == "flower":
        what = "Flower SuperNodes with their ClientApps"
        return Estimate(what, PER_NODE_MIB["flower"], FIXED_MIB["flower"], nodes)
    kind = model_entry(config.task.model).family.memory
    forked = config.launcher.fork_server
    per_process = min(config.nodes.per_process, nodes)
    process = (FORKED_MIB if forked else PER_NODE_MIB)[kind]
    per_node = math.ceil((process + (per_process - 1) * PACKED_PEER_MIB[kind]) / per_process)
    fixed = FIXED_MIB["gossip"] + (FORK_SERVER_MIB[kind] if forked else 0)
    how = f"{per_process} per process" if per_process > 1 else "one process each"
    how += ", forked" if forked else ""
    return Estimate(f"gossip peers with the {config.task.model} model, {how}", per_node, fixed, nodes)


def _lighter_models(kind: str) -> list[str]:
    """The registered models whose processes take less memory than those of memory class `kind`."""
    return [
        f'task.model = "{name}" (~{PER_NODE_MIB[entry.family.memory]} MiB per peer)'
        for name, entry in MODELS.items()
        if PER_NODE_MIB[entry.family.memory] < PER_NODE_MIB[kind]
    ]


def available_mib() -> float | None:
    """Memory available to new processes without swapping, in MiB (None if unknown)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return psutil.virtual_memory().available / MIB
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                return int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(config: ExperimentConfig, available: float | None = None) -> None:
    """Raise ValueError, with the numbers and what to do instead, if the run cannot fit in memory."""
    need = estimate(config)
    available = available_mib() if available is None else available
    if need is None or available is None or need.total_mib <= available:
        return
    alternatives = [f"at most {need.max_nodes(available)} nodes"]
    if config.experiment.mode == "gossip" and config.nodes.per_process < PACKING:
        packed = config.replace(
            nodes=dataclasses.replace(config.nodes, per_process=PACKING),
            launcher=dataclasses.replace(config.launcher, fork_server=True),
        )
        alternatives.append(
            f"nodes.per_process = {PACKING} with launcher.fork_server = true "
            f"(~{estimate(packed).per_node_mib} MiB per peer)"  # type: ignore[union-attr]
        )
    if config.experiment.mode == "gossip":
        alternatives.extend(_lighter_models(model_entry(config.task.model).family.memory))
    alternatives.append(SIMULATION)
    raise ValueError(
        f"nodes.count = {need.nodes} needs about {need.total_mib / 1024:.1f} GiB of memory "
        f"({need.nodes} {need.what}, ~{need.per_node_mib} MiB each) but this machine has "
        f"{available / 1024:.1f} GiB available: use {', or '.join(alternatives)}"
    )
