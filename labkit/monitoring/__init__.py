"""Monitoring: production's traces watched for drift, per window and group, and each deployed
version judged against the one before it.

    watch.py  monitor(), upgrade_watch(), history(), history_table(): the shift tests and their verdicts
    sql.py    windows, groups and histograms computed in SQLite over the trace store
    drift.py  the distances and tests (PSI, KS from binned counts, two proportions)

It reads traces (tracing.py) and config versions (artifact.py) and uses the experiment
statistics (Holm); nothing below imports it.
"""

from .drift import hist_quantile, ks_from_counts, ks_pvalue, psi, two_proportions
from .watch import (
    MonitorReport,
    UpgradeVerdict,
    history,
    history_table,
    monitor,
    parse_duration,
    upgrade_watch,
)

__all__ = [
    "MonitorReport",
    "UpgradeVerdict",
    "hist_quantile",
    "history",
    "history_table",
    "ks_from_counts",
    "ks_pvalue",
    "monitor",
    "parse_duration",
    "psi",
    "two_proportions",
    "upgrade_watch",
]
