"""Emulated hosts: Linux network namespaces on one bridge, each with its own address (iproute2).

A run that asks for `launcher.network = "namespaces"` puts every node process in a host of its own,
so peers talk over real addresses, routing and (with tc, launcher/network/) real link delays
instead of 127.0.0.1. The API, kept small for every user (the gossip and Flower launchers, the
deployment bundles' tests, benchmarks/bench_namespaces.py):

    with EmulatedHosts(4) as hosts:          # root, `ip` needed: `unavailable_reason()` says why not
        hosts.addresses                       # ["10.N.0.2", "10.N.0.3", ...]: host i's address
        hosts.gateway                         # "10.N.0.1": this (the default) namespace on the bridge
        hosts.namespaces[i], hosts.interface  # host i's namespace and its link's name in it ("eth0")
        process = hosts.run(i, argv, **popen_kwargs)   # subprocess.Popen of argv inside host i
        argv_in_host = hosts.command(i, argv)          # ["ip", "netns", "exec", NAMESPACE, *argv]
    # closed: every process still in a host is killed, every namespace, veth and the bridge removed

What it makes, all named after a per-run prefix `fg` + 6 hex digits (`hosts.prefix`), so cleanup
and the "nothing left" checks find exactly what one run made: namespaces PREFIX-0..PREFIX-(N-1),
a bridge PREFIXbr in the default namespace holding the gateway address, and per host a veth pair
(PREFIXh<i> on the bridge, `eth0` inside the host, loopback up). The hosts share one /16 out of
10.0.0.0/8 that overlaps no route of the default namespace (chosen under a file lock, so two runs
at once take two subnets); the only route this adds to the default namespace is that subnet's,
on the run's own bridge. The launcher reaches every host from the default namespace (the consensus
observer, the records on the node processes' stdout pipes are unaffected).

Cleanup when the creating process dies without running `close()` (SIGKILL): the hosts are
registered with the process's run watchdog (launcher/supervision/watchdog.py) before anything is
created, and the watchdog calls `remove_network(prefix)` after it stopped the run's processes; a
process without a watchdog (a test, a benchmark) gets one of its own for the hosts' life, which
also stops, at `close()`, the processes it started meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from fedgossip.launcher.supervision.watchdog import remove_on_exit, watchdog

NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
LOCK_PATH = Path("/run/fedgossip-netns.lock")
INTERFACE = "eth0"  # every host's link, inside its namespace
SUBNETS = range(64, 255)  # second octet of the 10.X.0.0/16 a run may take
MAX_HOSTS = 60000  # addresses of a /16 after the gateway (and interface names <= 15 characters)
IP_TIMEOUT_S = 60.0
CLEANUP_TIMEOUT_S = 1.0
"""How long to wait for the kernel to drop a removed namespace's veths before deleting them one by
one. A namespace with no process left can outlive `netns del` while something of its own still
holds it (likely a killed peer's orphaned TCP connection): seen on Linux 6.18, 2 of 4 hosts' veths
kept up to 10 s after a SIGKILLed run; the batched cleanup otherwise takes milliseconds."""
CLONE_NEWNET = 0x40000000
PREFIX = re.compile(r"fg[0-9a-f]{6}")


class NamespaceError(RuntimeError):
    """The hosts could not be made (a command of iproute2 failed, no free subnet): one line."""


def unavailable_reason() -> str | None:
    """Why this machine cannot make emulated hosts (not root, no `ip`/`tc`, no network namespaces),
    or None if it can."""
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} (iproute2) not found on PATH"
    if os.geteuid() != 0:
        return f"network namespaces need root (this process runs as uid {os.geteuid()})"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces (/proc/self/ns/net missing)"
    return None


def check_machine(network: str) -> None:
    """ValueError naming launcher.network if it asks for emulated hosts this machine cannot make."""
    reason = unavailable_reason() if network == "namespaces" else None
    if reason is not None:
        raise ValueError(f"launcher.network 'namespaces' cannot run on this machine: {reason}")


def enter(namespace: str) -> None:  # pragma: no cover - runs in a forked child before it starts
    """Move this (single-threaded) process into the network namespace `namespace` (setns(2))."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    with open(NETNS_DIR / namespace) as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}: {os.strerror(ctypes.get_errno())}")


def in_namespace(namespace: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` in the named network `namespace` (`ip netns exec`, which then execs
    it: same PID), or `argv` itself for ""."""
    return ["ip", "netns", "exec", namespace, *argv] if namespace else list(argv)


def new_prefix() -> str:
    """A fresh per-run prefix: `fg` and 6 random hex digits."""
    return "fg" + secrets.token_hex(3)


def _ip(args: Sequence[str], batch: str = "") -> subprocess.Popen:
    """Start `ip ARGS` (with `-batch -` reading `batch` if given); stdout/stderr piped."""
    argv = ["ip", *args, *(["-batch", "-"] if batch else [])]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen, batch: str = "", what: str = "") -> str:
    """Wait for an `ip` process; NamespaceError naming `what` and iproute2's message if it failed."""
    out, err = process.communicate(batch or None, timeout=IP_TIMEOUT_S)
    if process.returncode != 0:
        message = " ".join(err.split()) or f"exit {process.returncode}"
        raise NamespaceError(f"{what or ' '.join(map(str, process.args))}: {message}")
    return out


def ip(*args: str, batch: str = "", what: str = "") -> str:
    """Run `ip ARGS` (a batch of commands on stdin if given) and return its output."""
    return _finish(_ip(args, batch), batch, what)


def taken_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of the default namespace's routes (the default route excluded)."""
    networks = []
    for line in ip("-4", "route", "show", "table", "all").splitlines():
        destination = line.split()[0] if line.split() else ""
        if destination in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit"):
            destination = line.split()[1] if destination != "default" and len(line.split()) > 1 else ""
        with contextlib.suppress(ValueError):
            if destination:
                networks.append(ipaddress.IPv4Network(destination, strict=False))
    return networks


def free_subnet(taken: Sequence[ipaddress.IPv4Network], start: int) -> ipaddress.IPv4Network:
    """The first 10.X.0.0/16 (X from SUBNETS, from position `start` on, wrapping) that overlaps none
    of `taken` (routes wider than /8, such as a default route, are ignored)."""
    order = list(SUBNETS)
    start %= len(order)
    for octet in order[start:] + order[:start]:
        subnet = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        if not any(net.prefixlen >= 8 and net.overlaps(subnet) for net in taken):
            return subnet
    raise NamespaceError("no free 10.X.0.0/16 subnet for emulated hosts: every one overlaps a route")


def processes_in(namespaces: Sequence[str]) -> list[int]:
    """The PIDs of the processes in the named network `namespaces` (one pass over /proc)."""
    inodes = set()
    for namespace in namespaces:
        with contextlib.suppress(OSError):
            inodes.add(f"net:[{(NETNS_DIR / namespace).stat().st_ino}]")
    pids = []
    for entry in os.scandir("/proc") if inodes else ():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/ns/net") in inodes:
                    pids.append(int(entry.name))
    return pids


def remove_network(prefix: str) -> list[str]:
    """Remove everything a run named `prefix` (`fg` + 6 hex digits) made: kill the processes left in
    its namespaces, delete its links (veths, bridge) and namespaces. Returns the names it removed;
    idempotent."""
    if not PREFIX.fullmatch(prefix):
        return []
    namespaces = sorted(p.name for p in NETNS_DIR.glob(f"{prefix}-*")) if NETNS_DIR.is_dir() else []
    for pid in processes_in(namespaces):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    links = sorted(p.name for p in SYS_NET.glob(f"{prefix}*"))
    # deleting a namespace takes its veth pair with it, in the kernel's batched cleanup: far
    # quicker than deleting each veth (one RCU grace period each); wait for it, then delete stragglers
    bridge = [f"link del {prefix}br"] if f"{prefix}br" in links else []
    _ip_quietly(bridge + [f"netns del {ns}" for ns in namespaces])
    deadline = time.monotonic() + CLEANUP_TIMEOUT_S
    while SYS_NET.is_dir() and any(SYS_NET.glob(f"{prefix}*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    _ip_quietly([f"link del {p.name}" for p in SYS_NET.glob(f"{prefix}*")])
    return links + namespaces


def _ip_quietly(commands: Sequence[str]) -> None:
    """Run a batch of `ip` commands, on past failures (-force: a link already gone)."""
    if commands:
        with contextlib.suppress(NamespaceError, subprocess.TimeoutExpired):
            ip("-force", batch="\n".join(commands) + "\n")


class EmulatedHosts:
    """`count` emulated hosts (see the module's docstring), made at construction, removed by
    `close()` (or at the end of a `with` block)."""

    def __init__(self, count: int, prefix: str | None = None) -> None:
        if not 1 <= count <= MAX_HOSTS:
            raise ValueError(f"count must be in 1..{MAX_HOSTS}, got {count}")
        if prefix is not None and not PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix must be `fg` and 6 hex digits, got {prefix!r}")
        self.prefix = prefix or new_prefix()
        self.bridge = f"{self.prefix}br"
        self.interface = INTERFACE
        self.namespaces = [f"{self.prefix}-{i}" for i in range(count)]
        self._cleanup = contextlib.ExitStack()
        self.closed = False
        try:
            if not remove_on_exit(self.prefix):  # no run watchdog in this process: one for the hosts
                self._cleanup.enter_context(watchdog())
                remove_on_exit(self.prefix)
            self._cleanup.callback(remove_network, self.prefix)
            self.subnet = self._make()
        except BaseException:
            self.close()
            raise
        hosts = self.subnet.hosts()
        self.gateway = str(next(hosts))
        self.addresses = [str(next(hosts)) for _ in range(count)]
        self._configure()

    def _make(self) -> ipaddress.IPv4Network:
        """The bridge with its gateway address, the namespaces and their veths; returns the subnet."""
        LOCK_PATH.touch(exist_ok=True)
        with open(LOCK_PATH) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once: the second sees the first's route
            subnet = free_subnet(taken_networks(), int(self.prefix[2:], 16))
            gateway = next(subnet.hosts())
            commands = [
                f"link add {self.bridge} type bridge",
                f"addr add {gateway}/{subnet.prefixlen} dev {self.bridge}",
                f"link set {self.bridge} up",
            ]
            for i, namespace in enumerate(self.namespaces):
                veth = self.port(i)
                commands += [
                    f"netns add {namespace}",
                    f"link add {veth} type veth peer name {INTERFACE} netns {namespace}",
                    f"link set {veth} master {self.bridge} up",
                ]
            ip(batch="\n".join(commands) + "\n", what=f"creating {len(self.namespaces)} emulated hosts")
        return subnet

    def _configure(self) -> None:
        """Loopback up and the address on every host's link (one `ip -n` per host, all at once)."""
        try:
            started = []
            for namespace, address in zip(self.namespaces, self.addresses, strict=True):
                batch = (
                    f"link set lo up\naddr add {address}/{self.subnet.prefixlen} dev {INTERFACE}\n"
                    f"link set {INTERFACE} up\n"
                )
                started.append((_ip(["-n", namespace], batch), batch, namespace))
            failures = []
            for process, batch, namespace in started:
                try:
                    _finish(process, batch, f"configuring {namespace}")
                except NamespaceError as error:
                    failures.append(str(error))
            if failures:
                raise NamespaceError(failures[0])
        except BaseException:
            self.close()
            raise

    def port(self, i: int) -> str:
        """The bridge's end of host `i`'s veth (in the default namespace)."""
        return f"{self.prefix}h{i}"

    def command(self, i: int, argv: Sequence[str]) -> list[str]:
        """argv that runs `argv` inside host `i` (its network namespace)."""
        return in_namespace(self.namespaces[i], argv)

    def run(self, i: int, argv: Sequence[str], **popen_kwargs) -> subprocess.Popen:
        """Start `argv` inside host `i`: subprocess.Popen with `popen_kwargs`."""
        return subprocess.Popen(self.command(i, argv), **popen_kwargs)

    def close(self) -> None:
        """Kill what still runs in the hosts, remove the namespaces, veths and bridge; idempotent."""
        if not self.closed:
            self.closed = True
            self._cleanup.close()

    def __enter__(self) -> EmulatedHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
