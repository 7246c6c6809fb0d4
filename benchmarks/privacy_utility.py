"""Privacy against utility in one command: node-level DP-SGD at equal epsilon in both runtimes.

    python benchmarks/privacy_utility.py --out results/privacy-utility [--epsilons 1,3,10] [--seeds 1]

Runs `fedgossip sweep`s (resumable: run it again after an interruption): gossip
with average and VCA (examples/privacy/gossip.toml) and Flower's FedAvg (examples/privacy/flower.toml)
over privacy.target_epsilon, plus each without privacy, then draws the final mean test accuracy
against epsilon (`privacy-utility.png`, the no-privacy runs as dashed lines) and writes the
figures to `privacy-utility.json`. Every node of every run spends the same epsilon at delta 1e-5
by the same accountant, so the runtimes compare at equal privacy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fedgossip.reports.summary import read_summary

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "privacy"
SERIES = {  # label -> (config, sweep folder, strategy)
    "gossip average": ("gossip.toml", "gossip", "average"),
    "gossip vca": ("gossip.toml", "gossip", "vca"),
    "flower fedavg": ("flower.toml", "flower", "fedavg"),
}


def sweep(config: str, out: Path, grids: list[str], seeds: int) -> None:
    """One `fedgossip sweep` of `config` over `grids` into `out` (its runs one at a time)."""
    argv = [sys.executable, "-m", "fedgossip.launcher.cli", "sweep", str(EXAMPLES / config)]
    for grid in grids:
        argv += ["--grid", grid]
    argv += ["--seeds", str(seeds), "--jobs", "1", "--out", str(out)]
    subprocess.run(argv, check=True)


def final_accuracy(folder: Path) -> float | None:
    """The final mean test accuracy of a run folder's summary (None if it did not finish)."""
    summary = read_summary(folder)
    return None if summary is None else summary.get("final_mean_accuracy")


def figures(out: Path, epsilons: list[str]) -> dict[str, dict[str, float | None]]:
    """Final mean accuracy by series and epsilon ("none": without privacy), seed 0's run."""
    found: dict[str, dict[str, float | None]] = {}
    for label, (_, folder, strategy) in SERIES.items():
        by_epsilon = {}
        for epsilon in [*epsilons, "none"]:
            runs = out / (f"{folder}-none" if epsilon == "none" else folder)
            key = "privacy.mechanism=none" if epsilon == "none" else f"privacy.target_epsilon={epsilon}"
            if folder == "gossip":
                key = f"{key}_strategy.name={strategy}"
            matches = sorted(runs.glob(f"{key}_seed=*")) if runs.exists() else []
            by_epsilon[epsilon] = final_accuracy(matches[0]) if matches else None
        found[label] = by_epsilon
    return found


def plot(found: dict[str, dict[str, float | None]], epsilons: list[str], path: Path) -> None:
    """Accuracy against epsilon (log axis), one line per series, no privacy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [float(e) for e in epsilons]
    for index, (label, by_epsilon) in enumerate(found.items()):
        color = f"C{index}"
        points = [(x, by_epsilon[e]) for x, e in zip(xs, epsilons, strict=True) if by_epsilon[e] is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", color=color, label=label)
        if by_epsilon["none"] is not None:
            ax.axhline(by_epsilon["none"], color=color, linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("epsilon per node (delta = 1e-5; dashed: no privacy)")
    ax.set_ylabel("final mean test accuracy")
    ax.set_title("DP-SGD on digits, 8 nodes: gossip and Flower at equal epsilon")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epsilons", default="1,3,10")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    epsilons = args.epsilons.split(",")
    private = f"privacy.target_epsilon={','.join(epsilons)}"
    plain = "privacy.mechanism=none"
    sweep("gossip.toml", args.out / "gossip", [private, "strategy.name=average,vca"], args.seeds)
    sweep("gossip.toml", args.out / "gossip-none", [plain, "strategy.name=average,vca"], args.seeds)
    sweep("flower.toml", args.out / "flower", [private], args.seeds)
    sweep("flower.toml", args.out / "flower-none", [plain], args.seeds)
    found = figures(args.out, epsilons)
    (args.out / "privacy-utility.json").write_text(json.dumps(found, indent=2) + "\n")
    plot(found, epsilons, args.out / "privacy-utility.png")
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
