"""Deploy: what production imports. Load an exported config and run it through the same call
path as the notebook, gate a model upgrade on the config's suite, roll back.

    runtime.py    load_config -> Deployed (run/arun: prompt, model, schema, confidence routing)
    promotion.py  gate(): the candidate model against the current one on the suite
                  (non-inferiority); a promotion is a new version of the file

The file format and its versions are `labkit.artifact` (shared with the notebook side that
writes them). Importing this package never imports pandas, plotly or the notebook stages:
the gate loads the statistics only when it runs.
"""

from ..artifact import (
    ConfidencePolicy,
    DeployedConfig,
    Evidence,
    SuiteItem,
    VersionInfo,
    read_config,
    rollback,
    save_config,
    versions,
)
from .promotion import GateVerdict, gate
from .runtime import Deployed, Output, load_config

__all__ = [
    "ConfidencePolicy",
    "Deployed",
    "DeployedConfig",
    "Evidence",
    "GateVerdict",
    "Output",
    "SuiteItem",
    "VersionInfo",
    "gate",
    "load_config",
    "read_config",
    "rollback",
    "save_config",
    "versions",
]
