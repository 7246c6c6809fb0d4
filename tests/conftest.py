"""Pytest configuration: gRPC's fork handlers off before anything imports grpc (the tests start
processes beside live gRPC calls, as the launcher does: see fedgossip/launcher/__init__.py), a
deterministic Hypothesis profile for CI, and the `e2e` marker on every test under tests/e2e/
(the multi-process ones): `pytest -m "not e2e"` runs the fast unit tests alone."""

import fedgossip.launcher  # noqa: F401, I001 - first: sets GRPC_ENABLE_FORK_SUPPORT before grpc loads

from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("fedgossip", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("fedgossip")

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
