"""The kernel's network layer (scenario.network_layer = "kernel"): the scenario's link settings
applied by tc to the links between emulated hosts, instead of by the peers' senders.

Each host's link (`eth0` in its namespace) gets, on egress, an HTB root whose default class (the
gateway: the launcher's observer) is unshaped, and one class per other host, chosen by a u32
filter on the destination address: the class's rate is scenario.bandwidth_mbps (the rate
limiter; unlimited: RATE_CAP) and its leaf is a netem qdisc with delay_ms +- jitter_ms (uniform,
netem's default) plus the link's link_delay_ms, and `loss` per packet. So each direction of a
link is shaped at its sender's egress, as the sender layer shapes each direction at its push.

What differs from the sender layer (`client/gossip/transport/network.py`), by nature: the delay
is one way per packet, so a push (request out, reply back) takes two delays, not one; loss is per
packet, which TCP retransmits, so a push is slowed rather than lost (a lost model is never silent:
it ends in the sender's timeout, as a dead link does); jitter reorders packets; the draws come from
the kernel, not from the experiment seed, so two runs differ. Partitions by round cannot be
applied (the kernel knows no rounds; the config refuses them).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedgossip.config.sections import ScenarioSection, link_ends
from fedgossip.launcher.supervision.namespaces import (
    EmulatedHosts,
    NamespaceError,
    ip,
    new_prefix,
    remove_network,
)

RATE_CAP = "10gbit"  # an "unlimited" class: far above what a veth carries here
NETEM_LIMIT = 100_000  # packets a netem qdisc may hold back (its default, 1000, drops at high rates)
TC_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LinkShape:
    """What one direction of a link does to its packets."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_mbps: float = 0.0  # 0: unlimited

    def netem(self) -> str:
        """The netem options of this shape ("" if it delays and loses nothing)."""
        options = []
        if self.delay_ms > 0:
            options.append(
                f"delay {self.delay_ms:g}ms" + (f" {self.jitter_ms:g}ms" if self.jitter_ms > 0 else "")
            )
        if self.loss > 0:
            options.append(f"loss {self.loss * 100:g}%")
        return " ".join(options)

    def rate(self) -> str:
        """The HTB rate of this shape (tc's units)."""
        return f"{self.rate_mbps * 1000:g}kbit" if self.rate_mbps > 0 else RATE_CAP


def needs_netem(scenario: ScenarioSection) -> bool:
    """Whether the kernel layer needs netem for `scenario` (delay or loss; a rate needs HTB only)."""
    return bool(scenario.delay_ms or scenario.loss or any(scenario.link_delay_ms.values()))


def has_qdisc(kind: str) -> bool:
    """Whether this kernel has the qdisc `kind`: tried on the loopback of a throwaway namespace."""
    prefix = new_prefix()
    try:
        ip("netns", "add", f"{prefix}-0")
        probe = subprocess.run(
            ["tc", "-n", f"{prefix}-0", "qdisc", "add", "dev", "lo", "root", kind],
            capture_output=True,
            timeout=TC_TIMEOUT_S,
        )
        return probe.returncode == 0
    finally:
        remove_network(prefix)


def check_kernel_layer(scenario: ScenarioSection) -> None:
    """ValueError naming scenario.network_layer if this kernel cannot shape `scenario`'s links."""
    if scenario.network_layer == "kernel" and needs_netem(scenario) and not has_qdisc("netem"):
        raise ValueError(
            "scenario.network_layer 'kernel' cannot delay or lose packets on this machine: its kernel has "
            "no netem qdisc (module sch_netem, CONFIG_NET_SCH_NETEM); use network_layer = 'sender', or "
            "only scenario.bandwidth_mbps (HTB)"
        )


def link_shapes(scenario: ScenarioSection, count: int) -> dict[tuple[int, int], LinkShape]:
    """The shape of every direction (sender, receiver) between `count` nodes under `scenario`."""
    extra: dict[frozenset[int], float] = {}
    for name, delay in scenario.link_delay_ms.items():
        ends = frozenset(link_ends(name))
        extra[ends] = extra.get(ends, 0.0) + delay
    return {
        (a, b): LinkShape(
            delay_ms=scenario.delay_ms + extra.get(frozenset((a, b)), 0.0),
            jitter_ms=scenario.jitter_ms,
            loss=scenario.loss,
            rate_mbps=scenario.bandwidth_mbps,
        )
        for a in range(count)
        for b in range(count)
        if a != b
    }


def egress_commands(interface: str, shapes: Mapping[str, LinkShape]) -> list[str]:
    """The tc commands (batch lines) that shape `interface`'s egress per destination address.

    Class and qdisc ids are hexadecimal in tc: destination k gets class 1:(k+2) and netem handle
    (k+2):, so 1:1 stays the default class."""
    commands = [
        f"qdisc add dev {interface} root handle 1: htb default 1",
        f"class add dev {interface} parent 1: classid 1:1 htb rate {RATE_CAP}",
    ]
    dev = f"dev {interface}"
    for k, (address, shape) in enumerate(sorted(shapes.items())):
        minor = f"{k + 2:x}"
        rate = shape.rate()
        commands.append(f"class add {dev} parent 1: classid 1:{minor} htb rate {rate} ceil {rate}")
        netem = shape.netem()
        if netem:
            commands.append(
                f"qdisc add {dev} parent 1:{minor} handle {minor}: netem {netem} limit {NETEM_LIMIT}"
            )
        commands.append(
            f"filter add {dev} parent 1: protocol ip prio 1 u32 match ip dst {address}/32 flowid 1:{minor}"
        )
    return commands


def shape_links(hosts: EmulatedHosts, shapes: Mapping[tuple[int, int], LinkShape]) -> None:
    """Apply `shapes` ((host, host) -> shape) to the hosts' links: one `tc -batch` per host, all
    at once; NamespaceError naming the host and tc's message if one fails."""
    by_host: dict[int, dict[str, LinkShape]] = {}
    for (source, target), shape in shapes.items():
        by_host.setdefault(source, {})[hosts.addresses[target]] = shape
    started: list[tuple[subprocess.Popen, str, str]] = []
    for host, destinations in sorted(by_host.items()):
        batch = "\n".join(egress_commands(hosts.interface, destinations)) + "\n"
        argv = ["tc", "-n", hosts.namespaces[host], "-batch", "-"]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append((process, batch, hosts.namespaces[host]))
    failures = _finish_all(started)
    if failures:
        raise NamespaceError(f"shaping the links of {failures[0]}")


def _finish_all(started: Sequence[tuple[subprocess.Popen, str, str]]) -> list[str]:
    """Feed and wait for every tc process; the failures as "NAMESPACE: message"."""
    failures = []
    for process, batch, namespace in started:
        _, err = process.communicate(batch, timeout=TC_TIMEOUT_S)
        if process.returncode != 0:
            failures.append(f"{namespace}: {' '.join(err.split()) or f'exit {process.returncode}'}")
    return failures
