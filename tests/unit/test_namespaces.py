"""The emulated hosts' checks without making any: why a machine cannot (faked inputs), the choice of
a subnet that overlaps no route, and the names a cleanup may touch."""

from __future__ import annotations

import ipaddress

import pytest

from fedgossip.launcher.supervision import namespaces
from fedgossip.launcher.supervision.namespaces import EmulatedHosts, free_subnet, remove_network


def test_not_root_is_named(monkeypatch):
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(namespaces.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    assert namespaces.unavailable_reason() == "network namespaces need root (this process runs as uid 1000)"


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(namespaces.shutil, "which", lambda tool: None if tool == "tc" else "/usr/sbin/ip")
    assert namespaces.unavailable_reason() == "tc (iproute2) not found on PATH"
    monkeypatch.setattr(namespaces.shutil, "which", lambda tool: None)
    assert namespaces.unavailable_reason() == "ip and tc (iproute2) not found on PATH"


def test_root_with_tools_can(monkeypatch):
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 0)
    monkeypatch.setattr(namespaces.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    assert namespaces.unavailable_reason() is None


def test_subnet_overlaps_no_route():
    taken = [
        ipaddress.IPv4Network(net)
        for net in ("0.0.0.0/0", "10.64.0.0/16", "10.65.3.0/24", "10.66.0.0/15", "192.0.2.0/24")
    ]
    # the default route is ignored; 10.64 (same), 10.65 (a /24 inside), 10.66-67 (a /15) are taken
    assert free_subnet(taken, 0) == ipaddress.IPv4Network("10.68.0.0/16")
    assert free_subnet(taken, 10) == ipaddress.IPv4Network("10.74.0.0/16")
    assert free_subnet(taken, 190) == ipaddress.IPv4Network("10.254.0.0/16")  # the last of 64..254
    everything = [ipaddress.IPv4Network("10.0.0.0/8")]
    with pytest.raises(namespaces.NamespaceError, match="no free 10\\.X"):
        free_subnet(everything, 0)


def test_cleanup_touches_only_run_names():
    assert remove_network("eth") == []  # not a run's prefix: nothing is even looked at
    assert remove_network("fg") == []
    with pytest.raises(ValueError, match="prefix must be"):
        EmulatedHosts(2, prefix="eth0")
    with pytest.raises(ValueError, match="count must be"):
        EmulatedHosts(0)
