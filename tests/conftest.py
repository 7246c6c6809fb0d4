"""Pytest configuration: gRPC's fork handlers off before anything imports grpc (the tests start
processes beside live gRPC calls, as the launcher does: see fedgossip/launcher/__init__.py), and
a deterministic Hypothesis profile for CI."""

import fedgossip.launcher  # noqa: F401, I001 - first: sets GRPC_ENABLE_FORK_SUPPORT before grpc loads

from hypothesis import settings

settings.register_profile("fedgossip", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("fedgossip")
