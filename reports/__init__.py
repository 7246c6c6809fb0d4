"""Reports read results folders only: summaries, tables and plots; they never talk to nodes."""

from fedgossip.reports.compare import compare
from fedgossip.reports.plots import plot_comparison, plot_run
from fedgossip.reports.records import read_config, read_records
from fedgossip.reports.summary import build_summary, summarize, write_summary
from fedgossip.reports.tables import run_table, summary_table

__all__ = [
    "build_summary",
    "compare",
    "plot_comparison",
    "plot_run",
    "read_config",
    "read_records",
    "run_table",
    "summarize",
    "summary_table",
    "write_summary",
]
