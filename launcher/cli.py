"""The `fedgossip` command: run experiments, start a peer by hand, compare runs, make certificates."""

from __future__ import annotations

import contextlib
import os
import sys
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
    `error: ...` and exit 2, never a traceback."""
    from fedgossip.launcher.results import os_error_text

    try:
        yield
    except ValueError as err:
        _fail(str(err))
    except OSError as err:
        _fail(os_error_text(err))


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment TOML; omit for the built-in quickstart.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Results folder (default results/NAME-TIME).")
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", "-s", help="Override a key: section.key=value (repeatable).")
    ] = [],  # noqa: B006
) -> None:
    """Run one experiment (gossip or Flower) and write its results folder."""
    from fedgossip.config import load_config
    from fedgossip.launcher.results import default_out_dir
    from fedgossip.launcher.run import run_experiment

    with _clear_errors():
        experiment = load_config(config, set_)
        _, code = run_experiment(experiment, out or default_out_dir(experiment), console)
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
    from fedgossip.client.peer import run_peer

    with _clear_errors(), contextlib.ExitStack() as stack:
        sink = None if metrics is None else stack.enter_context(open(metrics, "a"))
        code = run_peer(str(config), set_, sink)
    raise typer.Exit(code)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Results folders to compare.")],
    plot: Annotated[Path, typer.Option(help="Where to write the comparison plot.")] = Path("compare.png"),
) -> None:
    """One table and one plot (accuracy vs rounds and vs time) for several runs."""
    from fedgossip.reports import compare as compare_runs
    from fedgossip.reports import summary_table

    with _clear_errors():
        summaries = compare_runs(runs, plot)
    console.print(summary_table(summaries, title="comparison"))
    console.print(f"plot: {escape(str(plot))}")


@app.command()
def certs(
    out: Annotated[Path, typer.Argument(help="Folder for ca.pem/ca.key and the node certificates.")],
    host: Annotated[
        list[str], typer.Option("--host", help="Host name or IP the certificate is for (repeatable).")
    ],
    name: Annotated[str, typer.Option(help="File name of the certificate (NAME.pem, NAME.key).")] = "node",
) -> None:
    """Make (or reuse) a CA in OUT and issue a node certificate for device deployments."""
    from fedgossip.launcher.certificates import Issued, make_ca, make_certificate

    with _clear_errors():
        ca = Issued(out / "ca.pem", out / "ca.key")
        if not ca.cert.exists():
            ca = make_ca(out)
        issued = make_certificate(ca, out, name, host)
    console.print(escape(f"CA: {ca.cert}\ncertificate: {issued.cert}\nkey: {issued.key}"))


def main() -> None:
    """Console entry point. The working directory is importable, as under `python -m`: a user's
    `package.module:function` (strategy, model) given relative to it is found."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    app(prog_name="fedgossip")


if __name__ == "__main__":
    main()
    sys.exit(0)
