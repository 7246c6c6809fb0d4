"""The `fedgossip` command: run experiments and sweeps, start a peer, compare runs, make certificates."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="fedgossip: federated (Flower) and peer-to-peer gossip learning testbed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(emoji=False)  # names and paths are shown as written, ":x:" included


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


@contextlib.contextmanager
def _clear_errors() -> Iterator[None]:
    """Bad input (ValueError) and OS errors (a path under a file, a full or read-only disk) become
    `error: ...` and exit 2, a launcher that could not start the run `failed: ...` and exit 1,
    never a traceback."""
    from fedgossip.launcher.runs.outcome import LaunchError

    try:
        yield
    except LaunchError as err:
        console.print(f"[red]failed:[/] {escape(str(err))}")
        raise typer.Exit(1) from None
    except ValueError as err:
        _fail(str(err))
    except OSError as err:
        from fedgossip.launcher.runs.results import os_error_text  # imports the reports: when needed

        _fail(os_error_text(err))


ExperimentArg = Annotated[
    Path | None, typer.Argument(help="Experiment TOML; omit for the built-in quickstart.")
]
Overrides = Annotated[
    list[str], typer.Option("--set", "-s", help="Override a key: section.key=value (repeatable).")
]


TrackOption = Annotated[
    str | None,
    typer.Option(
        "--track", help="Stream records, config, summary and figures to mlflow, tensorboard or wandb."
    ),
]
TrackUriOption = Annotated[
    str | None,
    typer.Option(
        "--track-uri",
        help="MLflow tracking URI, TensorBoard log folder or W&B mode "
        "(default: offline, in the results folder).",
    ),
]


@app.command()
def run(
    config: ExperimentArg = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Results folder (default results/NAME-TIME).")
    ] = None,
    set_: Overrides = [],  # noqa: B006
    track: TrackOption = None,
    track_uri: TrackUriOption = None,
) -> None:
    """Run one experiment (gossip or Flower) and write its results folder."""
    from fedgossip.config import load_config
    from fedgossip.launcher import STARTED
    from fedgossip.launcher.gossip.placement import early_start

    with _clear_errors():
        loaded = load_config(config, set_)
        with early_start(loaded):  # the fork server imports torch while this process imports the rest
            from fedgossip.launcher.experiments.run import execute
            from fedgossip.reports.tracking import Track

            tracked = None if track is None else Track(track, track_uri)
            _, _, code = execute(loaded, out, console, tracked, started=STARTED)
    raise typer.Exit(code)


@app.command()
def peer(
    config: Annotated[Path, typer.Argument(help="Node config: an experiment TOML with a [peer] section.")],
    set_: Annotated[list[str], typer.Option("--set", "-s", help="Override a key: section.key=value.")] = [],  # noqa: B006
    metrics: Annotated[
        Path | None, typer.Option(help="Append metrics records here (default stdout).")
    ] = None,
    threads: Annotated[int, typer.Option(help="BLAS/OpenMP threads of this process.")] = 1,
) -> None:
    """Start one gossip peer by hand (device deployments; TLS and token from its [peer] section)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    from fedgossip.client.gossip.peer import run_peer
    from fedgossip.client.gossip.transport.security import check_node_config
    from fedgossip.config import load_config

    with _clear_errors(), contextlib.ExitStack() as stack:
        check_node_config(load_config(str(config), set_))  # bad input: one `error:` line, exit 2
        sink = None if metrics is None else stack.enter_context(open(metrics, "a"))
        code = run_peer(str(config), set_, sink)
    raise typer.Exit(code)


FORMATS = ("table", "csv", "json", "markdown")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Results folders, or sweep folders of them.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder for compare.csv, compare.json, compare.png and compare-final.png "
            "(default: the sweep folder when it is the one DIR given, else the current folder).",
        ),
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="table (terminal), or print the full csv, json or markdown.")
    ] = "table",
    target: Annotated[
        float | None, typer.Option(help="Target accuracy (default: each run's experiment.target_accuracy).")
    ] = None,
) -> None:
    """Group runs that differ only by seed (mean ± std over seeds); one table, CSV, JSON and figures."""
    from fedgossip.reports import compare as compare_runs
    from fedgossip.reports import default_out_dir

    with _clear_errors():
        if format_ not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {format_!r}")
        comparison = compare_runs(runs, out or default_out_dir(runs), target)
    _show_comparison(comparison, format_)


def _show_comparison(comparison, format_: str = "table") -> None:
    """Print a comparison: the terminal table (wide or stacked to fit), or the full table as
    csv/json/markdown on stdout with the list of written files on stderr."""
    from fedgossip.reports import compare_view, csv_table, markdown_table

    files = "written: " + ", ".join(str(path) for path in comparison.files)
    if format_ == "table":
        console.print(compare_view(comparison.rows, console))
        console.print(escape(files))
        return
    if format_ == "json":
        text = json.dumps({"groups": comparison.rows}, indent=2) + "\n"
    else:
        text = (csv_table if format_ == "csv" else markdown_table)(comparison.rows)
    sys.stdout.write(text)
    sys.stdout.flush()
    print(files, file=sys.stderr)


@app.command()
def sweep(
    config: ExperimentArg = None,
    grid: Annotated[
        list[str],
        typer.Option("--grid", "-g", help="section.key=v1,v2,... : one axis of the grid (repeatable)."),
    ] = [],  # noqa: B006
    seeds: Annotated[int, typer.Option(help="Seeds per grid point: experiment.seed + 0..N-1.")] = 1,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Runs at once (default: cores // nodes per run, >= 1).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Sweep folder (required): one results folder per run; rerun into it to resume.",
        ),
    ] = None,
    set_: Overrides = [],  # noqa: B006
    track: TrackOption = None,
    track_uri: TrackUriOption = None,
) -> None:
    """Run a grid of config values x seeds (skipping runs already finished), then compare them."""
    from fedgossip.launcher.experiments.sweep import sweep_folder
    from fedgossip.reports import compare as compare_runs
    from fedgossip.reports.compare import is_sweep
    from fedgossip.reports.tracking import Track

    with _clear_errors():
        if out is None:
            raise ValueError("--out is required: the sweep folder (give the same one again to resume)")
        tracked = None if track is None else Track(track, track_uri)
        outcome = sweep_folder(config, set_, grid, seeds, jobs, out, console, tracked)
    console.print(
        f"sweep: {len(outcome.results)} runs in {outcome.wall_time_s:.1f}s "
        f"({sum(not r.skipped for r in outcome.results)} run now)"
    )
    if outcome.interrupted:
        console.print("[yellow]interrupted: the same command runs only what is missing[/]")
    elif not is_sweep(out):
        console.print("[red]no run recorded anything: nothing to compare[/]")
    else:
        with _clear_errors():
            _show_comparison(compare_runs([out], out))
    raise typer.Exit(outcome.exit_code)


@app.command()
def reproduce(
    name: Annotated[
        str,
        typer.Argument(
            help="vanishing-variance, fair-incentives, dp-bayesian-regression, fedgmm or fedgmm-mnist."
        ),
    ],
    quick: Annotated[
        bool, typer.Option("--quick", help="A tiny setting (CI): seconds, numbers meaningless.")
    ] = False,
    full: Annotated[bool, typer.Option("--full", help="The paper-sized setting (long).")] = False,
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="Seeds per method (default: the setting's).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder of the runs (default results/reproduce/NAME); rerun to resume."
        ),
    ] = None,
    docs: Annotated[Path, typer.Option(help="Folder of the write-up NAME.md and its figures.")] = Path(
        "docs/reproductions"
    ),
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Runs at once (default: cores // nodes per run, >= 1).")
    ] = None,
) -> None:
    """Reproduce a paper's experiment in one command: its runs (a sweep), figures and write-up."""
    from fedgossip.launcher.experiments.papers import IN_PROCESS
    from fedgossip.launcher.experiments.reproduce import default_out, plan, reproduce
    from fedgossip.launcher.experiments.sweep import default_jobs
    from fedgossip.reports.reproductions import write_report

    with _clear_errors():
        if quick and full:
            raise ValueError("--quick and --full are exclusive: choose one setting")
        setting = "quick" if quick else "full" if full else "default"
        if name in IN_PROCESS:
            _reproduce_dp_regression(setting, seeds, out, docs)
            return
        planned = plan(name, setting, seeds)
        out = out or default_out(name, setting)
        outcome = reproduce(planned, out, default_jobs(planned.runs) if jobs is None else jobs, console)
    if outcome.interrupted:
        console.print("[yellow]interrupted: the same command runs only what is missing[/]")
        raise typer.Exit(outcome.exit_code)
    with _clear_errors():
        files = write_report(out, docs)
    console.print(escape(f"reproduction {name} ({setting}) in {outcome.wall_time_s:.1f}s; written: "))
    console.print(escape(", ".join(str(path) for path in files)))
    raise typer.Exit(outcome.exit_code)


def _reproduce_dp_regression(setting: str, repeats: int | None, out: Path | None, docs: Path) -> None:
    """`fedgossip reproduce dp-bayesian-regression`: its in-process experiments and write-up."""
    from fedgossip.launcher.experiments.dp_regression import reproduce_dp_regression
    from fedgossip.launcher.experiments.reproduce import default_out

    out = out or default_out("dp-bayesian-regression", setting)
    files = reproduce_dp_regression(setting, repeats, out, docs, lambda line: console.print(escape(line)))
    console.print(escape("written: " + ", ".join(str(path) for path in files)))


@app.command()
def track(
    runs: Annotated[list[Path], typer.Argument(help="Finished results folders, or sweep folders of them.")],
    to: Annotated[str, typer.Option("--to", help="mlflow, tensorboard or wandb.")] = "mlflow",
    uri: TrackUriOption = None,
) -> None:
    """Send finished runs (records, config, summary, figures) to a tracker, as `run --track` does."""
    from fedgossip.reports import find_runs
    from fedgossip.reports.tracking import Track, track_run

    with _clear_errors():
        tracked = Track(to, uri)
        folders = find_runs(runs)
    failed = False
    for folder in folders:
        with _clear_errors():
            warnings = track_run(tracked, folder)
        for warning in warnings:
            console.print(f"[red]{escape(warning)}[/]")
        failed = failed or bool(warnings)
        console.print(escape(f"{folder}: {'failed' if warnings else 'tracked'} ({to})"))
    raise typer.Exit(1 if failed else 0)


@app.command()
def report(
    runs: Annotated[
        list[Path], typer.Argument(help="A results folder, a sweep folder, or several to compare.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="The page (default DIR/report.html for one folder, else ./report.html)."
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML page (opens offline) of a run, a sweep or a comparison."""
    from fedgossip.reports.html import write_html_report

    with _clear_errors():
        path = write_html_report(runs, out)
    console.print(escape(f"written: {path}"))


@app.command()
def certs(
    out: Annotated[Path, typer.Argument(help="Folder for ca.pem/ca.key and the node certificates.")],
    host: Annotated[
        list[str], typer.Option("--host", help="Host name or IP the certificate is for (repeatable).")
    ],
    name: Annotated[str, typer.Option(help="File name of the certificate (NAME.pem, NAME.key).")] = "node",
) -> None:
    """Make (or reuse) a CA in OUT and issue a node certificate for device deployments."""
    from fedgossip.base.certificates import Issued, make_ca, make_certificate

    with _clear_errors():
        ca = Issued(out / "ca.pem", out / "ca.key")
        if not ca.cert.exists():
            ca = make_ca(out)
        issued = make_certificate(ca, out, name, host)
    console.print(escape(f"CA: {ca.cert}\ncertificate: {issued.cert}\nkey: {issued.key}"))


@app.command()
def bundle(
    config: ExperimentArg = None,
    hosts: Annotated[
        Path | None, typer.Option("--hosts", help="Inventory: node id -> host, port (docs/devices.md).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for one folder per device (new or empty).")
    ] = None,
    set_: Overrides = [],  # noqa: B006
) -> None:
    """Write one folder per device (node config, certificates, keys, start.sh, systemd unit)."""
    from fedgossip.config import load_config
    from fedgossip.launcher.devices.bundle import write_bundle

    with _clear_errors():
        if hosts is None or out is None:
            raise ValueError("--hosts (the inventory) and --out (the bundle folder) are required")
        folders = write_bundle(load_config(config, set_), hosts, out)
    names = folders[0].name if len(folders) == 1 else f"{folders[0].name} ... {folders[-1].name}"
    console.print(escape(f"{len(folders)} device folders in {out} ({names}); next: docs/devices.md"))


@app.command()
def collect(
    devices: Annotated[list[Path], typer.Argument(help="Device folders copied back (or a folder of them).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The results folder to write.")],
) -> None:
    """Gather the devices' records and logs into one results folder (report/compare read it)."""
    from fedgossip.launcher.devices.collect import collect as collect_devices
    from fedgossip.launcher.experiments.run import EXIT_CODES

    with _clear_errors():
        _, status = collect_devices(devices, out, console)
    raise typer.Exit(EXIT_CODES[status])


@app.command()
def superlink(
    folder: Annotated[Path, typer.Argument(help="The SuperLink device folder of a Flower bundle.")],
) -> None:
    """Run a Flower bundle's SuperLink device: SuperLink, keys, the run submitted and followed to its end."""
    from fedgossip.launcher.devices.superlink_device import run_superlink_device

    with _clear_errors():
        code = run_superlink_device(folder, lambda line: console.print(escape(line)))
    raise typer.Exit(code)


def main() -> None:
    """Console entry point. The working directory is importable, as under `python -m`: a user's
    `package.module:function` (strategy, model) given relative to it is found."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        app(prog_name="fedgossip")
    except SystemExit as done:
        _exit_without_teardown(done)


def _exit_without_teardown(done: SystemExit) -> None:
    """End the command as `done` would, minus the interpreter's teardown of every imported module
    (0.2-1 s after a run, which imported grpc, matplotlib, networkx...): the exit handlers run and
    the output is flushed, then the process ends. With a non-daemon thread still running, the
    ordinary exit (which waits for it)."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if any(thread.is_alive() for thread in others):
        raise done
    code = done.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
    sys.exit(0)
