"""The curated public surface: pinned here so a rename or a dropped export is a visible change."""

from __future__ import annotations

import subprocess
import sys

import labkit

PUBLIC = {
    # call path
    "Client", "Completion", "Usage", "configure", "default_client", "generate", "agenerate",
    "traces", "Registry", "Redactor", "__version__",
    # structured output and long inputs
    "parse", "Parsed", "to_json_schema", "map_chunks", "amap_chunks",
    # evaluation
    "Score", "EvalContext", "Evaluator", "evaluator", "evaluator_from_spec", "ExactMatch",
    "FieldMatch", "InEnum", "Regex", "NumericTolerance", "SchemaValid", "ConfidenceAbove",
    "LLMJudge", "generate_with_evaluation", "agenerate_with_evaluation", "EvalLoopResult",
    # datasets, experiments, production
    "Dataset", "load_dataset", "list_datasets", "Experiment", "Results", "export_config",
    "load_config", "Deployed", "gate", "GateVerdict", "rollback", "history", "monitor",
    # errors
    "LabkitError", "InputError", "TemplateError", "DatasetError", "ConfigError", "UnknownModel",
    "MissingDependency", "ProviderError", "RateLimited", "RetryExhausted", "CircuitOpen",
    "AllModelsFailed", "ContextOverflow", "RepairFailed",
}  # fmt: skip


def test_all_is_the_pinned_surface() -> None:
    assert set(labkit.__all__) == PUBLIC
    assert len(labkit.__all__) == len(set(labkit.__all__))


def test_every_public_name_resolves() -> None:
    for name in labkit.__all__:
        assert getattr(labkit, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        labkit.no_such_thing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_is_light() -> None:
    """`import labkit` must not pull in the heavy parts (production code never needs Jupyter)."""
    code = (
        "import sys, labkit; heavy = [m for m in ('litellm', 'llama_cpp', 'pandas', 'plotly', "
        "'ipywidgets', 'scipy') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
