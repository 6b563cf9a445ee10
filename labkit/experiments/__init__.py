"""Experiments: run a grid of prompts x models over a dataset, read the results with
statistics, charts and diagnostics, and export the winner as a config file.

    datasets.py     Dataset, load_dataset: rows with inputs and expected answers
    runner.py       Experiment: the grid, its cells run concurrently, resumable
    results.py      Results: the tidy frame, summary/compare/best/export_config
    stats.py        rates, intervals, paired tests, costs, latency (the frame contract)
    calibration.py  confidence calibration and the review threshold
    diagnostics.py  failure modes: collapse, parroting the format example, fallbacks
    plots.py        plotly figures of the same numbers
    report.py       a self-contained HTML report
    export.py       the winning variant written as a versioned config (labkit.artifact)

pandas is this stage's working format, so it is imported here at module top; deploy, which
production imports, depends on the config file format below this stage, never on it.
"""

from . import stats
from .datasets import Dataset, list_datasets, load_dataset
from .diagnostics import FailureModes, failure_modes, verdict
from .export import Winner, export_config
from .results import Results, best_variant
from .runner import Experiment

__all__ = [
    "Dataset",
    "Experiment",
    "FailureModes",
    "Results",
    "Winner",
    "best_variant",
    "export_config",
    "failure_modes",
    "list_datasets",
    "load_dataset",
    "stats",
    "verdict",
]
