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

    from .client import Client
    from .types import Completion, Usage

__version__ = "0.1.0"

__all__ = [
    "AllModelsFailed",
    "CircuitOpen",
    "Client",
    "Completion",
    "ConfigError",
    "ContextOverflow",
    "DatasetError",
    "InputError",
    "LabkitError",
    "MissingDependency",
    "ProviderError",
    "RateLimited",
    "RepairFailed",
    "RetryExhausted",
    "TemplateError",
    "UnknownModel",
    "Usage",
    "__version__",
    "agenerate",
    "configure",
    "generate",
    "parse",
    "traces",
]

_LAZY = {
    "Completion": ("types", "Completion"),
    "Usage": ("types", "Usage"),
    "Client": ("client", "Client"),
    "configure": ("client", "configure"),
    "default_client": ("client", "default_client"),
    "parse": ("structured", "parse"),
    "Parsed": ("structured", "Parsed"),
    "Registry": ("models", "Registry"),
    "Redactor": ("redact", "Redactor"),
}


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
