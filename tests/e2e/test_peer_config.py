"""`fedgossip peer CONFIG` (device mode) with a broken TLS file or a bad address: one `error:` line
naming the key, exit 2, before the peer starts anything (it used to bind and fail with "Failed to
bind", or to run its rounds alone when the CA bundle was broken, or to accept port 99999)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgossip.base.certificates import make_ca, make_certificate
from fedgossip.config import PeerSection
from tests.support import TASK, loopback_ports, run_cli, write_node_config

NOT_PEM = b"this is no PEM file\n"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at 80 columns when not on a terminal; the error is checked as one line."""
    monkeypatch.setenv("COLUMNS", "1000")


def tls_node_config(tmp_path: Path, **fields: str) -> Path:
    """Node 0's config with mutual TLS (valid files unless `fields` name others)."""
    ca = make_ca(tmp_path / "pki")
    cert = make_certificate(ca, tmp_path / "pki", "node-0", ["127.0.0.1"])
    port, neighbour = loopback_ports(2)
    valid = {"cert_file": cert.cert, "key_file": cert.key, "ca_file": ca.cert, "client_ca_file": ca.cert}
    files = {key: str(path) for key, path in valid.items()} | fields
    peer = PeerSection(id=0, listen=f"127.0.0.1:{port}", neighbours={"1": f"127.0.0.1:{neighbour}"}, **files)
    return write_node_config(tmp_path / "node-0.toml", peer, *TASK)


def assert_one_error(config: Path, *overrides: str, naming: str) -> None:
    sets = [arg for item in overrides for arg in ("--set", item)]
    result = run_cli("peer", str(config), *sets, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert output.count("\n") == 0 and output.startswith(f"error: {naming}"), output


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", ["cert_file", "key_file", "ca_file", "client_ca_file"])
def test_a_non_pem_tls_file_is_one_error_line_naming_its_key(tmp_path, key):
    broken = tmp_path / "broken.pem"
    broken.write_bytes(NOT_PEM)
    config = tls_node_config(tmp_path, **{key: str(broken)})
    assert_one_error(config, naming=f"peer.{key}: {broken} holds no PEM")


@pytest.mark.timeout(60)
def test_a_key_that_is_not_the_certificates_is_one_error_line(tmp_path):
    other = make_certificate(make_ca(tmp_path / "other"), tmp_path / "other", "node-0", ["127.0.0.1"])
    config = tls_node_config(tmp_path, key_file=str(other.key))
    assert_one_error(config, naming=f"peer.key_file: {other.key} is not the key of the certificate")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "setting, key",
    [
        ("peer.neighbours.1=127.0.0.1:99999", "peer.neighbours.1"),
        ("peer.neighbours.1=127.0.0.1", "peer.neighbours.1"),
        ("peer.neighbours.1=:7101", "peer.neighbours.1"),
        ("peer.listen=127.0.0.1:99999", "peer.listen"),
    ],
)
def test_a_bad_address_is_one_error_line_naming_its_key(tmp_path, setting, key):
    assert_one_error(tls_node_config(tmp_path), setting, naming=f"{key} must be HOST:PORT with a port in")
