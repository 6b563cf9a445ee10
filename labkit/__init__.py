"""labkit: cached, traced, model-switchable LLM generation with JSON repair, per-field
confidence and evaluation loops, for tuning prompts and comparing models in Jupyter.

The public surface is this module's `__all__` (pinned by tests/test_public_api.py). Heavy parts
(litellm, llama.cpp, pandas, plotly, ipywidgets) load on first use, so `import labkit` is fast
and production code never pulls in Jupyter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
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

    from .chunking import amap_chunks, map_chunks
    from .client import Client, configure, default_client
    from .deploy import Deployed, GateVerdict, gate, load_config, rollback
    from .evaluation import (
        ConfidenceAbove,
        EvalContext,
        EvalLoopResult,
        Evaluator,
        ExactMatch,
        FieldMatch,
        InEnum,
        LLMJudge,
        NumericTolerance,
        Regex,
        SchemaValid,
        Score,
        agenerate_with_evaluation,
        evaluator,
        evaluator_from_spec,
        generate_with_evaluation,
    )
    from .experiments import (
        Dataset,
        Experiment,
        Results,
        export_config,
        list_datasets,
        load_dataset,
    )
    from .models import Registry
    from .monitoring import history, monitor
    from .redact import Redactor
    from .structured import Parsed, parse, to_json_schema
    from .types import Completion, Usage

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
    "parse": ("structured", "parse"),
    "Parsed": ("structured", "Parsed"),
    "to_json_schema": ("structured", "to_json_schema"),
    # long inputs
    "map_chunks": ("chunking", "map_chunks"),
    "amap_chunks": ("chunking", "amap_chunks"),
    # evaluation
    "Score": ("evaluation", "Score"),
    "EvalContext": ("evaluation", "EvalContext"),
    "Evaluator": ("evaluation", "Evaluator"),
    "evaluator": ("evaluation", "evaluator"),
    "evaluator_from_spec": ("evaluation", "evaluator_from_spec"),
    "ExactMatch": ("evaluation", "ExactMatch"),
    "FieldMatch": ("evaluation", "FieldMatch"),
    "InEnum": ("evaluation", "InEnum"),
    "Regex": ("evaluation", "Regex"),
    "NumericTolerance": ("evaluation", "NumericTolerance"),
    "SchemaValid": ("evaluation", "SchemaValid"),
    "ConfidenceAbove": ("evaluation", "ConfidenceAbove"),
    "LLMJudge": ("evaluation", "LLMJudge"),
    "generate_with_evaluation": ("evaluation", "generate_with_evaluation"),
    "agenerate_with_evaluation": ("evaluation", "agenerate_with_evaluation"),
    "EvalLoopResult": ("evaluation", "EvalLoopResult"),
    # datasets and experiments
    "Dataset": ("experiments", "Dataset"),
    "load_dataset": ("experiments", "load_dataset"),
    "list_datasets": ("experiments", "list_datasets"),
    "Experiment": ("experiments", "Experiment"),
    "Results": ("experiments", "Results"),
    # notebook to production
    "export_config": ("experiments", "export_config"),
    "load_config": ("deploy", "load_config"),
    "Deployed": ("deploy", "Deployed"),
    "gate": ("deploy", "gate"),
    "GateVerdict": ("deploy", "GateVerdict"),
    "rollback": ("deploy", "rollback"),
    "history": ("monitoring", "history"),
    # production watch
    "monitor": ("monitoring", "monitor"),
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
