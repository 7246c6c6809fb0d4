"""Compressed gossip in one command: accuracy against bytes sent for each codec, average and VCA.

    python benchmarks/compression.py --out results/compression [--engine simulation] [--rounds 30]

Runs the quickstart (8 peers, digits, MLP, a random 3-regular graph, 30 rounds) once per codec of
`gossip.codec` and per rule (average, vca), skipping runs already complete (run it again after an
interruption), then draws each run's mean test accuracy against the bytes all peers sent so far
(`compression.png`, one panel per rule) and writes the final figures with each codec's pack and
unpack time per MB of float32 model (`compression.json`). The virtual-time engine (the default)
records what real peer processes record for synchronous gossip, in a fraction of the time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fedgossip.reports.records import read_records
from fedgossip.reports.summary import read_summary
from fedgossip.schema.codecs import CODECS, codec
from fedgossip.schema.tensors import TensorSpec

RULES = ("average", "vca")
MB = 1 << 20


def run(out: Path, name: str, rule: str, engine: str, rounds: int) -> Path:
    """The quickstart with gossip.codec `name` and strategy `rule` in `out` (kept if complete)."""
    folder = out / f"{rule}-{name}"
    summary = read_summary(folder)
    if summary is None or summary.get("status") != "complete":
        settings = [f"gossip.codec={name}", f"strategy.name={rule}", f"launcher.engine={engine}"]
        settings.append(f"experiment.rounds={rounds}")
        argv = [sys.executable, "-m", "fedgossip.launcher.cli", "run", "--out", str(folder)]
        for setting in settings:
            argv += ["--set", setting]
        subprocess.run(argv, check=False, capture_output=True)  # 3: the target accuracy not reached
    return folder


def curve(folder: Path) -> list[tuple[int, float]]:
    """(bytes sent by all peers up to the round, mean test accuracy of the round), round by round."""
    by_round: dict[int, list[dict]] = {}
    for record in read_records(folder):
        if isinstance(record["node"], int) and record["round"] > 0:
            by_round.setdefault(record["round"], []).append(record)
    points, sent = [], 0
    for round_ in sorted(by_round):
        records = by_round[round_]
        sent += sum(r["bytes_sent"] for r in records)
        accuracies = [r["test_accuracy"] for r in records if r["test_accuracy"] is not None]
        if accuracies:
            points.append((sent, float(np.mean(accuracies))))
    return points


def timing(size: int = MB // 4, repeats: int = 20) -> dict[str, dict[str, float]]:
    """Each codec's pack and unpack time, in milliseconds per MB of float32 tensor (the best of
    `repeats` on one tensor of `size` values)."""
    x = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    spec = TensorSpec.of("x", x.shape, x.dtype)
    found = {}
    for name in CODECS:
        packer = codec(name, 0.1)
        packs, unpacks = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            payload = packer.pack(x, spec)
            packed = time.perf_counter()
            packer.unpack(payload, spec)
            packs.append(packed - started)
            unpacks.append(time.perf_counter() - packed)
        per_mb = 1e3 * MB / x.nbytes
        found[name] = {
            "pack_ms_per_mb": round(min(packs) * per_mb, 3),
            "unpack_ms_per_mb": round(min(unpacks) * per_mb, 3),
            "bytes_per_value": round(len(payload) / size, 3),
        }
    return found


def plot(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> None:
    """Mean accuracy against cumulative bytes sent (log axis), one panel per rule, a line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(11, 4), sharey=True)
    for ax, (rule, by_codec) in zip(axes, curves.items(), strict=True):
        for index, (name, points) in enumerate(by_codec.items()):
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", color=f"C{index}", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("bytes sent by all peers so far")
        ax.set_title(f"strategy {rule}")
    axes[0].set_ylabel("mean test accuracy")
    axes[-1].legend(loc="lower right", title="gossip.codec")
    fig.suptitle("Compressed gossip on the quickstart (8 peers, digits, MLP, 3-regular graph)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--engine", default="simulation", choices=["simulation", "local"])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    final: dict[str, dict[str, dict]] = {}
    for rule in RULES:
        for name in CODECS:
            folder = run(args.out, name, rule, args.engine, args.rounds)
            summary = read_summary(folder) or {}
            curves.setdefault(rule, {})[name] = curve(folder) if summary else []
            final.setdefault(rule, {})[name] = {
                "status": summary.get("status"),
                "final_mean_accuracy": summary.get("final_mean_accuracy"),
                "bytes_sent": summary.get("bytes_sent"),
                "rounds_to_target": summary.get("rounds_to_target"),
            }
    found = {"runs": final, "codec_speed": timing()}
    (args.out / "compression.json").write_text(json.dumps(found, indent=2) + "\n")
    plot(curves, args.out / "compression.png")
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
