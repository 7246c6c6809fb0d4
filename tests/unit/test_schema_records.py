"""The record schema: the one declaration of a record, constructing, checking, writing and reading
metrics records, and the one event envelope of peers and the Flower server."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import threading
import typing
from typing import Annotated, TypedDict

import pytest

from fedgossip.schema import events, fields
from fedgossip.schema import lines as jsonl
from fedgossip.schema import records as schema
from tests.support import REPO

README = REPO / "README.md"


def _record(**extra):
    return schema.record(
        3,
        2,
        run_start=0.0,
        train_loss=0.5,
        test_loss=float("nan"),
        test_accuracy=0.75,
        num_examples=10,
        bytes_sent=100,
        bytes_received=200,
        **extra,
    )


def test_a_record_has_the_common_fields_and_non_finite_metrics_become_null():
    record = _record(merged=2, neighbours_heard=[1, 4])
    assert record["node"] == 3 and record["round"] == 2 and record["merged"] == 2
    assert record["test_loss"] is None and record["train_loss"] == 0.5
    assert fields.problem(record) is None
    assert json.loads(jsonl.encode(record)) == record


def test_unknown_fields_are_refused_when_constructing():
    with pytest.raises(ValueError, match="not record fields"):
        _record(acuracy=0.3)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"round": "2"}, "'round' is str"),
        ({"round": True}, "'round' is bool"),
        ({"test_accuracy": "high"}, "'test_accuracy' is str"),
        ({"node": "client"}, "'node' is 'client'"),
        ({"neighbours_heard": 3}, "'neighbours_heard' is int"),
    ],
)
def test_malformed_records_are_named(change, reason):
    assert reason in fields.problem({**_record(), **change})


def test_a_record_without_a_required_field_is_malformed():
    record = _record()
    del record["round"]
    assert fields.problem(record) == "no 'round'"
    assert fields.problem([1, 2]) == "not a JSON object"


def test_encode_refuses_nan_which_json_cannot_carry():
    with pytest.raises(ValueError):
        jsonl.encode({"x": math.inf})


def test_decode_event_keeps_known_kinds_and_turns_a_malformed_record_into_an_error():
    record = _record()
    good = jsonl.encode(events.record_event(record))
    assert events.decode_event(good, events.PEER_EVENTS)["record"] == json.loads(jsonl.encode(record))
    assert events.decode_event(b'{"type": "launch"}', events.PEER_EVENTS) is None
    assert events.decode_event(b"not json", events.PEER_EVENTS) is None
    assert events.decode_event(b"[1]", events.PEER_EVENTS) is None
    bad = events.decode_event(b'{"type": "record", "node": 1, "record": {"node": 1}}', events.PEER_EVENTS)
    assert bad == {"type": "error", "node": 1, "error": "malformed record: no 'round'"}
    nested = events.check_event({"type": "record", "record": {"node": "x"}}, events.SERVER_EVENTS)
    assert nested["type"] == "error" and "malformed record" in nested["error"]


def test_peers_and_the_server_send_a_record_in_the_same_envelope():
    """The event carries the record unchanged (the bytes metrics.jsonl gets) and names its node."""
    for node in (3, fields.SERVER):
        record = {**_record(), "node": node}
        event = events.record_event(record)
        assert event == {"type": "record", "node": node, "record": record}
        for kinds in (events.PEER_EVENTS, events.SERVER_EVENTS):
            decoded = events.decode_event(jsonl.encode(event), kinds)
            assert jsonl.encode(decoded["record"]) == jsonl.encode(record)


def test_a_scenario_event_has_the_keys_of_events_jsonl():
    event = events.scenario_event(2, 5, run_start=0.0, kind="rejoin", details={"rounds_missed": 1})
    assert list(event) == ["type", "node", "round", "time_s", "kind", "details"]
    assert (event["type"], event["node"], event["round"], event["kind"]) == ("scenario", 2, 5, "rejoin")
    assert events.check_event(event, events.PEER_EVENTS) == event


def test_the_field_table_comes_from_the_typed_record():
    """One declaration: every key of `Record` is a field, in order, with its documented types."""
    hints = typing.get_type_hints(fields.Record, include_extras=True)
    assert [f.name for f in fields.FIELDS] == list(hints) and len(fields.FIELDS) == 51
    assert [f.name for f in fields.FIELDS if f.required] == ["node", "round", "time_s"]
    by_name = {f.name: f for f in fields.FIELDS}
    assert by_name["time_s"].types == (int, float)
    assert by_name["train_loss"].types == (int, float, type(None))
    assert by_name["neighbour_psi"].types == (dict, type(None))
    assert by_name["selected"].types == (bool,)
    assert [f.name for f in fields.CONSENSUS_FIELDS if not f.required] == [
        "nodes_skipped",
        "nodes_moved_on",
        "nodes_missing",
    ]


def test_a_declared_key_without_its_documentation_is_refused():
    class Undocumented(TypedDict):
        node: Annotated[int, fields.Doc("every record", "the node")]
        round: int

    with pytest.raises(TypeError, match=r"Undocumented\.round has no Doc"):
        fields.fields_of(Undocumented)


def test_the_writer_writes_one_line_per_object_to_a_stream_from_many_threads():
    stream = io.StringIO()
    writer = jsonl.LineWriter(stream)
    threads = [
        threading.Thread(target=lambda i=i: [writer({"i": i, "k": k}) for k in range(50)]) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    lines = stream.getvalue().splitlines()
    assert sorted((o["i"], o["k"]) for o in map(json.loads, lines)) == [
        (i, k) for i in range(4) for k in range(50)
    ]


def test_a_failed_file_write_is_cut_back_to_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    writer = jsonl.LineWriter(path, sync=True)
    writer.write(_record())
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills up half-way through the line
        if len(data) > 20:
            real_write(fd, bytes(data[:20]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        writer.write(_record(merged=1))
    monkeypatch.undo()
    writer.write(_record(merged=2))
    writer.close()
    assert [r.get("merged") for r in schema.read_records(path)] == [None, 2]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_read_records_skips_torn_foreign_and_malformed_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = jsonl.encode(_record())
    path.write_bytes(
        good + b"garbage\n" + b'{"node": 1, "round": "x"}\n' + b"[]\n" + good + good[:7] + b"\xc3"
    )
    assert schema.read_records(path) == [json.loads(good)] * 2
    with pytest.raises(ValueError, match="cannot read"):
        schema.read_records(tmp_path / "missing.jsonl")


def test_the_tail_returns_only_completed_lines(tmp_path):
    path = tmp_path / "records.jsonl"
    tail = jsonl.LineTail(path)
    assert tail.read() == []
    line = jsonl.encode({"type": "done"})
    path.write_bytes(line[:5])
    assert tail.read() == []
    with open(path, "ab") as stream:
        stream.write(line[5:] + b"junk\n" + line[:3])
    assert tail.read() == [{"type": "done"}]
    with open(path, "ab") as stream:
        stream.write(line[3:])
    assert tail.read() == [{"type": "done"}]


def test_the_readme_documents_every_field_from_the_schema():
    assert fields.fields_markdown() in README.read_text(encoding="utf-8")
