"""Run one experiment end to end: results folder, the mode's runtime, summary, plot and table."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fedgossip.base.signals import Shutdown
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.experiments.prepare import prepare_shards
from fedgossip.launcher.gossip.placement import early_start
from fedgossip.launcher.network.hosts import check_network
from fedgossip.launcher.runs.outcome import LaunchError, Outcome
from fedgossip.launcher.runs.results import ResultsFolder, ResultsWriteError, default_out_dir
from fedgossip.launcher.supervision.memory import check_memory
from fedgossip.reports import (
    build_summary,
    plot_consensus,
    plot_run,
    plot_variance,
    read_records,
    run_table,
    write_summary,
)
from fedgossip.reports.mechanisms import mechanism_report
from fedgossip.reports.plots import pyplot_imported_in_background
from fedgossip.reports.records import SUMMARY, read_consensus
from fedgossip.reports.tracking import Track, Tracking, run_files
from fedgossip.tasks.stream import wrap_notice

EXIT_CODES = {"complete": 0, "failed": 1, "partial": 3, "degraded": 3, "interrupted": 130}
"""Exit status per run status; "interrupted" is 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM."""


def execute(
    config: ExperimentConfig,
    out: str | Path | None,
    console: Console,
    track: Track | None = None,
    started: float | None = None,
) -> tuple[Path, dict, int]:
    """`fedgossip run [--track ...]`: run `config` into `out` (default results/NAME-TIME); the
    folder, the summary and the exit status. The one path of the CLI and the Python API. The run's
    clock (time_s, startup_s, wall_time_s) starts at `started` (the command's start), or now: before
    its fork server starts, so the time it takes the launcher to prepare the run counts."""
    started = time.time() if started is None else started
    folder = Path(out) if out is not None else default_out_dir(config)
    # the fork server imports torch while this process imports the rest and pyplot (for the figures)
    with early_start(config), pyplot_imported_in_background():
        summary, code = run_experiment(config, folder, console, track, started)
    return folder, summary, code


def run_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    console: Console,
    track: Track | None = None,
    started: float | None = None,
) -> tuple[dict, int]:
    """Run `config` into `out_dir`; return the summary and the process exit status.

    A run that fails before any node recorded anything (topology, ports, certificates, the fork
    server: LaunchError) leaves no results folder behind; one whose metrics cannot be written (a
    full disk) stops and is "failed". The folder is claimed for the whole run: another command
    into it is refused (ValueError). With `track`, every record is also sent to that tracker. The
    run's clock starts at `started` (epoch seconds; None: now)."""
    started = time.time() if started is None else started
    check_memory(config)
    check_network(config)
    results = ResultsFolder(out_dir, config)
    try:
        return _run_into(config, results, out_dir, console, track, started)
    finally:
        results.close()  # and the claim released, however the run ended


def _run_into(
    config: ExperimentConfig,
    results: ResultsFolder,
    out_dir: Path,
    console: Console,
    track: Track | None,
    started: float,
) -> tuple[dict, int]:
    """`run_experiment` once its results folder is claimed."""
    if results.stale is not None:
        stale = f"{out_dir} was claimed by a command that died ({results.stale}): taken over"
        console.print(f"[yellow]{escape(stale)}[/]")
    console.print(
        f"[bold]{escape(config.experiment.name)}[/]: {config.experiment.mode} mode, "
        f"{config.nodes.count} nodes, {config.experiment.rounds} rounds, "
        f"strategy {config.strategy.name} -> {escape(str(out_dir))}"
    )
    notice = wrap_notice(config.task.stream_chunks, config.experiment.rounds)
    if notice:
        console.print(f"[yellow]{escape(notice)}[/]")
    tracking = None if track is None else Tracking(track, results.path, config)
    if tracking is not None:
        results.listeners.append(tracking.record)
    with Shutdown() as shutdown:  # SIGTERM takes Ctrl-C's path; signals during the shutdown are ignored
        try:
            config = prepare_shards(config, results.path)  # config.toml keeps the config as given
            config.privacy.check_model(config.task, config.nodes.count, config.experiment.seed)
            outcome = _runtime(config)(config, results, console, started)
        except KeyboardInterrupt:
            outcome = Outcome(status="interrupted", wall_time_s=time.time() - started)
            console.print("[yellow]interrupted: every node process was stopped; finished rounds are kept[/]")
        except ResultsWriteError:  # every node process was stopped on the way out
            outcome = Outcome(status="failed", wall_time_s=time.time() - started)
        except LaunchError as err:  # e.g. the fork server died: no folder left if nothing was recorded
            if results.discard_unstarted():
                _abandon(tracking)
                raise
            outcome = Outcome(status="failed", errors=[f"failed: {err}"], wall_time_s=time.time() - started)
        except BaseException:
            results.discard_unstarted()
            _abandon(tracking)
            raise
        finally:
            shutdown.begin()
        summary = finish_run(config, results, out_dir, outcome, console, tracking)
    code = shutdown.exit_code if outcome.status == "interrupted" else EXIT_CODES[outcome.status]
    return summary, code


def _abandon(tracking: Tracking | None) -> None:
    """End the tracker's run as failed when the launcher fails with no summary to give it, so it is
    never left "running" in the tracker."""
    if tracking is not None:
        tracking.finish({"status": "failed"}, [])
        tracking.close()


def finish_run(
    config: ExperimentConfig,
    results: ResultsFolder,
    out_dir: Path,
    outcome: Outcome,
    console: Console,
    tracking: Tracking | None = None,
) -> dict:
    """What a run's records make once it ended (a launched run, or a deployment's records that
    `fedgossip collect` gathered): summary.json, the figures, the tracker's last words, the table;
    the summary."""
    if results.failure:
        outcome.status = "failed"
        outcome.errors.append(results.failure)
    summary = build_summary(out_dir, outcome.info())
    results.save(SUMMARY, lambda path: write_summary(path, summary))
    title = f"{config.experiment.name}: test accuracy"
    records = read_records(out_dir)
    results.save("accuracy.png", lambda path: plot_run(records, path, title))
    results.save("variance.png", lambda path: plot_variance(records, path, title))
    consensus_title = f"{config.experiment.name}: consensus distance"
    consensus = read_consensus(out_dir, records)
    results.save("consensus.png", lambda path: plot_consensus(consensus, path, consensus_title))
    report = mechanism_report(config.strategy.name)
    if report is not None:  # a mechanism's own plot, e.g. fair incentives' fair.png
        own_title = f"{config.experiment.name}: {report.title}"
        results.save(f"{report.name}.png", lambda path: report.plot(records, config, path, own_title))
    if tracking is not None:
        tracking.finish(summary, run_files(results.path))
        results.warnings += tracking.close()
    console.print(run_table(summary, title=config.experiment.name))
    console.print(f"results: {escape(str(out_dir))} (metrics.jsonl, summary.json, *.png, logs/)")
    for warning in results.warnings:
        console.print(f"[yellow]{escape(warning)}[/]")
    for error in outcome.errors:
        console.print(f"[red]{escape(error)}[/]")
    return summary


def _runtime(config: ExperimentConfig):
    """The function that runs this config's mode."""
    if config.experiment.mode == "gossip":
        from fedgossip.launcher.gossip.launch import run_gossip  # after the fork server's early start

        return run_gossip
    from fedgossip.launcher.flower.launch import run_flower

    return run_flower
