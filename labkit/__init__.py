"""labkit: cached, traced, model-switchable LLM generation with JSON repair, per-field
confidence and evaluation loops, for tuning prompts and comparing models in Jupyter.

The public surface is this module's `__all__` (pinned by tests/test_public_api.py). Heavy parts
(litellm, llama.cpp, pandas, plotly, ipywidgets) load on first use, so `import labkit` is fast
and production code never pulls in Jupyter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AllModelsFailed,
    CircuitOpen,
    ConfigError,
    ContextOverflow,
    DatasetError,
    InputError,
    LabkitError,
    MissingDependency,
    ProviderError,
    RateLimited,
    RepairFailed,
    RetryExhausted,
    TemplateError,
    UnknownModel,
)

if TYPE_CHECKING:
    import pandas as pd

    from .artifact import history, rollback
    from .chunking import amap_chunks, map_chunks
    from .client import Client, configure, default_client
    from .deploy.runtime import Deployed, GateVerdict, gate, load_config
    from .evaluation.checks import (
        ConfidenceAbove,
        EvalContext,
        Evaluator,
        ExactMatch,
        FieldMatch,
        InEnum,
        NumericTolerance,
        Regex,
        SchemaValid,
        Score,
        evaluator,
        evaluator_from_spec,
    )
    from .evaluation.judge import (
        EvalLoopResult,
        LLMJudge,
        agenerate_with_evaluation,
        generate_with_evaluation,
    )
    from .experiments.datasets import Dataset, list_datasets, load_dataset
    from .experiments.export import export_config
    from .experiments.results import Results
    from .experiments.runner import Experiment
    from .models import Registry
    from .monitoring.watch import monitor
    from .redact import Redactor
    from .structured.extract import Parsed, parse
    from .structured.schema import to_json_schema
    from .types import Completion, Usage

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    # the call path
    "Client": ("client", "Client"),
    "Completion": ("types", "Completion"),
    "Usage": ("types", "Usage"),
    "configure": ("client", "configure"),
    "default_client": ("client", "default_client"),
    "Registry": ("models", "Registry"),
    "Redactor": ("redact", "Redactor"),
    # structured output
    "parse": ("structured.extract", "parse"),
    "Parsed": ("structured.extract", "Parsed"),
    "to_json_schema": ("structured.schema", "to_json_schema"),
    # long inputs
    "map_chunks": ("chunking", "map_chunks"),
    "amap_chunks": ("chunking", "amap_chunks"),
    # evaluation
    "Score": ("evaluation.checks", "Score"),
    "EvalContext": ("evaluation.checks", "EvalContext"),
    "Evaluator": ("evaluation.checks", "Evaluator"),
    "evaluator": ("evaluation.checks", "evaluator"),
    "evaluator_from_spec": ("evaluation.checks", "evaluator_from_spec"),
    "ExactMatch": ("evaluation.checks", "ExactMatch"),
    "FieldMatch": ("evaluation.checks", "FieldMatch"),
    "InEnum": ("evaluation.checks", "InEnum"),
    "Regex": ("evaluation.checks", "Regex"),
    "NumericTolerance": ("evaluation.checks", "NumericTolerance"),
    "SchemaValid": ("evaluation.checks", "SchemaValid"),
    "ConfidenceAbove": ("evaluation.checks", "ConfidenceAbove"),
    "LLMJudge": ("evaluation.judge", "LLMJudge"),
    "generate_with_evaluation": ("evaluation.judge", "generate_with_evaluation"),
    "agenerate_with_evaluation": ("evaluation.judge", "agenerate_with_evaluation"),
    "EvalLoopResult": ("evaluation.judge", "EvalLoopResult"),
    # datasets and experiments
    "Dataset": ("experiments.datasets", "Dataset"),
    "load_dataset": ("experiments.datasets", "load_dataset"),
    "list_datasets": ("experiments.datasets", "list_datasets"),
    "Experiment": ("experiments.runner", "Experiment"),
    "Results": ("experiments.results", "Results"),
    # notebook to production
    "export_config": ("experiments.export", "export_config"),
    "load_config": ("deploy.runtime", "load_config"),
    "Deployed": ("deploy.runtime", "Deployed"),
    "gate": ("deploy.runtime", "gate"),
    "GateVerdict": ("deploy.runtime", "GateVerdict"),
    "rollback": ("artifact", "rollback"),
    "history": ("artifact", "history"),
    # production watch
    "monitor": ("monitoring.watch", "monitor"),
}

__all__ = [
    "AllModelsFailed",
    "CircuitOpen",
    "Client",
    "Completion",
    "ConfidenceAbove",
    "ConfigError",
    "ContextOverflow",
    "Dataset",
    "DatasetError",
    "Deployed",
    "EvalContext",
    "EvalLoopResult",
    "Evaluator",
    "ExactMatch",
    "Experiment",
    "FieldMatch",
    "GateVerdict",
    "InEnum",
    "InputError",
    "LLMJudge",
    "LabkitError",
    "MissingDependency",
    "NumericTolerance",
    "Parsed",
    "ProviderError",
    "RateLimited",
    "Redactor",
    "Regex",
    "Registry",
    "RepairFailed",
    "Results",
    "RetryExhausted",
    "SchemaValid",
    "Score",
    "TemplateError",
    "UnknownModel",
    "Usage",
    "__version__",
    "agenerate",
    "agenerate_with_evaluation",
    "amap_chunks",
    "configure",
    "default_client",
    "evaluator",
    "evaluator_from_spec",
    "export_config",
    "gate",
    "generate",
    "generate_with_evaluation",
    "history",
    "list_datasets",
    "load_config",
    "load_dataset",
    "map_chunks",
    "monitor",
    "parse",
    "rollback",
    "to_json_schema",
    "traces",
]


def __dir__() -> list[str]:
    return list(__all__)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def generate(prompt: str | None = None, **kwargs: Any) -> Completion:
    """Generate through the default client; see `labkit.Client.generate`."""
    from .client import default_client

    return default_client().generate(prompt, **kwargs)


async def agenerate(prompt: str | None = None, **kwargs: Any) -> Completion:
    """Async `generate` through the default client."""
    from .client import default_client

    return await default_client().agenerate(prompt, **kwargs)


def traces(**filters: Any) -> pd.DataFrame:
    """The default client's trace rows as a DataFrame (filters: run_id, model, kind, status,
    cache_hit, errors, since, limit)."""
    from .client import default_client

    return default_client().traces(**filters)
