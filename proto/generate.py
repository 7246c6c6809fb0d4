"""Regenerate the gossip stubs: `python -m fedgossip.proto.generate` (needs grpcio-tools).

The .proto is compiled from a temporary include root shaped like the import path, so the generated
modules import each other as `fedgossip.proto.gossip_pb2` and work from an installed wheel.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
GENERATED = ("gossip_pb2.py", "gossip_pb2_grpc.py", "gossip_pb2.pyi")


def generate(out_dir: Path = HERE) -> list[Path]:
    """Compile gossip.proto into `out_dir`; return the written files."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        package = root / "fedgossip" / "proto"
        package.mkdir(parents=True)
        shutil.copy(HERE / "gossip.proto", package / "gossip.proto")
        include = Path(protoc.__file__).parent / "_proto"
        args = [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={root}",
            f"--pyi_out={root}",
            f"--grpc_python_out={root}",
            "fedgossip/proto/gossip.proto",
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on gossip.proto")
        out_dir.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy(package / name, out_dir / name)) for name in GENERATED]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for path in generate(target):
        print(path)
