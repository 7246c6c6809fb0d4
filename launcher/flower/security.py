"""The TLS material and SuperNode keys of a secured Flower deployment, written into `secrets/`.

security.tls: a throwaway CA and a SuperLink certificate for 127.0.0.1/localhost (and its emulated
host's address with launcher.network = "namespaces", or its device's host in a bundle);
security.mutual_tls: on top, one SuperNode key pair per node (Flower's SuperNode authentication:
the SuperLink refuses a SuperNode whose public key was not registered).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedgossip.base.certificates import make_ca, make_certificate, make_openssh_key_pair
from fedgossip.base.ports import LOOPBACK
from fedgossip.config import ExperimentConfig


@dataclass(frozen=True)
class Security:
    """TLS material and SuperNode keys of a secured run (paths; None when off)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    node_keys: tuple[tuple[Path, Path], ...] = ()  # (private OpenSSH key, public OpenSSH key) per node

    @property
    def tls(self) -> bool:
        return self.ca is not None


def security_material(config: ExperimentConfig, secrets: Path, host: str = LOOPBACK) -> Security:
    """A throwaway CA and SuperLink certificate (security.tls; for `host` too, the SuperLink's
    emulated host) and one SuperNode key pair per node (security.mutual_tls: SuperNode
    authentication with registered keys)."""
    if not config.security.tls:
        return Security()
    ca = make_ca(secrets)
    cert = make_certificate(ca, secrets, "superlink", list(dict.fromkeys([host, LOOPBACK, "localhost"])))
    keys: tuple[tuple[Path, Path], ...] = ()
    if config.security.mutual_tls:
        keys = tuple(make_openssh_key_pair(secrets / f"supernode-{i}") for i in range(config.nodes.count))
    return Security(ca.cert, cert.cert, cert.key, keys)
