"""Transport security of a gossip peer: TLS / mutual TLS credentials, the token, the link keys.

Plaintext is allowed on loopback; anywhere else it needs `insecure = true` in the peer section.
Who a caller is (link keys, node certificates) is `fedgossip.client.gossip.transport.identity`'s job.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from fedgossip.client.gossip.transport.identity import TOKEN_KEY, LinkKeys
from fedgossip.config import PeerSection


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost addresses ("host:port")."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plaintext(peer: PeerSection) -> None:
    """Refuse plaintext on a non-loopback address unless the user said `insecure = true`."""
    if peer.cert_file or peer.insecure:
        return
    addresses = [peer.listen, *(peer.neighbours or {}).values()]
    exposed = [a for a in addresses if not is_loopback(a)]
    if exposed:
        raise ValueError(
            f"plaintext gRPC on non-loopback address {exposed[0]}: give peer.cert_file/key_file "
            "(TLS) or set peer.insecure = true explicitly"
        )


def server_credentials(peer: PeerSection) -> grpc.ServerCredentials | None:
    """TLS server credentials (mutual TLS when a client CA is given), or None for plaintext."""
    if not peer.cert_file:
        return None
    pair = [(_read(peer.key_file), _read(peer.cert_file))]
    if peer.client_ca_file:
        return grpc.ssl_server_credentials(pair, _read(peer.client_ca_file), require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def channel_credentials(peer: PeerSection) -> grpc.ChannelCredentials | None:
    """Client credentials for talking to neighbours, or None for plaintext.

    With a CA the neighbours' certificates are verified; the peer's own certificate doubles as
    its client certificate for neighbours that demand mutual TLS.
    """
    if not peer.ca_file:
        return None
    if peer.cert_file:
        return grpc.ssl_channel_credentials(_read(peer.ca_file), _read(peer.key_file), _read(peer.cert_file))
    return grpc.ssl_channel_credentials(_read(peer.ca_file))


def read_token(peer: PeerSection) -> str | None:
    """The shared secret from `peer.token_file`, or None when there is none."""
    if not peer.token_file:
        return None
    token = _read(peer.token_file).decode().strip()
    if not token:
        raise ValueError(f"token file {peer.token_file} is empty")
    return token


def read_link_keys(peer: PeerSection) -> LinkKeys | None:
    """The keys of this peer's links from `peer.link_keys_file`, or None when there are none."""
    if not peer.link_keys_file:
        return None
    links = LinkKeys.load(peer.link_keys_file, peer.id)
    unkeyed = sorted(set(map(int, peer.neighbours or {})) - set(links.keys))
    if unkeyed:
        raise ValueError(f"{peer.link_keys_file} has no key for the link to node {unkeyed[0]}")
    return links


def call_metadata(token: str | None, links: LinkKeys | None, neighbour: int) -> tuple[tuple[str, str], ...]:
    """Call metadata for `neighbour`: the token and this peer's link key, where there are such."""
    metadata = ((TOKEN_KEY, token),) if token else ()
    return metadata + (links.metadata(neighbour) if links is not None else ())
