"""What SecAgg+ costs in Flower's deployment engine: seconds per round and bytes against plain
Flower FedAvg on the same deployment (SuperLink + --nodes SuperNodes on loopback, digits MLP,
same config and seed; runs alternate so load drifts hit both alike).

Reported per setting: the mean and median round time, the time of the training phase alone (SecAgg+:
its four exchanges, each a ClientApp process on every SuperNode), the bytes a node sends and
receives a round (model tensors; under SecAgg+ also public keys, encrypted shares and the masked
vector, whose words are int64 where the model's are float32), and how far the final global model is
from FedAvg's (SecAgg+'s quantization).

    python benchmarks/bench_secagg.py                       # 3 SuperNodes, 3 rounds, 1 run each
    python benchmarks/bench_secagg.py --nodes 5 --rounds 5 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_flower import DEPLOYMENT, _load, fedgossip_run

from fedgossip.base.flower_protocol import load_model
from fedgossip.reports import read_records

SETTINGS = {
    "fedavg": ["strategy.name=fedavg"],
    "secagg+": ["strategy.name=fedavg", 'flower.secure_aggregation="secagg+"'],
}


def per_round(out: Path) -> dict[str, float]:
    """Mean per-node bytes sent and received a round and the server's train phase seconds."""
    records = [r for r in read_records(out) if r["round"] >= 1]
    nodes = [r for r in records if r["node"] != "server"]
    server = [r for r in records if r["node"] == "server"]
    return {
        "sent": statistics.mean(r["bytes_sent"] for r in nodes),
        "received": statistics.mean(r["bytes_received"] for r in nodes),
        "train_s": statistics.mean(r.get("train_s", 0.0) for r in server),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3, help="SuperNodes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    config = [*DEPLOYMENT, f"nodes.count={args.nodes}", f"experiment.rounds={args.rounds}"]
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bench-secagg-") as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for repeat in range(args.repeats):
            for name, settings in SETTINGS.items():
                out = root / f"{name.replace('+', 'plus')}-{repeat}"
                result = fedgossip_run(out, [*config, *settings], timeout=180 + 180 * args.rounds)
                result.update(per_round(out))
                runs[name].append(result)
                print(
                    f"  {name:8s} run {repeat + 1}: round {result['mean_round_s']:.2f}s (load {_load()})",
                    flush=True,
                )
        print(
            f"\nSecAgg+ against FedAvg: {args.nodes} SuperNodes, digits MLP, {args.rounds} rounds, "
            f"load {_load()}"
        )
        print(
            f"{'setting':9s} {'round s':>8s} {'median':>8s} {'train s':>8s} "
            f"{'sent B':>9s} {'received B':>11s}"
        )
        means = {}
        for name, results in runs.items():
            means[name] = {
                key: statistics.mean(r[key] for r in results)
                for key in ("mean_round_s", "train_s", "sent", "received")
            }
            median = statistics.median(x for r in results for x in r["round_s"])
            m = means[name]
            print(
                f"{name:9s} {m['mean_round_s']:8.2f} {median:8.2f} {m['train_s']:8.2f} "
                f"{m['sent']:9.0f} {m['received']:11.0f}"
            )
        plain, secure = means["fedavg"], means["secagg+"]
        print(
            f"SecAgg+ / FedAvg: round time {secure['mean_round_s'] / plain['mean_round_s']:.2f}x, "
            f"train phase {secure['train_s'] / plain['train_s']:.2f}x, "
            f"bytes sent {secure['sent'] / plain['sent']:.2f}x, "
            f"received {secure['received'] / plain['received']:.2f}x"
        )
        a, b = load_model(runs["secagg+"][0]["model"]), load_model(runs["fedavg"][0]["model"])
        diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        print(f"final global models: max |SecAgg+ - FedAvg| = {diff:.3g}")


if __name__ == "__main__":
    main()
