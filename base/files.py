"""Files replaced whole or not at all: a reader (or the next run) never meets a file cut by a full
disk or a killed process.

`write_atomic` writes a temporary file beside the target (same folder, so the same file system),
flushes it to disk and renames it over the target: `os.replace` is atomic on POSIX, so the target
holds either its old text or the new one. A failure removes the temporary file, keeps the old
target and is raised as an OSError naming the target (a write error alone names no file).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, text: str) -> None:
    """Replace the file `path` with `text` (UTF-8) atomically; OSError naming `path` if it cannot."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as open()
        try:
            with open(fd, "w", encoding="utf-8", closefd=True) as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def write_json(path: str | Path, data: Any) -> None:
    """Replace `path` with `data` as indented JSON, atomically (see `write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")
