"""Reports read results folders only: summaries, tables and plots; they never talk to nodes."""

from fedgossip.reports.compare import Comparison, compare, default_out_dir, find_runs
from fedgossip.reports.plots import plot_comparison, plot_consensus, plot_final, plot_run, plot_variance
from fedgossip.reports.records import read_config, read_records
from fedgossip.reports.summary import build_summary, summarize, write_summary
from fedgossip.reports.tables import compare_view, csv_table, markdown_table, run_table

__all__ = [
    "Comparison",
    "build_summary",
    "compare",
    "compare_view",
    "csv_table",
    "default_out_dir",
    "find_runs",
    "markdown_table",
    "plot_comparison",
    "plot_consensus",
    "plot_final",
    "plot_run",
    "plot_variance",
    "read_config",
    "read_records",
    "run_table",
    "summarize",
    "write_summary",
]
