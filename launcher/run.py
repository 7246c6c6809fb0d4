"""Run one experiment end to end: results folder, the mode's runtime, summary, plot and table."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from fedgossip.config import ExperimentConfig
from fedgossip.launcher.gossip import Outcome, run_gossip
from fedgossip.launcher.results import ResultsFolder
from fedgossip.reports import plot_run, read_records, run_table, summarize
from fedgossip.tasks.prepare import prepare_shards

EXIT_CODES = {"complete": 0, "failed": 1, "partial": 3, "interrupted": 130}


def run_experiment(config: ExperimentConfig, out_dir: Path, console: Console) -> tuple[dict, int]:
    """Run `config` into `out_dir`; return the summary and the process exit status."""
    results = ResultsFolder(out_dir, config)
    console.print(
        f"[bold]{config.experiment.name}[/]: {config.experiment.mode} mode, "
        f"{config.nodes.count} nodes, {config.experiment.rounds} rounds, "
        f"strategy {config.strategy.name} -> {out_dir}"
    )
    started = time.time()
    try:
        config = prepare_shards(config, results.path)  # config.toml keeps the config as given
        outcome = _runtime(config)(config, results, console)
    except KeyboardInterrupt:
        outcome = Outcome(status="interrupted", wall_time_s=time.time() - started)
        console.print("[yellow]interrupted: every node process was stopped; finished rounds are kept[/]")
    finally:
        results.close()
    summary = summarize(out_dir, outcome.info())
    plot_run(read_records(out_dir), out_dir / "accuracy.png", f"{config.experiment.name}: test accuracy")
    console.print(run_table(summary, title=config.experiment.name))
    console.print(f"results: {out_dir} (metrics.jsonl, summary.json, accuracy.png, logs/)")
    for error in outcome.errors:
        console.print(f"[red]{error}[/]")
    return summary, EXIT_CODES[outcome.status]


def _runtime(config: ExperimentConfig):
    """The function that runs this config's mode."""
    if config.experiment.mode == "gossip":
        return run_gossip
    from fedgossip.launcher.flower import run_flower

    return run_flower
