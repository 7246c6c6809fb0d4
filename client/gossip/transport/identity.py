"""Who is calling: a peer's identity proved by a per-link key or by the node id in its certificate.

Link keys: every edge {i, j} of the gossip graph has its own random secret, known only to i and j
(the launcher writes one file per node, mode 0600, listing the keys of that node's links). A caller
sends its node id and the key of the link to the callee; the callee compares it, in constant time,
with the key it holds for that neighbour. A neighbour therefore cannot pose as anyone else to a third
peer: it holds no key of their links. With mutual TLS, a certificate whose common name is `node-ID`
proves the same identity (`fedgossip certs --node ID`); when both are present they must agree.

The observer (the launcher, fetching models to measure consensus) holds one more secret, known to
every peer of the run, and presents it as node `observer` (with mutual TLS, a certificate named
`observer`). Peers accept it for GetModel only: it is no node id, so every push with it is refused.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

NODE_KEY = "x-fedgossip-node"
LINK_KEY = "x-fedgossip-link"
TOKEN_KEY = "x-fedgossip-token"
NODE_NAME = re.compile(r"node-(\d+)")
OBSERVER = "observer"  # the identity (and certificate name) of a run's observer
OBSERVER_FILE = "observer.secret"


class Unauthenticated(Exception):
    """A caller whose credentials are missing or wrong."""


def certificate_name(node: int) -> str:
    """The common name that a node's certificate carries."""
    return f"node-{node}"


def node_of_certificate(name: str) -> int | None:
    """The node id in a certificate's common name (`node-ID`), None for any other name."""
    match = NODE_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class LinkKeys:
    """The secret of each of one node's links, by neighbour id."""

    node: int
    keys: Mapping[int, str]
    observer: str | None = None  # the observer's secret, if the run has an observer

    @classmethod
    def load(cls, path: str | Path, node: int) -> LinkKeys:
        """Read a link-keys file (JSON: {"node": ID, "links": {"NEIGHBOUR": "SECRET", ...}})."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as err:
            raise ValueError(f"cannot read link keys {path}: {err.strerror}") from None
        except ValueError:
            raise ValueError(f"link keys {path} are not valid JSON") from None
        links = data.get("links") if isinstance(data, dict) else None
        if not isinstance(links, dict) or data.get("node") != node:
            raise ValueError(f"link keys {path} are not node {node}'s")
        observer = data.get(OBSERVER)
        given = [*links.values(), *([observer] if observer is not None else [])]
        if not all(k.isdigit() for k in links) or not all(isinstance(v, str) and len(v) >= 32 for v in given):
            raise ValueError(f"link keys {path}: each link needs a secret of at least 32 characters")
        return cls(node, {int(k): v for k, v in links.items()}, observer)

    def metadata(self, neighbour: int) -> tuple[tuple[str, str], ...]:
        """Call metadata that proves this node's identity to `neighbour`."""
        return ((NODE_KEY, str(self.node)), (LINK_KEY, self.keys[neighbour]))

    def verify(self, metadata: Mapping[str, str]) -> int:
        """The caller's node id if its link key is right; Unauthenticated otherwise."""
        claimed = metadata.get(NODE_KEY, "")
        key = self.keys.get(int(claimed)) if claimed.isdigit() else None
        if key is None or not hmac.compare_digest(metadata.get(LINK_KEY, "").encode(), key.encode()):
            raise Unauthenticated("missing or wrong link key")
        return int(claimed)

    def verify_observer(self, metadata: Mapping[str, str]) -> None:
        """Return if the caller presents the observer's secret; Unauthenticated otherwise."""
        given = metadata.get(LINK_KEY, "").encode()
        if self.observer is None or not hmac.compare_digest(given, self.observer.encode()):
            raise Unauthenticated("missing or wrong observer key")


def observer_metadata(secret: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that proves the observer's identity to a peer (add the token, if any)."""
    return ((NODE_KEY, OBSERVER), (LINK_KEY, secret))


def write_link_keys(
    edges: Iterable[tuple[int, int]], nodes: Iterable[int], folder: Path, *, observer: bool = False
) -> dict[int, Path]:
    """A fresh secret per edge; one file per node (mode 0600) with the keys of its links. With
    `observer`, one more secret for the observer, in every node's file and in `OBSERVER_FILE`."""
    links: dict[int, dict[str, str]] = {node: {} for node in nodes}
    extra = {OBSERVER: secrets.token_hex(32)} if observer else {}
    for i, j in edges:
        secret = secrets.token_hex(32)
        links[i][str(j)] = secret
        links[j][str(i)] = secret
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = {}
    for node, keys in links.items():
        content = json.dumps({"node": node, "links": keys, **extra})
        paths[node] = _write_secret(folder / f"node-{node}.links", content)
    if observer:
        _write_secret(folder / OBSERVER_FILE, extra[OBSERVER])
    return paths


def read_observer_secret(folder: Path) -> str:
    """The observer's secret written by `write_link_keys(..., observer=True)` into `folder`."""
    return (folder / OBSERVER_FILE).read_text().strip()


def _write_secret(path: Path, text: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(text)
    return path


def token_matches(metadata: Mapping[str, str], token: str | None) -> bool:
    """Constant-time check of the shared-secret token; always true when the peer has none."""
    if token is None:
        return True
    return hmac.compare_digest(metadata.get(TOKEN_KEY, "").encode(), token.encode())
