"""The inventory of a device deployment (HOSTS.toml): where each node of an experiment runs.

    [defaults]                  # optional; what every device below does not say itself
    port = 7000                 # gossip: the peer's port; Flower: the SuperNode's local port
    user = "fedgossip"          # the systemd unit's User= (default: none, i.e. root)
    dir = "/opt/fedgossip"      # where the device folders are copied (DIR/NAME; the systemd unit)
    command = "fedgossip"       # the fedgossip command on the device (e.g. a venv's bin/fedgossip)

    [nodes.0]                   # one table per node id, 0 .. nodes.count-1
    host = "10.0.0.11"          # an IP address or a DNS name the other devices reach it by
    [nodes.1]
    host = "pi-2.local"
    port = 7001
    listen = "0.0.0.0"          # the address the peer binds (default: host if an IP, else 0.0.0.0)

    [superlink]                 # Flower mode only: the coordinator
    host = "10.0.0.1"
    port = 9092                 # the port SuperNodes connect to (default: [defaults] port, else 9092)

Every fault is a ValueError naming the key at fault (`fedgossip bundle` exits 2 with it): a node
missing or unknown, a host that is neither an IP address nor a DNS name, a port out of 1..65535,
two devices on one host and port.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PORT = 7000
SUPERLINK_PORT = 9092
DEFAULT_DIR = "/opt/fedgossip"
HOST_KEYS = frozenset({"host", "port", "user", "dir", "command", "listen"})
DEFAULT_KEYS = HOST_KEYS - {"host", "listen"}
LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class Host:
    """One device: its address as the others reach it, the address it binds, and how it is run."""

    host: str
    port: int
    listen_host: str
    user: str = ""
    dir: str = DEFAULT_DIR
    command: str = "fedgossip"

    @property
    def address(self) -> str:
        """HOST:PORT as its neighbours dial it (an IPv6 address in brackets)."""
        return join_host_port(self.host, self.port)

    @property
    def listen(self) -> str:
        """HOST:PORT the device binds."""
        return join_host_port(self.listen_host, self.port)


@dataclass(frozen=True)
class Inventory:
    """The devices of a deployment: one per node, and the SuperLink's in Flower mode."""

    nodes: dict[int, Host]
    superlink: Host | None = None


def is_host(host: object) -> bool:
    """Whether `host` is an IPv4/IPv6 address or a DNS name (RFC 1123 labels, 253 characters at most)."""
    if not isinstance(host, str) or not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host.removesuffix(".")
    labels = name.split(".")
    return len(name) <= 253 and all(LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def join_host_port(host: str, port: int) -> str:
    """HOST:PORT, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_inventory(path: str | Path, nodes: int, flower: bool = False) -> Inventory:
    """Read and check HOSTS.toml for an experiment of `nodes` nodes (`flower`: a [superlink] too)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read the inventory {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"the inventory {path} is not valid TOML: {err}") from None
    return inventory_of(data, nodes, flower)


def inventory_of(data: dict[str, Any], nodes: int, flower: bool = False) -> Inventory:
    """The inventory of a parsed HOSTS.toml (see the module docstring); ValueError naming the key."""
    unknown = sorted(set(data) - {"defaults", "nodes", "superlink"})
    if unknown:
        raise ValueError(f"hosts.{unknown[0]}: unknown table (expected defaults, nodes, superlink)")
    defaults = _table(data.get("defaults", {}), "hosts.defaults")
    extra = sorted(set(defaults) - DEFAULT_KEYS)
    if extra:
        raise ValueError(
            f"hosts.defaults.{extra[0]}: unknown key (expected {', '.join(sorted(DEFAULT_KEYS))})"
        )
    table = _table(data.get("nodes", {}), "hosts.nodes")
    ids = [f"{node}" for node in range(nodes)]
    strays = sorted(set(table) - set(ids))
    if strays:
        raise ValueError(f"hosts.nodes.{strays[0]}: no such node (the experiment has nodes 0..{nodes - 1})")
    missing = [node for node in ids if node not in table]
    if missing:
        raise ValueError(f"hosts.nodes.{missing[0]}: node {missing[0]} has no host in the inventory")
    hosts = {int(node): _host(table[node], defaults, f"hosts.nodes.{node}", DEFAULT_PORT) for node in ids}
    superlink = None
    if flower:
        if "superlink" not in data:
            raise ValueError("hosts.superlink: a Flower deployment needs the SuperLink's host")
        superlink = _host(data["superlink"], defaults, "hosts.superlink", SUPERLINK_PORT)
    _check_distinct(hosts, superlink)
    return Inventory(hosts, superlink)


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{key}: must be a table, got {value!r}")
    return value


def _host(value: Any, defaults: dict[str, Any], key: str, default_port: int) -> Host:
    """One device's table, with the defaults filled in; ValueError naming the key at fault."""
    entry = {**defaults, **_table(value, key)}
    extra = sorted(set(entry) - HOST_KEYS)
    if extra:
        raise ValueError(f"{key}.{extra[0]}: unknown key (expected {', '.join(sorted(HOST_KEYS))})")
    host = entry.get("host")
    if host is None:
        raise ValueError(f"{key}.host: missing (an IP address or a DNS name)")
    if not is_host(host):
        raise ValueError(f"{key}.host: {host!r} is not an IP address or a DNS name")
    port = entry.get("port", default_port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{key}.port: {port!r} is not a port in 1..65535")
    listen = entry.get("listen", host if _is_ip(host) else "0.0.0.0")
    if not isinstance(listen, str) or not _is_ip(listen):
        raise ValueError(f"{key}.listen: {listen!r} is not an IP address to bind")
    for text in ("user", "dir", "command"):
        if text in entry and (not isinstance(entry[text], str) or not entry[text].strip()):
            raise ValueError(f"{key}.{text}: must be a non-empty string, got {entry[text]!r}")
    return Host(
        host,
        port,
        listen,
        entry.get("user", ""),
        entry.get("dir", DEFAULT_DIR),
        entry.get("command", "fedgossip"),
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_distinct(nodes: dict[int, Host], superlink: Host | None) -> None:
    """Two devices on one host and port cannot both listen: ValueError naming the second one."""
    seen: dict[tuple[str, int], str] = {}
    named = [(f"hosts.nodes.{node}", host) for node, host in nodes.items()]
    named += [("hosts.superlink", superlink)] if superlink is not None else []
    for key, host in named:
        where = (host.host.lower().removesuffix("."), host.port)
        if where in seen:
            raise ValueError(f"{key}: {host.address} is also {seen[where]}'s address (host and port)")
        seen[where] = key
