"""The fork server's output, drained by the launcher before its log file is known (an early start):
what it wrote before `to` names the file lands there first, then the rest, nothing lost."""

from __future__ import annotations

import array
import fcntl
import os
import termios

import pytest

from fedgossip.launcher.supervision.forkserver import ServerOutput
from tests.support import wait_for


def unread(fd: int) -> int:
    """Bytes waiting in the pipe whose read end is `fd`."""
    size = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, size)
    return size[0]


@pytest.mark.timeout(30)
def test_output_written_before_the_log_is_named_lands_in_it_first(tmp_path):
    read, write = os.pipe()
    output = ServerOutput(os.fdopen(read, "rb"))
    os.write(write, b"before the run's folder\n")
    wait_for(lambda: unread(read) == 0, 10, "the drain to read it", interval=0.01)  # kept in memory
    log = tmp_path / "forkserver.log"
    log.write_bytes(b"an earlier run\n")
    output.to(log)
    os.write(write, b"after\n")
    os.close(write)
    output.finish(10)
    assert log.read_bytes() == b"an earlier run\nbefore the run's folder\nafter\n"
