"""The committed gossip stubs are what `python -m fedgossip.proto.generate` makes of gossip.proto."""

from __future__ import annotations

import pytest

from fedgossip.proto import generate
from tests.support import REPO

REPO_PROTO = REPO / "proto"


@pytest.mark.skipif(not (REPO_PROTO / "gossip.proto").exists(), reason="needs the source tree")
def test_generated_stubs_are_current(tmp_path):
    pytest.importorskip("grpc_tools")
    for path in generate.generate(tmp_path):
        committed = REPO_PROTO / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `python -m fedgossip.proto.generate`"
        )
