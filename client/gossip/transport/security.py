"""Transport security of a gossip peer: TLS / mutual TLS credentials, the token, the link keys.

Plaintext is allowed on loopback; anywhere else it needs `insecure = true` in the peer section.
Every file is checked as it is read, each error naming its key: certificates and CA bundles must
hold PEM certificates, the key an unencrypted PEM private key of the certificate (gRPC takes any
bytes and fails later, as "Failed to bind" or as neighbours never reached). The files are read
where the peer runs, not when its config is built: the launcher writes some of them afterwards,
or on another machine (a Ray actor's). `check_node_config` reads them all before a peer starts.
Who a caller is (link keys, node certificates) is `fedgossip.client.gossip.transport.identity`'s job.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from fedgossip.client.gossip.transport.identity import TOKEN_KEY, LinkKeys
from fedgossip.config import ExperimentConfig, PeerSection

if TYPE_CHECKING:
    from cryptography import x509


def _read(peer: PeerSection, key: str) -> bytes:
    """The bytes of the file that `peer.KEY` names; ValueError naming the key if unreadable."""
    path = getattr(peer, key)
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"peer.{key}: cannot read {path}: {err.strerror}") from None


def _certificates(peer: PeerSection, key: str) -> tuple[bytes, list[x509.Certificate]]:
    """The PEM file `peer.KEY` names and the certificates in it; ValueError if it holds none."""
    from cryptography import x509  # with TLS only: ~40 ms of imports a peer process saves without

    data = _read(peer, key)
    try:
        return data, x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"peer.{key}: {getattr(peer, key)} holds no PEM certificate") from None


def _key_pair(peer: PeerSection) -> tuple[bytes, bytes]:
    """The PEM private key and certificate chain of this peer (`key_file`, `cert_file`), checked
    to be a key gRPC can use and the key of the certificate."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    chain, certificates = _certificates(peer, "cert_file")
    data = _read(peer, "key_file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"peer.key_file: {peer.key_file} is encrypted: a peer needs it plain") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"peer.key_file: {peer.key_file} holds no PEM private key") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != certificates[0].public_key().public_bytes(*spki):
        raise ValueError(
            f"peer.key_file: {peer.key_file} is not the key of the certificate in {peer.cert_file}"
        )
    return data, chain


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
    pair = [_key_pair(peer)]
    if peer.client_ca_file:
        client_ca, _ = _certificates(peer, "client_ca_file")
        return grpc.ssl_server_credentials(pair, client_ca, require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def channel_credentials(peer: PeerSection) -> grpc.ChannelCredentials | None:
    """Client credentials for talking to neighbours, or None for plaintext.

    With a CA the neighbours' certificates are verified; the peer's own certificate doubles as
    its client certificate for neighbours that demand mutual TLS.
    """
    if not peer.ca_file:
        return None
    ca, _ = _certificates(peer, "ca_file")
    if peer.cert_file:
        return grpc.ssl_channel_credentials(ca, *_key_pair(peer))
    return grpc.ssl_channel_credentials(ca)


def read_token(peer: PeerSection) -> str | None:
    """The shared secret from `peer.token_file`, or None when there is none."""
    if not peer.token_file:
        return None
    try:
        token = _read(peer, "token_file").decode().strip()
    except UnicodeDecodeError:
        raise ValueError(f"peer.token_file: {peer.token_file} is not text (UTF-8)") from None
    if not token:
        raise ValueError(f"peer.token_file: {peer.token_file} is empty")
    return token


def read_link_keys(peer: PeerSection) -> LinkKeys | None:
    """The keys of this peer's links from `peer.link_keys_file`, or None when there are none."""
    if not peer.link_keys_file:
        return None
    try:
        links = LinkKeys.load(peer.link_keys_file, peer.id)
    except ValueError as err:
        raise ValueError(f"peer.link_keys_file: {err}") from None
    unkeyed = sorted(set(map(int, peer.neighbours or {})) - set(links.keys))
    if unkeyed:
        raise ValueError(
            f"peer.link_keys_file: {peer.link_keys_file} has no key for the link to node {unkeyed[0]}"
        )
    return links


def call_metadata(token: str | None, links: LinkKeys | None, neighbour: int) -> tuple[tuple[str, str], ...]:
    """Call metadata for `neighbour`: the token and this peer's link key, where there are such."""
    metadata = ((TOKEN_KEY, token),) if token else ()
    return metadata + (links.metadata(neighbour) if links is not None else ())


def check_node_config(config: ExperimentConfig) -> None:
    """Check what a peer of this node config reads besides its task, before it starts anything:
    its [peer] section, plaintext off loopback, the TLS files, the token, the link keys. ValueError
    naming the key at fault."""
    peer = config.peer
    if peer is None:
        raise ValueError("a peer needs a [peer] section (id, listen, neighbours)")
    check_plaintext(peer)
    server_credentials(peer)
    channel_credentials(peer)
    read_token(peer)
    read_link_keys(peer)
