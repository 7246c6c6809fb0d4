"""The kernel's network layer (scenario.network_layer = "kernel"): the scenario's link settings
applied by tc to the links between emulated hosts, instead of by the peers' senders.

Each direction of a link is shaped where it enters its receiver: on the egress of the receiver's
bridge port (`PREFIXh<j>`, the veth end on the run's bridge), past the sender's TCP stack, so a
dropped packet is lost on the wire as far as TCP knows. Each port gets an HTB root whose default
class (the gateway: the launcher's observer) is unshaped and one class per other host, chosen by a
u32 filter on the source address: its rate is scenario.bandwidth_mbps (the rate limiter;
unlimited: RATE_CAP) and, with a delay, its leaf is a netem qdisc with delay_ms +- jitter_ms
(uniform, netem's default) plus the link's link_delay_ms. Loss needs no netem: a classic-BPF
filter (cls_bpf) sends each packet of the source to a class whose pfifo holds none (a drop) with
probability `loss`, drawn by the kernel (`ld rand`).

Kernels without netem (CONFIG_NET_SCH_NETEM unset: this project's CI, many container and WSL
kernels): the delays go to one delay process per run (launcher/network/delays.py, queue_delay.py)
instead, and tc keeps the rate and the loss. In each receiving host, an nftables rule at the input
hook queues the packets of each delayed source (NFQUEUE); the process lets each go after delay_ms
+ link_delay_ms (+- jitter_ms, uniform) from its arrival in the queue: still one way per packet,
behind the rate and the loss, seen by TCP. What differs from netem: the delay's precision is a
user-space timer's (measured: a TCP echo's round trip over a link delayed 50 ms one way took
50.5-50.6 ms, at a load average of 10-20 on 2 cores; netem's is the kernel's hrtimer); every
delayed packet costs the process a netlink message and a verdict (GSO packets whole: ~1,600 for
100 MB; its CPU is in its log, delays.log, and in the README); its jitter draws come
from the experiment seed's "network" stream per link, but which packet draws which still depends
on timing; netem's queue holds NETEM_LIMIT packets, a netfilter queue the same (QUEUE_MAXLEN), but
its messages may overflow the process's socket buffer (the process logs it; those packets stay held
until the run ends and TCP sends them again). If the process dies mid-run its links pass undelayed
(the rules' bypass): the launcher sees it, says so and stops the run (exit 1), never a silent run
with other links than the scenario's.

What differs from the sender layer (`client/gossip/transport/network.py`), by nature: the delay
is one way per packet, so a push (request out, reply back) takes two delays, not one; loss is per
packet (as the stack hands them to the veth: up to 64 KB with its segmentation offload), which
TCP retransmits, so a push is slowed rather than lost (a lost model is never silent: it ends in
the sender's timeout, as a dead link does); jitter reorders packets; the draws come from the
kernel, not from the experiment seed, so two runs differ. Partitions by round cannot be applied
(the kernel knows no rounds; the config refuses them).
"""

from __future__ import annotations

import functools
import ipaddress
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from fedgossip.config.sections import ScenarioSection, link_ends
from fedgossip.launcher.network.delays import unavailable_reason as queue_unavailable_reason
from fedgossip.launcher.supervision.namespaces import (
    EmulatedHosts,
    NamespaceError,
    ip,
    new_prefix,
    remove_network,
)

DROP = "ffff"  # the class (and qdisc handle) of dropped packets
QUANTUM = 60_000  # bytes an HTB class sends per turn (explicit: no "quantum is big" warnings at 10gbit)
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

    def without_delay(self) -> LinkShape:
        """This shape but its delay and jitter (left to the delay process)."""
        return LinkShape(loss=self.loss, rate_mbps=self.rate_mbps)

    def netem(self) -> str:
        """The netem options of this shape ("" if it delays nothing: no netem)."""
        if self.delay_ms <= 0:
            return ""
        return f"delay {self.delay_ms:g}ms" + (f" {self.jitter_ms:g}ms" if self.jitter_ms > 0 else "")

    def rate(self) -> str:
        """The HTB rate of this shape (tc's units)."""
        return f"{self.rate_mbps * 1000:g}kbit" if self.rate_mbps > 0 else RATE_CAP


def needs_netem(scenario: ScenarioSection) -> bool:
    """Whether the kernel layer needs netem for `scenario`: to delay (a rate needs HTB, loss cls_bpf)."""
    return bool(scenario.delay_ms or any(scenario.link_delay_ms.values()))


@functools.cache
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


def queues_delays(scenario: ScenarioSection) -> bool:
    """Whether the kernel layer delays `scenario`'s links through netfilter queues (no netem here)."""
    return scenario.network_layer == "kernel" and needs_netem(scenario) and not has_qdisc("netem")


def check_kernel_layer(scenario: ScenarioSection) -> None:
    """ValueError naming scenario.network_layer if this kernel cannot shape `scenario`'s links:
    delays need netem or, failing it, netfilter queues (launcher/network/delays.py)."""
    reason = queue_unavailable_reason() if queues_delays(scenario) else None
    if reason is not None:
        raise ValueError(
            "scenario.network_layer 'kernel' cannot delay packets on this machine: its kernel has no "
            "netem qdisc (module sch_netem, CONFIG_NET_SCH_NETEM) and netfilter queues cannot stand in "
            f"({reason}); use network_layer = 'sender', or only scenario.loss and bandwidth_mbps"
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


def loss_filter(source: str, loss: float) -> str:
    """The classic-BPF program (tc's `bytecode` form) that matches an IPv4 packet from `source`
    with probability `loss`: the frame's ethertype (offset 12), source address (26), a random
    32-bit number (the ancillary load SKF_AD_RANDOM) below loss x 2^32."""
    threshold = min(round(loss * 2**32), 2**32 - 1)
    program = [
        (0x28, 0, 0, 12),  # ldh [12]: ethertype
        (0x15, 0, 5, 0x0800),  # jeq IPv4, else no match
        (0x20, 0, 0, 26),  # ld [26]: source address
        (0x15, 0, 3, int(ipaddress.IPv4Address(source))),  # jeq source, else no match
        (0x20, 0, 0, 0xFFFFF038),  # ld rand (SKF_AD_OFF + SKF_AD_RANDOM)
        (0x35, 1, 0, threshold),  # jge threshold: no match
        (0x06, 0, 0, 0xFFFFFFFF),  # ret -1: match (the filter's class)
        (0x06, 0, 0, 0),  # ret 0: no match
    ]
    return f"{len(program)}," + ",".join(f"{code} {jt} {jf} {k}" for code, jt, jf, k in program)


def ingress_commands(port: str, shapes: Mapping[str, LinkShape]) -> list[str]:
    """The tc commands (batch lines) that shape what `port` (a host's bridge port) delivers to its
    host, per source address (`shapes`: source address -> shape).

    Class and qdisc ids are hexadecimal in tc: source k gets class 1:(k+2) and netem handle (k+2):;
    1:1 is the default class and 1:ffff the drop (a pfifo of length 0)."""
    dev = f"dev {port}"
    htb = f"htb rate {RATE_CAP} quantum {QUANTUM}"
    commands = [
        f"qdisc add {dev} root handle 1: htb default 1",
        f"class add {dev} parent 1: classid 1:1 {htb}",
    ]
    if any(shape.loss > 0 for shape in shapes.values()):
        commands += [
            f"class add {dev} parent 1: classid 1:{DROP} {htb}",
            f"qdisc add {dev} parent 1:{DROP} handle {DROP}: pfifo limit 0",
        ]
    for k, (address, shape) in enumerate(sorted(shapes.items())):
        minor = f"{k + 2:x}"
        rate = shape.rate()
        commands.append(
            f"class add {dev} parent 1: classid 1:{minor} htb rate {rate} ceil {rate} quantum {QUANTUM}"
        )
        netem = shape.netem()
        if netem:
            commands.append(
                f"qdisc add {dev} parent 1:{minor} handle {minor}: netem {netem} limit {NETEM_LIMIT}"
            )
        if shape.loss > 0:
            program = loss_filter(address, shape.loss)
            commands.append(
                f'filter add {dev} parent 1: protocol ip prio 1 bpf bytecode "{program}" flowid 1:{DROP}'
            )
        commands.append(
            f"filter add {dev} parent 1: protocol ip prio 2 u32 match ip src {address}/32 flowid 1:{minor}"
        )
    return commands


def shape_links(hosts: EmulatedHosts, shapes: Mapping[tuple[int, int], LinkShape]) -> None:
    """Apply `shapes` ((sender host, receiver host) -> shape) at the receivers' bridge ports: one
    `tc -batch` for all; NamespaceError with tc's message if it fails."""
    by_receiver: dict[int, dict[str, LinkShape]] = {}
    for (source, target), shape in shapes.items():
        by_receiver.setdefault(target, {})[hosts.addresses[source]] = shape
    batch = [
        line
        for host, sources in sorted(by_receiver.items())
        for line in ingress_commands(hosts.port(host), sources)
    ]
    process = subprocess.Popen(
        ["tc", "-batch", "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, err = process.communicate("\n".join(batch) + "\n", timeout=TC_TIMEOUT_S)
    if process.returncode != 0:
        problems = [line for line in err.splitlines() if not line.startswith("Warning")]
        raise NamespaceError(f"tc: {' '.join(' '.join(problems).split()) or f'exit {process.returncode}'}")
