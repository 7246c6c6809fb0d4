"""Pytest configuration: gRPC's fork handlers off before anything imports grpc (the tests start
processes beside live gRPC calls, as the launcher does: see fedgossip/launcher/__init__.py), a
deterministic Hypothesis profile for CI, and the `e2e` marker on every test under tests/e2e/
(the multi-process ones): `pytest -m "not e2e"` runs the fast unit tests alone. The fixtures
that tests in both folders use are here; the other shared helpers are in tests/support."""

import fedgossip.launcher  # noqa: F401, I001 - first: sets GRPC_ENABLE_FORK_SUPPORT before grpc loads

from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import make_run

settings.register_profile("fedgossip", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("fedgossip")

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def sweep_dir(tmp_path):
    """A sweep-like folder: average over 3 seeds (one partial), vca over 2 seeds."""
    root = tmp_path / "sweep"
    for strategy, seeds in (("average", 3), ("vca", 2)):
        for seed in range(seeds):
            status = "partial" if (strategy, seed) == ("average", 2) else "complete"
            make_run(root / f"strategy.name={strategy}_seed={seed}", strategy, seed, status)
    (root / "logs").mkdir()  # not a run: ignored
    return root


@pytest.fixture
def offline(monkeypatch):
    """Hugging Face libraries never reach for the network (the file dataset tests)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
