"""Datasets in files, read with numpy only: a user's .npz file, and the prepared shards (one .npz
per node plus the global test set) that the launcher writes for heavy sources, so node
processes never import a data library.

Shard folder layout: `shards.json` (the manifest, written last), `test.npz` and one training file
per node (`node-I.npz`; `train.npz` shared by all when task.partition = "none"), each holding
arrays `x` (features in their stored dtype, flat) and `y` (int64 labels). A streamed task
(task.stream_chunks = C) adds `stream-K.npz` for K < C: the clean evaluation set of the rounds
whose next chunk is K (every node's chunk K, see `stream`), so a node still reads its shard only.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .source import Source, source_from_arrays

if TYPE_CHECKING:
    from .config import TaskConfig

NPZ_KEYS = ("x", "y", "x_test", "y_test")
MANIFEST = "shards.json"
FORMAT = "fedgossip-shards/1"


def load_npz(path: Path, allowed: tuple[str, ...], where: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (no pickles), read-only, refusing names outside `allowed`."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            arrays = None
        else:
            with data:
                arrays = {name: data[name] for name in data.files}
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as err:  # missing, unreadable, not .npz
        raise ValueError(f"{where}: cannot read it as an .npz file of arrays: {err}") from None
    if arrays is None:
        raise ValueError(f"{where}: an .npy file of one array, not an .npz file of named arrays")
    unknown = sorted(set(arrays) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unexpected arrays {unknown} (allowed: {', '.join(allowed)})")
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


def read_npz(path: str | Path) -> Source:
    """An .npz file with arrays x (N, F), (N, H, W) or (N, C, H, W) and y (N,) integer labels,
    optionally x_test and y_test; checked (see `source_from_arrays`). Not cached: a node keeps
    only its own rows, scaled."""
    where = f"task.path {str(path)!r}"
    arrays = load_npz(Path(path).expanduser(), NPZ_KEYS, where)
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise ValueError(f"{where}: arrays {missing} are missing (it has {sorted(arrays)})")
    return source_from_arrays(
        arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"), where=where
    )


def npz_source(task: TaskConfig, seed: int) -> Source:
    """The .npz file task.path (`read_npz`); without a test set of its own, the global split,
    seeded by `seed`, makes it."""
    return read_npz(task.path)


def write_shards(
    folder: Path,
    source: Source,
    parts: list[np.ndarray] | None,
    num_nodes: int,
    stream: list[np.ndarray] | None = None,
) -> None:
    """Write a split source as shards: node i's training rows `parts[i]` (None: every node gets
    all of them, stored once), the test set, a streamed task's evaluation chunks (`stream[k]`:
    the training rows of chunk k's evaluation set), then the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    if source.x_test is None or source.y_test is None or source.scale is None:
        raise ValueError("shards need a split source with a per-element scale")
    np.savez(folder / "test.npz", x=source.x_test, y=source.y_test)
    if parts is None:
        np.savez(folder / "train.npz", x=source.x, y=source.y)
        train = ["train.npz"] * num_nodes
    else:
        train = [f"node-{node}.npz" for node in range(num_nodes)]
        for name, rows in zip(train, parts, strict=True):
            np.savez(folder / name, x=source.x[rows], y=source.y[rows])
    chunks = [f"stream-{chunk}.npz" for chunk in range(len(stream or []))]
    for name, rows in zip(chunks, stream or [], strict=True):
        np.savez(folder / name, x=source.x[rows], y=source.y[rows])
    manifest = {
        "format": FORMAT,
        "num_nodes": num_nodes,
        "num_classes": source.num_classes,
        "input_shape": list(source.input_shape),
        "scale": source.scale,
        "train": train,
        "test": "test.npz",
        "stream": chunks,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _manifest(folder: Path, num_nodes: int) -> dict:
    """The checked manifest of a shard folder written for `num_nodes` nodes."""
    where = f"task.path {str(folder)!r}"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except OSError as err:
        raise ValueError(f"{where}: no shard manifest {MANIFEST} ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: {MANIFEST} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{where}: {MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("num_nodes") != num_nodes:
        raise ValueError(
            f"{where}: the shards were written for {manifest.get('num_nodes')} nodes, "
            f"the experiment has nodes.count={num_nodes}"
        )
    train, shape, scale = manifest.get("train"), manifest.get("input_shape"), manifest.get("scale")
    chunks = manifest.setdefault("stream", [])  # shards written before streams had none
    listed = isinstance(train, list) and isinstance(chunks, list)
    names = [*train, manifest.get("test"), *chunks] if listed else []
    valid = (
        len(names) == num_nodes + 1 + len(chunks)
        and all(isinstance(name, str) and Path(name).name == name for name in names)
        and isinstance(manifest.get("num_classes"), int)
        and isinstance(shape, list)
        and all(isinstance(n, int) and n > 0 for n in shape)
        and isinstance(scale, (int, float))
        and math.isfinite(scale)
        and scale > 0
    )
    if not valid:
        raise ValueError(f"{where}: {MANIFEST} has missing or malformed entries")
    return manifest


def shared_training_file(folder: str, num_nodes: int) -> Path | None:
    """The one training file that is every node's shard (written once: every node holds the whole
    training set), or None when the nodes have shards of their own."""
    path = Path(folder).expanduser()
    train = _manifest(path, num_nodes)["train"]
    return (path / train[0]).resolve() if num_nodes > 1 and len(set(train)) == 1 else None


def read_shard(folder: str, node: int, num_nodes: int, stream: tuple[int, int] | None = None) -> Source:
    """Node `node`'s training rows and the global test set from a shard folder, checked (not
    cached: the node keeps them scaled). `stream` = (chunk, chunks): the test set is instead the
    evaluation set of chunk `chunk` of a stream of `chunks` (task.stream_chunks)."""
    path = Path(folder).expanduser()
    manifest = _manifest(path, num_nodes)
    where = f"task.path {folder!r}"
    test_name = manifest["test"]
    if stream is not None:
        chunk, chunks = stream
        if len(manifest["stream"]) != chunks:
            raise ValueError(
                f"{where}: the shards hold a stream of {len(manifest['stream'])} chunks, "
                f"the experiment has task.stream_chunks={chunks}"
            )
        test_name = manifest["stream"][chunk]
    train = load_npz(path / manifest["train"][node], ("x", "y"), f"{where} ({manifest['train'][node]})")
    test = load_npz(path / test_name, ("x", "y"), f"{where} ({test_name})")
    shape = tuple(manifest["input_shape"])
    for part in (train, test):
        if set(part) != {"x", "y"} or part["x"].ndim != 2 or part["x"].shape[1] != math.prod(shape):
            raise ValueError(f"{where}: shard arrays do not match the manifest's input shape {shape}")
    source = source_from_arrays(
        train["x"],
        train["y"],
        test["x"],
        test["y"],
        where=where,
        num_classes=manifest["num_classes"],
        input_shape=shape,
    )
    return Source(
        source.x,
        source.y,
        source.num_classes,
        source.input_shape,
        float(manifest["scale"]),
        source.x_test,
        source.y_test,
    )
