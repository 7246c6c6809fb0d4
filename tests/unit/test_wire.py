"""Chunked model encoding and the validation of untrusted chunks (in-process, no network)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from fedgossip.client.gossip.transport.wire import (
    ModelAssembler,
    WireChunk,
    WireError,
    assemble,
    decode,
    encode,
    parse_chunk,
    serialize,
)
from fedgossip.proto import gossip_pb2
from fedgossip.schema.tensors import specs_of

NAMES = ["w", "b", "scale"]


def model(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(300, 500)).astype(np.float32),
        rng.normal(size=500).astype(np.float32),
        np.array([1.5], dtype=np.float32),
    ]


def assembler(**kw) -> ModelAssembler:
    args = {"senders": [3], "rounds": (1, 5), "max_bytes": 10 << 20} | kw
    return ModelAssembler(specs_of(NAMES, model()), **args)


def test_round_trip_over_several_chunks():
    arrays = model(1)
    chunks = encode(3, 2, 77, NAMES, arrays, chunk_bytes=64 << 10)
    assert len(chunks) > 5 and chunks[0].header is not None
    message = assemble(iter(chunks), assembler())
    assert (message.sender, message.round, message.num_examples) == (3, 2, 77)
    for got, want in zip(message.arrays, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
    assert message.nbytes == sum(a.nbytes for a in arrays)


def test_slices_fill_every_chunk_and_a_small_model_is_one_message():
    """The tensors' bytes are concatenated and sliced regardless of tensor boundaries: every chunk
    but the last holds exactly chunk_bytes (the header's included), so a small model costs one
    message."""
    arrays = model(2)
    raw = b"".join(a.tobytes() for a in arrays)  # 602,004 bytes
    for size in (1000, 4096, 64 << 10, 1 << 20):
        chunks = encode(3, 2, 77, NAMES, arrays, chunk_bytes=size)
        assert [c.header is not None for c in chunks] == [True] + [False] * (len(chunks) - 1)
        assert [len(c.data) for c in chunks[:-1]] == [size] * (len(chunks) - 1)
        assert len(chunks) == -(-len(raw) // size)
        assert b"".join(c.data for c in chunks) == raw
    assert len(encode(3, 2, 77, NAMES, arrays)) == 1


def test_each_chunk_is_sent_as_the_protobuf_serialization_of_its_header_and_data():
    """What goes on the wire (`raw`, serialized by hand) parses as the ModelChunk protobuf itself
    would make of the chunk's header and data, for the first chunk, the middle ones, a short last
    one, and an empty model."""
    arrays = model(3)
    for size in (1000, 64 << 10, 1 << 20):
        chunks = encode(3, 2, 77, NAMES, arrays, chunk_bytes=size)
        for chunk in chunks:
            want = gossip_pb2.ModelChunk(header=chunk.header, data=bytes(chunk.data))
            assert gossip_pb2.ModelChunk.FromString(chunk.raw) == want
            assert serialize(chunk) == chunk.raw
            assert gossip_pb2.ModelChunk.FromString(serialize(want)) == want  # protobuf's own chunks
    (empty,) = encode(3, 2, 77, ["e"], [np.zeros(0, dtype=np.float32)])
    assert gossip_pb2.ModelChunk.FromString(empty.raw).header.total_bytes == 0 and len(empty.data) == 0


def parsed(raw: bytes) -> tuple[gossip_pb2.ModelHeader | None, bytes] | str:
    """What a receiver reads in `raw`: its header and data, or the refusal's message."""
    try:
        chunk = parse_chunk(raw)
    except WireError as err:
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        return str(err)
    header = (
        chunk.header if isinstance(chunk, WireChunk) else (chunk.header if chunk.HasField("header") else None)
    )
    return header, bytes(chunk.data)


def protobuf_reads(raw: bytes) -> tuple[gossip_pb2.ModelHeader | None, bytes] | str:
    """What protobuf itself reads in `raw` (the reference `parse_chunk` must agree with)."""
    try:
        chunk = decode(gossip_pb2.ModelChunk, raw)
    except WireError as err:
        return str(err)
    return (chunk.header if chunk.HasField("header") else None), chunk.data


def test_a_receiver_reads_every_chunk_as_protobuf_does():
    """`parse_chunk` (data chunks read without a copy) agrees with protobuf's parse on our chunks,
    on other valid encodings of the same fields and on broken ones: the same header and data, or
    INVALID_ARGUMENT for both."""
    raws = [c.raw for size in (1000, 64 << 10) for c in encode(3, 2, 77, NAMES, model(4), chunk_bytes=size)]
    data = b"\x01\x02\x03\x04\x05"
    header = gossip_pb2.ModelChunk(header=gossip_pb2.ModelHeader(sender=3)).SerializeToString()
    raws += [
        b"",
        b"\x12\x00",  # empty data
        b"\x12\x85\x00" + data,  # a length in a longer varint than needed
        b"\x12\x05" + data + b"\x12\x01\x09",  # the data field twice: the last counts
        b"\x12\x05" + data + header,  # a header after the data
        b"\x12\x05" + data + b"\x18\x01",  # an unknown field after it
        b"\x12\x06" + data,  # a length past the end
        b"\x12\x04" + data,  # bytes after the data that are no field
        b"\x12" + b"\xff" * 11 + data,  # a varint that never ends
        b"\x12",
        b"\x0a\x05" + data,  # a header that is no ModelHeader
        b"\x00" * 8,
    ]
    for raw in raws:
        assert parsed(raw) == protobuf_reads(raw), raw[:16]
    middle = parse_chunk(raws[1])
    assert isinstance(middle, WireChunk) and middle.data.obj is raws[1]  # a view, not a copy


def test_a_model_received_as_parsed_chunks_is_the_one_sent():
    arrays = model(5)
    chunks = [parse_chunk(c.raw) for c in encode(3, 2, 77, NAMES, arrays, chunk_bytes=4000)]
    message = assemble(iter(chunks), assembler())
    for got, want in zip(message.arrays, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype and got.shape == want.shape


def refused(chunks, **kw) -> WireError:
    with pytest.raises(WireError) as err:
        assemble(iter(chunks), assembler(**kw))
    return err.value


def test_garbage_without_header():
    err = refused([gossip_pb2.ModelChunk(data=b"\x00" * 100)])
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "no header" in str(err)


def test_wrong_shape():
    arrays = model()
    arrays[0] = arrays[0].reshape(500, 300)
    err = refused(encode(3, 1, 5, NAMES, arrays))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "does not match" in str(err)


def test_nan_values():
    arrays = model()
    arrays[1][7] = np.nan
    err = refused(encode(3, 1, 5, NAMES, arrays))
    assert "NaN" in str(err)


def test_oversize_model():
    err = refused(encode(3, 1, 5, NAMES, model()), max_bytes=1000)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unknown_sender_and_bad_round():
    assert refused(encode(9, 1, 5, NAMES, model())).code == grpc.StatusCode.PERMISSION_DENIED
    assert "implausible round" in str(refused(encode(3, 6, 5, NAMES, model())))
    assert "num_examples" in str(refused(encode(3, 1, 0, NAMES, model())))


def test_size_lies_are_caught():
    chunks = encode(3, 1, 5, NAMES, model(), chunk_bytes=64 << 10)
    assert "got" in str(refused(chunks[:-1]))
    extra = [*chunks, gossip_pb2.ModelChunk(data=b"1234")]
    assert "more data" in str(refused(extra))
    chunks[0].header.total_bytes += 4
    assert "total_bytes" in str(refused(chunks))


def test_dtype_not_allowed():
    chunks = encode(3, 1, 5, NAMES, model())
    chunks[0].header.tensors[0].dtype = "|O"
    assert "not allowed" in str(refused(chunks))


def test_a_non_finite_value_is_named_whether_the_dtypes_are_one_or_several():
    """The buffer of a one-dtype model is checked at once, a mixed one tensor by tensor: either
    way the refusal names the tensor."""
    arrays = model()
    arrays[2][0] = np.inf
    assert "weight scale holds NaN or Inf" in str(refused(encode(3, 1, 5, NAMES, arrays)))
    mixed = [arrays[0], arrays[1].astype(np.float64), np.array([1.5], dtype=np.float32)]
    mixed[1][3] = np.nan
    err = ModelAssembler(specs_of(NAMES, mixed), senders=[3], rounds=(1, 5), max_bytes=10 << 20)
    with pytest.raises(WireError, match="weight b holds NaN or Inf"):
        assemble(iter(encode(3, 1, 5, NAMES, mixed)), err)
    ints = [np.arange(6, dtype=np.int64), np.array([np.nan], dtype=np.float32)]
    checked = ModelAssembler(specs_of(["n", "x"], ints), senders=[3], rounds=(1, 5), max_bytes=1 << 20)
    with pytest.raises(WireError, match="weight x holds NaN or Inf"):
        assemble(iter(encode(3, 1, 5, ["n", "x"], ints)), checked)


def test_a_header_unlike_the_specs_takes_the_full_check():
    """A header that differs from the receiver's specs in any way is checked field by field and
    refused with what differs; editing one push's header leaves the next push's check as it was."""
    arrays = model()
    by_name = encode(3, 1, 5, NAMES, arrays)
    by_name[0].header.tensors[0].dtype = "float32"
    assert "dtype 'float32' not allowed" in str(refused(by_name))
    reshaped = encode(3, 1, 5, NAMES, arrays)
    reshaped[0].header.tensors[1].shape[0] = 499
    assert "it must have shape (500,)" in str(refused(reshaped))
    renamed = encode(3, 1, 5, NAMES, arrays)
    renamed[0].header.tensors[1].name = "bias"
    assert "'bias' in its place" in str(refused(renamed))
    assert [a.tolist() for a in assemble(iter(encode(3, 1, 5, NAMES, arrays)), assembler()).arrays] == [
        a.tolist() for a in arrays
    ]


def test_own_specs_of_a_dtype_not_allowed_refuse_every_push():
    """A receiver whose own model holds a dtype the wire does not allow refuses it, as before."""
    arrays = [np.zeros(4, dtype=np.int16)]
    receiver = ModelAssembler(specs_of(["q"], arrays), senders=[3], rounds=(1, 5), max_bytes=1 << 20)
    with pytest.raises(WireError, match="not allowed"):
        assemble(iter(encode(3, 1, 5, ["q"], arrays)), receiver)
