"""Emulated hosts in tests: the skip for machines that cannot make network namespaces and what a run
named by a prefix left behind (namespaces, links)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgossip.launcher.supervision.namespaces import NETNS_DIR, SYS_NET, unavailable_reason

_REASON = unavailable_reason()
needs_namespaces = pytest.mark.skipif(_REASON is not None, reason=f"no emulated hosts here: {_REASON}")


def network_leftovers(prefix: str = "fg") -> list[str]:
    """The namespaces and links (veths, bridges) whose names start with `prefix`."""
    namespaces = [p.name for p in NETNS_DIR.glob(f"{prefix}*")] if NETNS_DIR.is_dir() else []
    return sorted(namespaces + [p.name for p in Path(SYS_NET).glob(f"{prefix}*")])
