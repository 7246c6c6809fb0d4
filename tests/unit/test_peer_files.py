"""A peer's TLS files, token and link keys are checked as they are read (client/gossip/transport/
security.py), each error naming its key; its addresses by the [peer] section's constraints."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fedgossip.base.certificates import make_ca, make_certificate
from fedgossip.client.gossip.transport.identity import write_link_keys
from fedgossip.client.gossip.transport.security import check_node_config
from fedgossip.config import PeerSection, load_config
from tests.support import TASK

BROKEN = {
    "not PEM": (b"not a certificate\n", "holds no PEM"),
    "a PEM block of garbage": (
        b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n",
        "holds no PEM",
    ),
    "empty": (b"", "holds no PEM"),
}


def tls_peer(tmp_path: Path, **fields) -> PeerSection:
    """Node 0 with mutual TLS, a token and link keys, all files valid (`fields` replace some)."""
    ca = make_ca(tmp_path / "pki")
    cert = make_certificate(ca, tmp_path / "pki", "node-0", ["127.0.0.1"])
    token = tmp_path / "token"
    token.write_text("s3cret")
    keys = write_link_keys([(0, 1)], [0, 1], tmp_path / "secrets")
    files = {
        "ca_file": str(ca.cert),
        "cert_file": str(cert.cert),
        "key_file": str(cert.key),
        "client_ca_file": str(ca.cert),
        "token_file": str(token),
        "link_keys_file": str(keys[0]),
    }
    return PeerSection(id=0, listen="127.0.0.1:0", neighbours={"1": "127.0.0.1:7101"}, **{**files, **fields})


def node_config(peer: PeerSection):
    return load_config(None, TASK).replace(peer=peer)


def test_valid_files_pass(tmp_path):
    check_node_config(node_config(tls_peer(tmp_path)))


@pytest.mark.parametrize("key", ["cert_file", "key_file", "ca_file", "client_ca_file"])
@pytest.mark.parametrize("content, problem", BROKEN.values(), ids=BROKEN)
def test_a_broken_pem_file_is_refused_naming_its_key(tmp_path, key, content, problem):
    broken = tmp_path / "broken.pem"
    broken.write_bytes(content)
    with pytest.raises(ValueError, match=f"^peer.{key}: {broken} {problem}"):
        check_node_config(node_config(tls_peer(tmp_path, **{key: str(broken)})))


def test_a_key_of_another_certificate_or_encrypted_is_refused(tmp_path):
    other = make_certificate(make_ca(tmp_path / "other"), tmp_path / "other", "node-0", ["127.0.0.1"])
    with pytest.raises(ValueError, match=f"^peer.key_file: {other.key} is not the key of the certificate"):
        check_node_config(node_config(tls_peer(tmp_path, key_file=str(other.key))))
    key = serialization.load_pem_private_key(other.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    encryption = serialization.BestAvailableEncryption(b"pass")
    locked.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    with pytest.raises(ValueError, match=f"^peer.key_file: {locked} is encrypted"):
        check_node_config(node_config(tls_peer(tmp_path, key_file=str(locked))))


@pytest.mark.parametrize(
    "key", ["cert_file", "key_file", "ca_file", "client_ca_file", "token_file", "link_keys_file"]
)
def test_a_missing_file_is_refused_naming_its_key(tmp_path, key):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match=f"^peer.{key}: .*{missing}.*No such file"):
        check_node_config(node_config(tls_peer(tmp_path, **{key: str(missing)})))


def test_bad_token_and_link_keys_are_refused_naming_their_key(tmp_path):
    binary, listed = tmp_path / "binary", tmp_path / "listed"
    binary.write_bytes(b"\xff\xfe")
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"^peer.token_file: .* is not text"):
        check_node_config(node_config(tls_peer(tmp_path, token_file=str(binary))))
    with pytest.raises(ValueError, match=r"^peer.link_keys_file: .* are not node 0's"):
        check_node_config(node_config(tls_peer(tmp_path, link_keys_file=str(listed))))


def test_a_node_config_without_a_peer_section_is_refused():
    with pytest.raises(ValueError, match=r"a peer needs a \[peer\] section"):
        check_node_config(load_config(None, TASK))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "127.0.0.1",
        ":7101",
        "[::1",
        "::1:7101",
        "[nonsense]:7101",
        "my host:7101",
        "127.0.0.1:-1",
        "127.0.0.1:\u0667\u0661",  # digits, but not ASCII ones
    ],
)
def test_a_bad_neighbour_address_is_refused_naming_the_neighbour(address):
    with pytest.raises(ValueError, match=r"^peer.neighbours.1 must be HOST:PORT with a port in 1..65535"):
        PeerSection(id=0, neighbours={"1": address})


@pytest.mark.parametrize(
    "address", ["127.0.0.1:7101", "localhost:1", "[::1]:65535", "peer-3.example.org:7100"]
)
def test_good_addresses_pass(address):
    assert PeerSection(id=0, listen=address, neighbours={"1": address}).neighbours == {"1": address}


def test_a_peer_may_listen_on_port_0_but_not_beyond_65535():
    assert PeerSection(listen="0.0.0.0:0").listen == "0.0.0.0:0"
    with pytest.raises(ValueError, match=r"^peer.listen must be HOST:PORT with a port in 0..65535"):
        PeerSection(listen="127.0.0.1:65536")
