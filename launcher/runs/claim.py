"""An exclusive claim on a results or sweep folder: one fedgossip command writes into it at a time.

The claim is an `flock` on FOLDER/.claim, taken without waiting: a second command finds it locked
and is refused, naming the owner the file holds (PID, process start time, command). Why a lock
rather than a file created with O_EXCL: the kernel drops the lock when its owner dies, however it
dies (SIGKILL, a crash, the OOM killer), so a claim never outlives its process and no PID has to be
trusted; and it needs no free block, so it holds on a full disk (where the owner line may not get
written). A claim left behind by a dead owner is just an unlocked file with its owner line: the
next claimant takes it over and reports it (`stale`). A folder on a read-only file system cannot
be claimed: the OSError names the file.

Releasing removes the file, then unlocks it. A claimant that locked the file just before it was
removed holds a lock on a file no longer in the folder: it sees that (the path now names another
file, or none) and tries again, so two claimants never both hold a folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from fedgossip.base.polling import poll_until

CLAIM = ".claim"
LOCKED = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)  # flock's "held by another"
PEEK_S = 0.5  # a claim found locked is tried again this long: `check_free` locks it for an instant


@dataclass(frozen=True)
class Owner:
    """Who holds (or held) a claim: PID, the process's start time and its command line."""

    pid: int
    started: str
    command: str

    @classmethod
    def me(cls) -> Owner:
        """This process."""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(psutil.Process().create_time()))
        return cls(os.getpid(), started, shlex.join(["fedgossip", *sys.argv[1:]]))

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner written in a claim file; None if it holds none (the write failed: a full disk)."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["started"]), str(data["command"]))
        except (ValueError, TypeError, KeyError):
            return None

    def __str__(self) -> str:
        return f"pid {self.pid}, started {self.started}: {self.command}"


class FolderInUse(ValueError):
    """The folder is claimed by a process that still runs (`owner`: None if it wrote no owner line)."""

    def __init__(self, folder: Path, owner: Owner | None) -> None:
        self.owner = owner
        who = f"another fedgossip command ({owner})" if owner else "another fedgossip command"
        super().__init__(f"{folder} is in use by {who}: wait for it to end or choose another --out")


class FolderClaim:
    """The claim on `folder` (which must exist), taken at once or FolderInUse; `stale` is the
    owner of a claim left by a process that died holding it (None if there was none). Release it
    with `release()` or by leaving its `with` block; it is released on every exit path."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / CLAIM
        self.stale: Owner | None = None
        self._file: IO[bytes] | None = None
        deadline = time.monotonic() + PEEK_S
        while self._file is None:
            stream = open(self.path, "a+b", buffering=0)  # noqa: SIM115 (held until release)
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                owner = Owner.parse(_read(stream))
                stream.close()
                if err.errno not in LOCKED:
                    raise OSError(err.errno, err.strerror, str(self.path)) from None  # e.g. no locks on NFS
                if time.monotonic() >= deadline:
                    raise FolderInUse(self.folder, owner) from None
                time.sleep(PEEK_S / 10)  # a peek (`check_free`) holds it for microseconds
                continue
            if _names(self.path, stream):
                self._file = stream
            else:  # released and removed between our open and our lock: try again
                stream.close()
        self.stale = Owner.parse(_read(self._file))  # the file outlived its owner: it died holding it
        with contextlib.suppress(OSError):  # best effort: the lock holds without its owner line
            self._file.truncate(0)
            self._file.write(json.dumps(Owner.me().__dict__).encode() + b"\n")

    def release(self) -> None:
        """Remove the claim file, then unlock it; again: nothing."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            if _names(self.path, self._file):
                self.path.unlink()
        self._file.close()
        self._file = None

    def __enter__(self) -> FolderClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_free(folder: str | Path) -> None:
    """FolderInUse if a live process holds `folder`'s claim; nothing if it is free or missing."""
    _peek(Path(folder))


def left_by(folder: str | Path) -> Owner | None:
    """The owner written in `folder`'s claim file that nobody holds: a command that died holding
    the folder (None: no such file, or a live holder)."""
    try:
        return _peek(Path(folder))
    except FolderInUse:
        return None


def _peek(folder: Path) -> Owner | None:
    """The owner line of `folder`'s claim file if it is free (None if there is none); FolderInUse
    if a live process holds it."""
    try:
        stream = open(folder / CLAIM, "rb")  # noqa: SIM115
    except OSError:
        return None
    with stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in LOCKED:
                raise FolderInUse(folder, Owner.parse(_read(stream))) from None
            raise OSError(err.errno, err.strerror, str(folder / CLAIM)) from None
        return Owner.parse(_read(stream))


def wait_free(folder: str | Path, timeout: float) -> None:
    """Wait up to `timeout` seconds until nobody holds `folder`'s claim (a run still stopping);
    FolderInUse naming the holder after that."""
    try:
        poll_until(lambda: _free(folder), timeout, 0.2, f"{folder} to be released")
    except TimeoutError:
        check_free(folder)


def _free(folder: str | Path) -> bool:
    try:
        check_free(folder)
    except FolderInUse:
        return False
    return True


def _read(stream: IO[bytes]) -> str:
    """The whole text of the claim file `stream` ("" if unreadable)."""
    try:
        stream.seek(0)
        return stream.read(4096).decode(errors="replace").strip()
    except OSError:
        return ""


def _names(path: Path, stream: IO[bytes]) -> bool:
    """Whether `path` still names the file open as `stream`."""
    try:
        here, held = path.stat(), os.fstat(stream.fileno())
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)
