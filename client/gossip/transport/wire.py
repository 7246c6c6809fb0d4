"""Models on the wire: split a model into gossip chunks, and rebuild one from untrusted chunks.

A model travels as one header (sender, round, example count, tensor specs, total size, codec) with
the tensors' concatenated payloads (`fedgossip.schema.codecs`; raw little-endian bytes under the
default codec "none", which the header leaves empty), sliced into chunks of at most `CHUNK_BYTES`
(the first slice rides with the header). A model is serialized once, by hand, each chunk's bytes
copied once from the payloads (`WireChunk`), and sent to every neighbour as it is (`push_stub`;
protobuf's own serialization of a 1 MiB chunk costs several times a copy, and gRPC ran it once per
neighbour): a model of one chunk by PushWhole, one unary call, a longer one by PushModel's
stream. The receiving side checks everything against its own model's specs before a single value
is used (the shared checks of `fedgossip.schema.tensors`, answered as gRPC
statuses): the header's sender, round, example count, codec (the receiver's own: another one is
INVALID_ARGUMENT), size and tensor specs as it arrives, the payloads' decoding and the values'
finiteness at the end. This is the one structure check of a received model: the peer's
inbox, merge and learner trust what `ModelAssembler.finish` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message

from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
from fedgossip.schema.codecs import NONE, Codec
from fedgossip.schema.tensors import (
    ModelRejected,
    ModelTooLarge,
    TensorSpec,
    check_declared,
    check_finite,
    check_size,
    is_finite,
    specs_of,
)

CHUNK_BYTES = 1 << 20
DATA_TAG = 0x12  # ModelChunk.data on the wire: field 2, length-delimited
SERVICE_PATH = f"/{gossip_pb2.DESCRIPTOR.services_by_name['Gossip'].full_name}"
MAX_MESSAGE_BYTES = 4 << 20
CHANNEL_OPTIONS = [  # one chunk (plus header) per message: anything bigger is refused by gRPC itself
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
ALLOWED_DTYPES = frozenset({"<f2", "<f4", "<f8", "<i4", "<i8"})
MAX_NUM_EXAMPLES = 1 << 40


class WireError(Exception):
    """A rejected message: carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def of(cls, rejected: ModelRejected) -> WireError:
        """The answer to a model the shared checks rejected: too large or malformed."""
        too_large = isinstance(rejected, ModelTooLarge)
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if too_large else grpc.StatusCode.INVALID_ARGUMENT
        return cls(code, str(rejected))


def decode(message_type: type[Message], raw: bytes) -> Message:
    """`raw` read as a `message_type`; WireError (INVALID_ARGUMENT) if it is not one. A peer's
    server receives its requests undecoded and decodes them here, once it knows who is calling."""
    try:
        return message_type.FromString(raw)
    except DecodeError:
        raise WireError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{len(raw)} bytes that are no {message_type.DESCRIPTOR.name}"
        ) from None


def parse_chunk(raw: bytes) -> Chunk:
    """`raw` read as a ModelChunk; WireError (INVALID_ARGUMENT) if it is not one. A chunk of data
    only, exactly as `frame` makes it (the data field alone), is read as a WireChunk whose data is
    a view of `raw`: protobuf's parse copies the data once and every read of the field again,
    3 of the 4 copies a received 100 MB model took. Anything else (the header's chunk, other
    valid encodings) is protobuf's to parse: the same chunk either way."""
    length = _data_length(raw)
    if length is None:
        return decode(gossip_pb2.ModelChunk, raw)
    return WireChunk(raw, None, memoryview(raw)[len(raw) - length :])


def _data_length(raw: bytes) -> int | None:
    """The data's length if `raw` is the data field alone (tag, varint length, that many bytes)."""
    if not raw or raw[0] != DATA_TAG:
        return None
    length, shift = 0, 0
    for index in range(1, min(len(raw), 11)):
        length |= (raw[index] & 0x7F) << shift
        if raw[index] < 0x80:
            return length if length == len(raw) - index - 1 else None
        shift += 7
    return None


@dataclass(frozen=True)
class ModelMessage:
    """A model received from (or sent to) a neighbour."""

    sender: int
    round: int
    num_examples: int
    arrays: list[np.ndarray]
    nbytes: int


@dataclass(frozen=True)
class WireChunk:
    """A ModelChunk as the bytes that go on the wire (`raw`, made once for every neighbour), with
    its header (the first chunk's; None after it) and its data as a view of `raw` (no copy)."""

    raw: bytes
    header: gossip_pb2.ModelHeader | None
    data: memoryview


Chunk = WireChunk | gossip_pb2.ModelChunk  # what an assembler takes: ours, or one protobuf parsed


def serialize(chunk: Chunk) -> bytes:
    """A chunk's bytes on the wire (a WireChunk's as they are)."""
    return chunk.raw if isinstance(chunk, WireChunk) else chunk.SerializeToString()


def push_stub(channel: grpc.Channel | grpc.aio.Channel) -> gossip_pb2_grpc.GossipStub:
    """A GossipStub on `channel` whose PushModel and PushWhole send chunks as `serialize` gives
    them (those of `encode` as they are); the other calls are the generated stub's."""
    stub = gossip_pb2_grpc.GossipStub(channel)
    reply = gossip_pb2.PushReply.FromString
    stub.PushModel = channel.stream_unary(
        f"{SERVICE_PATH}/PushModel", request_serializer=serialize, response_deserializer=reply
    )
    stub.PushWhole = channel.unary_unary(
        f"{SERVICE_PATH}/PushWhole", request_serializer=serialize, response_deserializer=reply
    )
    return stub


def _varint(value: int) -> bytes:
    """`value` (>= 0) as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(
    sender: int,
    round_: int,
    num_examples: int,
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    chunk_bytes: int = CHUNK_BYTES,
) -> list[WireChunk]:
    """Split a model into chunks, the first carrying the header and the first slice of data (a
    model under `chunk_bytes` is one message: each message costs the event loop a write). Built
    once, sent to every neighbour: each chunk's bytes are the ModelChunk's serialization, the
    tensors' bytes copied once into them."""
    specs = specs_of(names, arrays)
    views = [
        memoryview(np.ascontiguousarray(a, dtype=s.dtype)).cast("B")
        for s, a in zip(specs, arrays, strict=True)
    ]
    return frame(sender, round_, num_examples, specs, views, chunk_bytes=chunk_bytes)


def frame(
    sender: int,
    round_: int,
    num_examples: int,
    specs: Sequence[TensorSpec],
    payloads: Sequence[bytes | memoryview],
    codec: Codec = NONE,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[WireChunk]:
    """The chunks of a model whose tensors (of `specs`) `codec` packed into `payloads` (`encode`:
    raw bytes, codec "none"): each chunk's bytes are the ModelChunk's serialization, the payloads'
    bytes copied once into them."""
    header = gossip_pb2.ModelHeader(
        sender=sender,
        round=round_,
        num_examples=num_examples,
        tensors=on_wire(tuple(specs)).tensors,
        total_bytes=sum(len(p) for p in payloads),
        codec="" if codec.name == NONE.name else codec.name,
    )
    views = [memoryview(p).cast("B") for p in payloads]
    first = gossip_pb2.ModelChunk(header=header).SerializeToString()
    chunks = []
    for index, parts in enumerate(_slices(views, chunk_bytes)):
        prefix = (first if index == 0 else b"") + bytes([DATA_TAG]) + _varint(sum(len(p) for p in parts))
        raw = b"".join([prefix, *parts])
        chunks.append(WireChunk(raw, header if index == 0 else None, memoryview(raw)[len(prefix) :]))
    return chunks


def _slices(views: Sequence[memoryview], size: int) -> Iterator[list[memoryview]]:
    """The concatenation of `views` in slices of `size` bytes (the last one shorter, and one empty
    slice for no bytes at all), each slice as the views' parts it is made of."""
    parts: list[memoryview] = []
    filled, sliced = 0, False
    for view in views:
        while len(view):
            take = view[: size - filled]
            parts.append(take)
            filled += len(take)
            view = view[len(take) :]
            if filled == size:
                yield parts
                parts, filled, sliced = [], 0, True
    if parts or not sliced:
        yield parts


@dataclass(frozen=True)
class WireSpecs:
    """A spec list as the wire carries it, worked out once per list (`on_wire`): the header's
    tensor messages (a sender's header holds them; a receiver's usual header equals them field for
    field, and then passes `check_declared` as it stands when `allowed`: every dtype in
    ALLOWED_DTYPES), and the one float dtype of all the tensors if they share one (a receiver then
    checks the finiteness of the whole buffer at once, as one array)."""

    tensors: list[gossip_pb2.TensorSpec]
    allowed: bool
    float_dtype: np.dtype | None


@lru_cache(maxsize=16)
def on_wire(specs: tuple[TensorSpec, ...]) -> WireSpecs:
    """The wire's form of `specs` (cached: a peer's specs stay the same all run)."""
    tensors = [gossip_pb2.TensorSpec(name=s.name, dtype=s.dtype, shape=s.shape) for s in specs]
    dtypes = {np.dtype(s.dtype) for s in specs}
    uniform = dtypes.pop() if len(dtypes) == 1 else None
    allowed = all(s.dtype in ALLOWED_DTYPES for s in specs)
    return WireSpecs(tensors, allowed, uniform if uniform is not None and uniform.kind == "f" else None)


def check_header_specs(
    tensors: Sequence[gossip_pb2.TensorSpec], expected: Sequence[TensorSpec], form: WireSpecs
) -> None:
    """A header's tensor specs against the receiver's `expected` (`form`: their wire form):
    equal to them field for field (the usual header: one comparison), or else `check_declared`
    field by field (ModelRejected naming what differs)."""
    if form.allowed and list(tensors) == form.tensors:
        return
    declared = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in tensors]
    check_declared(declared, expected, allowed=ALLOWED_DTYPES)


def check_values(
    arrays: Sequence[np.ndarray], expected: Sequence[TensorSpec], raw: np.ndarray | None, form: WireSpecs
) -> None:
    """No NaN or Inf in a received model's `arrays`: its `raw` buffer (the arrays' bytes, None
    for a codec's decoding) read as one array when all the tensors share one float dtype (one
    pass), else (or when that finds one) tensor by tensor (ModelRejected naming the tensor)."""
    if raw is not None and form.float_dtype is not None and is_finite(raw.view(form.float_dtype)):
        return
    check_finite(arrays, expected)


class ModelAssembler:
    """Rebuild a model from untrusted chunks, validating as they arrive.

    `expected` are the receiver's own tensor specs; `senders` the node ids allowed to push;
    `rounds` the valid round range (inclusive); `max_bytes` the size limit; `codec` the one the
    receiver takes (a differential codec's arrays are its differences: see `schema.codecs`).
    """

    def __init__(
        self,
        expected: Sequence[TensorSpec],
        *,
        senders: Iterable[int] | None,
        rounds: tuple[int, int],
        max_bytes: int,
        codec: Codec = NONE,
    ) -> None:
        self.expected = list(expected)
        self._wire = on_wire(tuple(self.expected))
        self.codec = codec
        self.senders = None if senders is None else frozenset(senders)
        self.rounds = rounds
        self.max_bytes = max_bytes
        self.header: gossip_pb2.ModelHeader | None = None
        self.buffer: np.ndarray | None = None  # bytes (uint8), allocated unwritten: each is written once
        self.received = 0

    def add(self, chunk: Chunk) -> None:
        """Take one chunk; raise WireError on the first thing that is wrong."""
        header = _header_of(chunk)
        if self.header is None:
            if header is None:
                raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "first chunk carries no header")
            self._check_header(header)
            self.header = header
            self.buffer = np.empty(header.total_bytes, dtype=np.uint8)  # zeroing: 35 ms a 100 MB
        elif header is not None:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "header repeated after the first chunk")
        data = chunk.data
        end = self.received + len(data)
        if end > len(self.buffer):
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"more data than the declared {len(self.buffer)} bytes",
            )
        self.buffer[self.received : end] = np.frombuffer(data, dtype=np.uint8)
        self.received = end

    def finish(self) -> ModelMessage:
        """The validated model; raise WireError if it is incomplete or holds non-finite values."""
        if self.header is None:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "empty push: no header")
        if self.received != len(self.buffer):
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"got {self.received} of the declared {len(self.buffer)} bytes",
            )
        try:  # the header matched the specs: the arrays are built to them
            arrays = self._arrays()
            raw = self.buffer if self.codec.name == NONE.name else None
            check_values(arrays, self.expected, raw, self._wire)
        except ModelRejected as err:
            raise WireError.of(err) from None
        h = self.header
        return ModelMessage(h.sender, h.round, h.num_examples, arrays, self.received)

    def _arrays(self) -> list[np.ndarray]:
        """The tensors in the buffer: views of its raw bytes, or the codec's decoding."""
        if self.codec.name != NONE.name:
            return self.codec.unpack_model(memoryview(self.buffer), self.expected)
        arrays, offset = [], 0
        for spec in self.expected:
            array = self.buffer[offset : offset + spec.nbytes].view(spec.dtype)
            arrays.append(array.reshape(spec.shape))
            offset += spec.nbytes
        return arrays

    def _check_header(self, h: gossip_pb2.ModelHeader) -> None:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if self.senders is not None and h.sender not in self.senders:
            raise WireError(grpc.StatusCode.PERMISSION_DENIED, f"node {h.sender} is not a neighbour")
        low, high = self.rounds
        if not low <= h.round <= high:
            raise WireError(invalid, f"implausible round {h.round}: expected {low}..{high}")
        if not 0 < h.num_examples <= MAX_NUM_EXAMPLES:
            raise WireError(invalid, f"implausible num_examples {h.num_examples}")
        if (h.codec or NONE.name) != self.codec.name:
            raise WireError(invalid, f"codec {h.codec or NONE.name!r}: this peer takes {self.codec.name!r}")
        try:
            check_size(h.total_bytes, self.max_bytes, tensors=len(h.tensors))
            check_header_specs(h.tensors, self.expected, self._wire)
        except ModelRejected as err:
            raise WireError.of(err) from None
        implied = sum(self.codec.nbytes(s) for s in self.expected)
        if h.total_bytes != implied:
            raise WireError(invalid, f"total_bytes {h.total_bytes} != {implied} implied by the tensors")


def _header_of(chunk: Chunk) -> gossip_pb2.ModelHeader | None:
    if isinstance(chunk, WireChunk):
        return chunk.header
    return chunk.header if chunk.HasField("header") else None


def assemble(chunks: Iterator[Chunk], assembler: ModelAssembler) -> ModelMessage:
    """Feed a chunk stream through an assembler."""
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.finish()
