"""JSON lines, the one way fedgossip writes and reads them: metrics.jsonl, events.jsonl,
consensus.jsonl, a peer's events on its stdout and the ServerApp's records file.

A line is written whole, flushed (and synced where asked) and cut back if a write fails part-way;
a line read back that is torn, foreign or not a JSON object is skipped, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, TextIO


def encode(obj: dict[str, Any]) -> bytes:
    """One JSON line (with its newline). NaN and Inf are refused: JSON has no such numbers."""
    return (json.dumps(obj, allow_nan=False) + "\n").encode()


def decode(line: bytes | str) -> dict[str, Any] | None:
    """The JSON object on one line, or None for anything else (torn, not JSON, not an object)."""
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class LineWriter:
    """The one writer of JSON lines: each object becomes one whole line, flushed at once.

    To a text stream (a peer's stdout), or appended to a file (`path`) with `sync=True` fsyncing
    each line; a file write that fails part-way (a full disk) is cut back to the previous length
    and re-raised, so readers never meet a torn line from this writer. Safe across threads.
    """

    def __init__(self, target: TextIO | str | Path, *, sync: bool = False) -> None:
        self._lock = threading.Lock()
        self._stream: TextIO | None = None
        self._fd: int | None = None
        self.sync = sync
        if isinstance(target, (str, Path)):
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        else:
            self._stream = target

    def __call__(self, obj: dict[str, Any]) -> None:
        self.write(obj)

    def write(self, obj: dict[str, Any]) -> None:
        line = encode(obj)
        with self._lock:
            if self._stream is not None:
                self._stream.write(line.decode())
                self._stream.flush()
                return
            if self._fd is None:
                raise ValueError("write to a closed LineWriter")
            self._append(self._fd, line)

    def _append(self, fd: int, line: bytes) -> None:
        length = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            if self.sync:
                os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, length)
            raise

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class LineTail:
    """Reads the whole lines appended to a file since the last call (a file another process
    writes); a line still being written waits for its end."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The JSON objects on the lines completed since the last call."""
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self.offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return [obj for obj in map(decode, lines) if obj is not None]


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSON-lines file; other lines (torn, foreign) are skipped.

    An OS error (missing, unreadable, a folder in its place) is a ValueError."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    return [obj for obj in map(decode, data.splitlines()) if obj is not None]
