"""A small disk for full-disk tests: a tmpfs mounted for the test (root only; skipped elsewhere)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(point: Path, size: str = "2m", inodes: int | None = None) -> Iterator[Path]:
    """Mount a tmpfs of `size` (and `inodes` files at most) at `point` (made if missing); unmounted
    at the end (lazily: a process that still holds it cannot stop it). Skips the test where
    mounting is refused."""
    point.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + ("" if inodes is None else f",nr_inodes={inodes}")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def resize(point: Path, size: str) -> None:
    """Give the tmpfs at `point` a new size (space freed, or taken)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(point)], check=True, timeout=30)
