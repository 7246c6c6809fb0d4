"""The metrics records and node events, and the one way they are written and read.

A run's `metrics.jsonl` holds one record per node per round (and, in Flower mode, one "server"
record per round: the server's evaluation of the global model). Gossip peers and the Flower
ServerApp produce records, the launcher appends them, the reports read them back. The processes
also emit *events* ("ready", "round", "record", "error", "done", ...), one JSON object per line,
to the launcher. This module is the only place that knows what a record holds (`FIELDS`, the
documentation of every field), how a line is written (whole, flushed, synced where asked) and
how it is read back (torn, foreign or malformed lines are skipped, never fatal).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypedDict

SERVER = "server"  # the `node` of a Flower server record


@dataclass(frozen=True)
class Field:
    """One field of a metrics record: its JSON types, who writes it, and what it means."""

    name: str
    types: tuple[type, ...]
    source: str  # "every record", "gossip", "Flower", "server" or a strategy's name
    meaning: str
    required: bool = False


NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))

FIELDS: tuple[Field, ...] = (
    Field("node", (int, str), "every record", 'the node id, or `"server"` for the global model', True),
    Field(
        "round",
        (int,),
        "every record",
        "the round the record closes (1 = the first; async gossip: the node's local unit)",
        True,
    ),
    Field("time_s", NUMBER, "every record", "seconds since the launch of the run", True),
    Field("train_loss", OPTIONAL_NUMBER, "every record", "mean training loss of the round (null: undone)"),
    Field("test_loss", OPTIONAL_NUMBER, "every record", "test loss of the model kept after the merge"),
    Field("test_accuracy", OPTIONAL_NUMBER, "every record", "test accuracy of the model kept"),
    Field(
        "num_examples",
        (int, type(None)),
        "every record",
        "training examples of the node (test examples: server; null: did not train)",
    ),
    Field("bytes_sent", (int,), "every record", "model bytes delivered to others in the round"),
    Field("bytes_received", (int,), "every record", "model bytes received and merged in the round"),
    Field("neighbours_heard", (list,), "gossip", "the neighbours whose models were merged"),
    Field("merged", (int,), "gossip", "how many models were merged (0: none, or the merge was discarded)"),
    Field("refused", (int,), "gossip", "pushes refused in the round (invalid, unauthenticated, too late)"),
    Field(
        "discarded",
        (str, type(None)),
        "gossip",
        'why the merge was thrown away: `"merge failed"` (the rule raised or returned a bad model) or '
        '`"merged loss not finite"`',
    ),
    Field(
        "merge_trigger",
        (str, type(None)),
        "async gossip",
        'why the unit merged: `"fresh"` (as many fresh models as neighbours) or `"timeout"` '
        "(gossip.async_merge_timeout since the last merge); null: no merge due",
    ),
    Field(
        "merged_units",
        (list,),
        "async gossip",
        "the local unit of each merged model (its sender's `round`), in `neighbours_heard` order",
    ),
    Field("caught_up_from", (int,), "gossip", "after a catch-up: the neighbour whose model was adopted"),
    Field("jumped_from", (int,), "gossip", "after a catch-up: the round the node was in"),
    Field("evaluated_by", (str,), "Flower", '`"node"`, or `"server"` when the node could not evaluate'),
    Field("errors", (list,), "Flower", "what went wrong with the node's replies in the round"),
    Field(
        "phase",
        (str,),
        "fair",
        '`"explore"` (every node trains) or `"exploit"` (selected nodes only); gossip: the peer\'s own',
    ),
    Field(
        "selected",
        (bool,),
        "fair",
        "whether the node trained from the latest global model this round (gossip: whether a "
        "neighbour sent it its model)",
    ),
    Field(
        "staleness",
        (int,),
        "fair",
        "rounds since the node last received the global model (gossip: a neighbour's model; 0: this one)",
    ),
    Field(
        "contribution",
        OPTIONAL_NUMBER,
        "fair",
        "the node's Shapley value this round (explore rounds; gossip: in its own neighbourhood's game)",
    ),
    Field("psi", OPTIONAL_NUMBER, "fair", "running mean of the node's contributions (frozen in exploit)"),
    Field("selection_probability", OPTIONAL_NUMBER, "fair", "the node's chance to be selected (exploit)"),
    Field("explore_p_value", OPTIONAL_NUMBER, "fair", "the Hotelling p-value (explore, after tau rounds)"),
    Field("update_norm", OPTIONAL_NUMBER, "fair", "L2 norm of the node's update g_i (rounds it trained)"),
    Field(
        "update_alignment",
        OPTIONAL_NUMBER,
        "fair",
        "cosine of the node's update with the round's aggregate step (rounds it trained)",
    ),
    Field("sent_to", (list,), "fair gossip", "the neighbours the peer sent its model to this round"),
    Field("neighbour_psi", (dict, type(None)), "fair gossip", "the peer's psi of each neighbour (by id)"),
    Field(
        "neighbour_probability",
        (dict, type(None)),
        "fair gossip",
        "each neighbour's chance to get the peer's model (exploit rounds)",
    ),
    Field(
        "layer_variance",
        (dict,),
        "gossip, server",
        "population variance of each float tensor (name -> variance) of the model kept after the merge; "
        "server: of the global model",
    ),
    Field(
        "consensus_distance",
        OPTIONAL_NUMBER,
        "server",
        "mean L2 distance of the round's client models to their unweighted average (gossip: "
        "`consensus.jsonl`)",
    ),
    Field("consensus_models", (int,), "server", "how many client models the consensus distance is over"),
    Field("attack", (str,), "scenario", "the attack the node carries out (only attackers' records have it)"),
    Field(
        "trigger_success",
        OPTIONAL_NUMBER,
        "scenario",
        "collective action: share of triggered test examples of other classes classified as the target",
    ),
    Field(
        "dropped", (int,), "scenario", "pushes of the round lost by the scenario's network (loss, partition)"
    ),
    Field(
        "delayed_s", NUMBER, "scenario", "seconds the scenario's network held the round's pushes back, summed"
    ),
    Field("rounds_missed", (int,), "scenario", "after a crash: the rounds the node did not train"),
    Field(
        "rejoin_s",
        NUMBER,
        "scenario",
        "after a crash: seconds to be back; gossip: from serving again to holding a model; Flower: "
        "from the start of the round it is back for (its SuperNode restarted) to its handshake answer",
    ),
    Field("train_s", NUMBER, "server", "seconds the server waited for training replies in the round"),
    Field("evaluate_s", NUMBER, "server", "seconds the server waited for evaluation replies in the round"),
)
_BY_NAME = {field.name: field for field in FIELDS}

CONSENSUS_FIELDS: tuple[Field, ...] = (
    Field("round", (int,), "launcher", "the round whose models were measured", True),
    Field("time_s", NUMBER, "launcher", "seconds since the launch of the run, when measured", True),
    Field(
        "consensus_distance",
        OPTIONAL_NUMBER,
        "launcher",
        "mean L2 distance of the peers' models of the round to their unweighted average (null: < 2 models)",
        True,
    ),
    Field("consensus_models", (int,), "launcher", "how many peers' models of the round were measured", True),
    Field("nodes_skipped", (list,), "launcher", "peers that did not serve their model (GetModel) in time"),
    Field("nodes_moved_on", (list,), "launcher", "peers that served a model of another round (not used)"),
    Field("nodes_missing", (list,), "launcher", "peers that never recorded the round (dead, too far behind)"),
)
"""The lines of a gossip run's `consensus.jsonl` (the launcher's observer; Flower mode has the
`consensus_*` fields of the server records instead)."""


class Record(TypedDict, total=False):
    """A metrics record (see `FIELDS` for the meaning of each key)."""

    node: int | str
    round: int
    time_s: float
    train_loss: float | None
    test_loss: float | None
    test_accuracy: float | None
    num_examples: int | None
    bytes_sent: int
    bytes_received: int
    neighbours_heard: list[int]
    merged: int
    refused: int
    discarded: str | None
    merge_trigger: str | None
    merged_units: list[int]
    caught_up_from: int
    jumped_from: int
    evaluated_by: str
    errors: list[str]
    phase: str
    selected: bool
    staleness: int
    contribution: float | None
    psi: float | None
    selection_probability: float | None
    explore_p_value: float | None
    update_norm: float | None
    update_alignment: float | None
    sent_to: list[int]
    neighbour_psi: dict[str, float | None] | None
    neighbour_probability: dict[str, float | None] | None
    layer_variance: dict[str, float]
    consensus_distance: float | None
    consensus_models: int
    attack: str
    trigger_success: float | None
    dropped: int
    delayed_s: float
    rounds_missed: int
    rejoin_s: float
    train_s: float
    evaluate_s: float


# the kinds of events a process emits, one JSON object per line with its kind under "type"
# a gossip peer, on its stdout ("round" is a record; "scenario": a fault, attack or churn event)
PEER_EVENTS = ("ready", "round", "error", "done", "scenario")
# the ServerApp, to its records file ("round-start" and "scenario": Flower churn, server/rejoin.py)
SERVER_EVENTS = ("started", "record", "node-error", "round-start", "scenario", "error", "done")
Emit = Callable[[dict[str, Any]], None]


def metric(value: float | None) -> float | None:
    """A metric as JSON can carry it: non-finite values become null."""
    return float(value) if value is not None and math.isfinite(value) else None


def record(
    node: int | str,
    round_: int,
    run_start: float,
    *,
    train_loss: float | None,
    test_loss: float | None,
    test_accuracy: float | None,
    num_examples: int | None,
    bytes_sent: int,
    bytes_received: int,
    **extra: Any,
) -> Record:
    """The record of `node` closing `round_` now: the fields every record has, then `extra`
    (fields of `FIELDS` only; losses and accuracies that are not finite become null)."""
    unknown = set(extra) - _BY_NAME.keys()
    if unknown:
        raise ValueError(f"not record fields: {sorted(unknown)}")
    return {
        "node": node,
        "round": round_,
        "time_s": round(time.time() - run_start, 4),
        "train_loss": metric(train_loss),
        "test_loss": metric(test_loss),
        "test_accuracy": metric(test_accuracy),
        "num_examples": num_examples,
        "bytes_sent": bytes_sent,
        "bytes_received": bytes_received,
        **extra,
    }


def problem(candidate: Any) -> str | None:
    """Why `candidate` is not a valid record (a field missing or of the wrong JSON type), or None.

    Fields this schema does not know are allowed (a newer writer); bool is not a number."""
    reason = _typed_problem(candidate, FIELDS)
    if reason is None and isinstance(candidate["node"], str) and candidate["node"] != SERVER:
        return f"'node' is {candidate['node']!r}, not an int or {SERVER!r}"
    return reason


def consensus_problem(candidate: Any) -> str | None:
    """Why `candidate` is not a valid line of consensus.jsonl (see `CONSENSUS_FIELDS`), or None."""
    return _typed_problem(candidate, CONSENSUS_FIELDS)


def _typed_problem(candidate: Any, fields: Iterable[Field]) -> str | None:
    """A required field missing or a field of the wrong JSON type, or None."""
    if not isinstance(candidate, dict):
        return "not a JSON object"
    for field in fields:
        if field.name not in candidate:
            if field.required:
                return f"no {field.name!r}"
            continue
        value = candidate[field.name]
        if (isinstance(value, bool) and bool not in field.types) or not isinstance(value, field.types):
            return f"{field.name!r} is {type(value).__name__}, not {' or '.join(_names(field.types))}"
    return None


def _names(types: tuple[type, ...]) -> list[str]:
    return ["null" if kind is type(None) else kind.__name__ for kind in types]


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


def decode_event(line: bytes | str, kinds: Iterable[str]) -> dict[str, Any] | None:
    """The event on one line if it is one of `kinds` (see `check_event`); None otherwise."""
    return check_event(decode(line), kinds)


def check_event(event: dict[str, Any] | None, kinds: Iterable[str]) -> dict[str, Any] | None:
    """`event` if it is one of `kinds`, None otherwise. A "round" or "record" event whose record
    is malformed (see `problem`) becomes an "error" event saying so."""
    if event is None or event.get("type") not in kinds:
        return None
    kind = event["type"]
    if kind in ("round", "record"):
        reason = problem(event if kind == "round" else event.get("record"))
        if reason is not None:
            return {"type": "error", "node": event.get("node"), "error": f"malformed record: {reason}"}
    return event


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


def read_records(path: str | Path) -> list[Record]:
    """The valid metrics records of a metrics.jsonl file, in file order (others skipped)."""
    return [obj for obj in read_lines(path) if problem(obj) is None]  # type: ignore[misc]


def fields_markdown(fields: Iterable[Field] = FIELDS) -> str:
    """The table of record fields (or of `CONSENSUS_FIELDS`) for the README (checked against it)."""
    rows = ["| field | written by | meaning |", "|---|---|---|"]
    rows += [f"| `{f.name}` | {f.source} | {f.meaning} |" for f in fields]
    return "\n".join(rows)
