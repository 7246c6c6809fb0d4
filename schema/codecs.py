"""Codecs for the tensors a node sends (gossip pushes, Flower replies): pure pack/unpack, numpy only.

A codec turns one tensor into payload bytes and back, to the tensor's own spec (`TensorSpec`:
shape and dtype; the receiver's spec is the truth). Only float tensors are compressed; integer
tensors (a BatchNorm step count) travel raw under every codec. The payload size of a tensor is fixed
by its spec and the codec's parameters (`nbytes`), so a receiver checks a message's size before
reading it, and `unpack` refuses malformed payloads (`ModelRejected`: a non-finite scale, indices
out of range or not increasing). Each codec states its error bound (`bound`: per value,
|unpack(pack(x)) - x| <= bound(x)); the tests hold it to it.

`differential` codecs (top-k with error feedback, CHOCO-gossip) send differences to a copy both
ends keep (`fedgossip.client.gossip.compression`): their payloads are sparse differences, the
state is the client's; the functions here stay pure. `CODECS` is the registry (one entry per
codec, `codec(name, ratio)` builds one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedgossip.schema.tensors import ModelRejected, TensorSpec

FLOATS = frozenset({"<f2", "<f4", "<f8"})
FP16_RELATIVE = 2.0**-11  # half precision: 11 significant bits, rounding to nearest
FP16_SUBNORMAL = 2.0**-25  # half of the smallest subnormal step: the absolute floor of its error
INDEX = np.dtype("<u4")  # top-k's indices (a tensor of 2**32 values exceeds every message limit)
SCALE = np.dtype("<f4")  # int8's per-tensor scale


@dataclass(frozen=True)
class Codec:
    """No compression (`none`): the tensor's raw little-endian bytes. The base of every codec: its
    integer tensors always travel so."""

    name: ClassVar[str] = "none"
    differential: ClassVar[bool] = False  # payloads are differences to a copy both ends keep (see above)
    mixes: ClassVar[bool] = False  # the receiver takes CHOCO's consensus step instead of a plain merge
    ratio: float = 1.0  # top-k's share of values sent (ignored by the others)

    def nbytes(self, spec: TensorSpec) -> int:
        """The payload bytes of a tensor of `spec`."""
        return self._nbytes(spec) if spec.dtype in FLOATS else spec.nbytes

    def pack(self, array: np.ndarray, spec: TensorSpec) -> bytes | memoryview:
        """The payload of `array` (of `spec`): raw values are a view of it, not a copy."""
        array = np.ascontiguousarray(array, dtype=spec.dtype)
        return self._pack(array, spec) if spec.dtype in FLOATS else _raw(array)

    def unpack(self, data: bytes | memoryview, spec: TensorSpec) -> np.ndarray:
        """The tensor of `spec` that a payload of `nbytes(spec)` bytes holds; ModelRejected if it is
        malformed."""
        if len(data) != self.nbytes(spec):
            raise ModelRejected(
                f"tensor {spec.name!r}: {len(data)} payload bytes, expected {self.nbytes(spec)}"
            )
        if spec.dtype not in FLOATS:
            return np.frombuffer(data, dtype=spec.dtype).reshape(spec.shape)
        return self._unpack(data, spec).reshape(spec.shape)

    def bound(self, array: np.ndarray) -> np.ndarray:
        """The stated bound of |unpack(pack(x)) - x|, per value of the float tensor `array`."""
        return np.zeros(np.shape(array))

    def _nbytes(self, spec: TensorSpec) -> int:
        return spec.nbytes

    def _pack(self, array: np.ndarray, spec: TensorSpec) -> bytes | memoryview:
        return _raw(array)

    def _unpack(self, data: bytes | memoryview, spec: TensorSpec) -> np.ndarray:
        return np.frombuffer(data, dtype=spec.dtype).copy()

    def pack_model(
        self, arrays: Sequence[np.ndarray], specs: Sequence[TensorSpec]
    ) -> list[bytes | memoryview]:
        """The payload of each tensor of a model."""
        return [self.pack(a, s) for a, s in zip(arrays, specs, strict=True)]

    def unpack_model(self, data: bytes | memoryview, specs: Sequence[TensorSpec]) -> list[np.ndarray]:
        """The tensors of `specs` from their concatenated payloads (exactly `sum(nbytes)` bytes)."""
        view, arrays, offset = memoryview(data), [], 0
        for spec in specs:
            size = self.nbytes(spec)
            arrays.append(self.unpack(view[offset : offset + size], spec))
            offset += size
        if offset != len(view):
            raise ModelRejected(f"{len(view)} payload bytes, expected {offset}")
        return arrays


def _raw(array: np.ndarray) -> memoryview:
    """The bytes of a contiguous array, without a copy."""
    return memoryview(array.reshape(-1)).cast("B")


@dataclass(frozen=True)
class Fp16(Codec):
    """Half precision: 2 bytes a value. Error at most 2**-11 of the value, plus 2**-25 for values
    below half precision's normal range; a value beyond +-65504 becomes infinite, which the
    receiver's finiteness check refuses."""

    name: ClassVar[str] = "fp16"

    def _nbytes(self, spec: TensorSpec) -> int:
        return spec.size * 2

    def _pack(self, array: np.ndarray, spec: TensorSpec) -> bytes:
        with np.errstate(over="ignore"):  # beyond +-65504: infinite, as the docstring says
            return array.astype("<f2").tobytes()

    def _unpack(self, data: bytes | memoryview, spec: TensorSpec) -> np.ndarray:
        return np.frombuffer(data, dtype="<f2").astype(spec.dtype)

    def bound(self, array: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(array, np.float64)) * FP16_RELATIVE + FP16_SUBNORMAL


@dataclass(frozen=True)
class Int8(Codec):
    """8-bit integers with one float32 scale per tensor (max |x| / 127): 1 byte a value plus 4.
    Error at most half a step, scale / 2 (plus float rounding: a 2**-12 share of it, and the
    tensor dtype's own rounding of the largest magnitude)."""

    name: ClassVar[str] = "int8"

    def _nbytes(self, spec: TensorSpec) -> int:
        return SCALE.itemsize + spec.size

    def _pack(self, array: np.ndarray, spec: TensorSpec) -> bytes:
        scale = SCALE.type(_scale(array))
        steps = np.rint(array / scale) if scale > 0 else np.zeros(array.shape)
        return scale.tobytes() + np.clip(steps, -127, 127).astype(np.int8).tobytes()

    def _unpack(self, data: bytes | memoryview, spec: TensorSpec) -> np.ndarray:
        scale = float(np.frombuffer(data[: SCALE.itemsize], dtype=SCALE)[0])
        if not (math.isfinite(scale) and scale >= 0):
            raise ModelRejected(f"tensor {spec.name!r}: int8 scale {scale} is not a finite number >= 0")
        steps = np.frombuffer(data[SCALE.itemsize :], dtype=np.int8)
        return (steps.astype(np.float64) * scale).astype(spec.dtype)

    def bound(self, array: np.ndarray) -> np.ndarray:
        rounding = _scale(array) * 127 * float(np.finfo(np.asarray(array).dtype).eps)
        return np.full(np.shape(array), _scale(array) / 2 * (1 + 2.0**-12) + rounding)


def _scale(array: np.ndarray) -> float:
    """int8's step: the largest magnitude over 127 (0 for an empty or all-zero tensor)."""
    return float(np.max(np.abs(array))) / 127 if array.size else 0.0


@dataclass(frozen=True)
class TopK(Codec):
    """The k = ceil(ratio * n) values of largest magnitude (at least one) and their indices, 4 bytes
    each plus the value's own size; the others are sent as 0. Error: 0 on the values sent, at most
    the k-th largest magnitude on the others. With error feedback (`differential`: what is not
    sent stays in the difference to the receivers' copy, so it goes in a later push)."""

    name: ClassVar[str] = "topk"
    differential: ClassVar[bool] = True
    ratio: float = 0.1

    def k(self, spec: TensorSpec) -> int:
        """How many values of a tensor of `spec` are sent."""
        return min(spec.size, max(1, math.ceil(self.ratio * spec.size))) if spec.size else 0

    def _nbytes(self, spec: TensorSpec) -> int:
        return self.k(spec) * (INDEX.itemsize + np.dtype(spec.dtype).itemsize)

    def _pack(self, array: np.ndarray, spec: TensorSpec) -> bytes:
        flat, k = array.reshape(-1), self.k(spec)
        top = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]) if k else np.arange(0)
        return top.astype(INDEX).tobytes() + flat[top].tobytes()

    def _unpack(self, data: bytes | memoryview, spec: TensorSpec) -> np.ndarray:
        k = self.k(spec)
        indices = np.frombuffer(data[: k * INDEX.itemsize], dtype=INDEX)
        if k and (indices[-1] >= spec.size or np.any(np.diff(indices.astype(np.int64)) <= 0)):
            raise ModelRejected(
                f"tensor {spec.name!r}: top-k indices not increasing within 0..{spec.size - 1}"
            )
        out = np.zeros(spec.size, dtype=spec.dtype)
        out[indices] = np.frombuffer(data[k * INDEX.itemsize :], dtype=spec.dtype)
        return out

    def bound(self, array: np.ndarray) -> np.ndarray:
        flat = np.abs(np.asarray(array).reshape(-1))
        k = self.k(TensorSpec.of("x", np.shape(array), np.asarray(array).dtype))
        kth = float(np.partition(flat, flat.size - k)[flat.size - k]) if k else 0.0
        return np.full(np.shape(array), kth)


@dataclass(frozen=True)
class Choco(TopK):
    """CHOCO-gossip (Koloskova et al. 2019): top-k differences x - x_hat to the public copy x_hat
    that the sender and each of its neighbours keep; the peer then moves its model by gossip.codec_gamma
    towards the merge of the public copies (`fedgossip.client.gossip.compression`). The payload is
    top-k's."""

    name: ClassVar[str] = "choco"
    mixes: ClassVar[bool] = True


CODECS: dict[str, type[Codec]] = {"none": Codec, "fp16": Fp16, "int8": Int8, "topk": TopK, "choco": Choco}
"""The registry: codec name -> its class (one entry per codec; `codec` builds one)."""
FLOWER_CODECS = ("none", "fp16", "int8", "topk")
"""The codecs of a Flower ClientApp's replies (CHOCO's public copies need peers that gossip)."""


def codec(name: str, ratio: float = 1.0) -> Codec:
    """The codec `name` of the registry, with top-k's share of values `ratio` where it applies."""
    kind = CODECS[name]
    return kind(ratio=ratio) if issubclass(kind, TopK) else kind()


NONE = Codec()
