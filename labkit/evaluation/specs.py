"""`evaluator_from_spec`: an evaluator rebuilt from its `spec()` dict (exported configs, the
CLI's --evaluator). It sits apart from checks.py because it must know every evaluator type,
the LLM judge's included, and judge.py builds on checks.py."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .checks import Evaluator, FunctionEvaluator
from .judge import LLMJudge

__all__ = ["evaluator_from_spec"]

KNOWN: tuple[type[Evaluator], ...] = (LLMJudge,)
"""Evaluator types defined outside checks.py, imported here so their `type_name` is registered
before a spec names it."""


def evaluator_from_spec(spec: Mapping[str, Any]) -> Evaluator:
    """Build an evaluator from its `spec()` dict; ConfigError names an unknown type or key."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ConfigError(f"an evaluator spec is a mapping with a 'type' key, got {spec!r}")
    kind = str(spec["type"])
    cls = Evaluator._types.get(kind)
    if cls is None:
        raise ConfigError(
            f"unknown evaluator type {kind!r}; known types: {', '.join(sorted(Evaluator._types))}"
        )
    args = {k: v for k, v in spec.items() if k != "type"}
    if cls is FunctionEvaluator:
        return FunctionEvaluator.from_ref(args)
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(args) - set(params) - {"self"})
    if unknown:
        allowed = sorted(p for p in params if p != "self")
        raise ConfigError(
            f"evaluator {kind!r}: unknown key(s) {unknown}; allowed: {allowed}", where="evaluator"
        )
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"evaluator {kind!r}: {exc}", where="evaluator") from exc
