"""Pytest configuration: a deterministic Hypothesis profile for CI."""

from hypothesis import settings

settings.register_profile("fedgossip", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("fedgossip")
