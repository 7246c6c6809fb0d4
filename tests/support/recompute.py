"""The figures of a comparison row recomputed from scratch: metrics.jsonl parsed line by line with
json, the statistics with the standard library (not the numpy code under test)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def run_figures(run_dir: Path, target: float) -> dict:
    """One run's figures straight from its metrics.jsonl (and wall time from summary.json)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    nodes = [r for r in records if isinstance(r["node"], int)]
    last: dict[int, dict] = {}
    for r in nodes:
        if r["node"] not in last or r["round"] >= last[r["node"]]["round"]:
            last[r["node"]] = r
    final = [r["test_accuracy"] for r in last.values()]
    rounds = sorted({r["round"] for r in nodes})
    reached = None
    for round_ in rounds:
        accs = [r["test_accuracy"] for r in nodes if r["round"] == round_]
        if sum(accs) / len(accs) >= target:
            reached = round_
            break
    seconds = None
    if reached is not None:
        seconds = max(r["time_s"] for r in nodes if r["round"] == reached)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "final_mean_accuracy": sum(final) / len(final),
        "final_min_accuracy": min(final),
        "rounds_to_target": reached,
        "seconds_to_target": seconds,
        "bytes_sent": sum(r["bytes_sent"] for r in nodes),
        "wall_time_s": summary["wall_time_s"],
    }


def expected_stats(run_dirs: list[Path], target: float) -> dict[str, dict]:
    """Per figure: mean, sample std (None for one value) and count over the runs that have it."""
    per_run = [run_figures(path, target) for path in run_dirs]
    out = {}
    for key in per_run[0]:
        values = [f[key] for f in per_run if f[key] is not None]
        out[key] = {
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values),
        }
    return out


def assert_row_matches(row: dict, run_dirs: list[Path], target: float) -> None:
    """Every figure of a comparison row equals its independent recomputation."""
    expected = expected_stats(run_dirs, target)
    assert row["seeds"] == len(run_dirs)
    for key, stat in expected.items():
        got = row[key]
        assert got["n"] == stat["n"], key
        for part in ("mean", "std"):
            if stat[part] is None:
                assert got[part] is None, (key, part)
            else:
                assert abs(got[part] - stat[part]) <= 1e-9 * max(1.0, abs(stat[part])), (key, part, got, stat)
