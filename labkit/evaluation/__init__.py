"""Evaluation: checks that score one reply, the LLM judge, the evaluate-then-refine loop, and
evaluator specs (how an exported config names its evaluators).

    checks.py  Score, EvalContext, Evaluator and the built-in checks (no model calls)
    judge.py   LLMJudge: a rubric answered by a judge model through the client
    refine.py  generate -> evaluate -> refine -> try again, best attempt kept, every call summed
    specs.py   evaluator_from_spec: an evaluator rebuilt from its spec() dict
    cell.py    run_cell: one call and its scores, the unit a grid and the gate both run

This front is the stage's API; the modules behind it import each other directly, never this
file, so the stage has no import cycle.
"""

from .cell import Cell, run_cell
from .checks import (
    ConfidenceAbove,
    EvalContext,
    Evaluator,
    ExactMatch,
    FieldMatch,
    FunctionEvaluator,
    InEnum,
    NumericTolerance,
    Regex,
    SchemaValid,
    Score,
    combine,
    evaluator,
    run_evaluators,
)
from .judge import LLMJudge
from .refine import (
    ATTEMPT_SAMPLE_STRIDE,
    Attempt,
    EvalLoopResult,
    Refine,
    agenerate_with_evaluation,
    default_refine,
    generate_with_evaluation,
)
from .specs import evaluator_from_spec

__all__ = [
    "ATTEMPT_SAMPLE_STRIDE",
    "Attempt",
    "Cell",
    "ConfidenceAbove",
    "EvalContext",
    "EvalLoopResult",
    "Evaluator",
    "ExactMatch",
    "FieldMatch",
    "FunctionEvaluator",
    "InEnum",
    "LLMJudge",
    "NumericTolerance",
    "Refine",
    "Regex",
    "SchemaValid",
    "Score",
    "agenerate_with_evaluation",
    "combine",
    "default_refine",
    "evaluator",
    "evaluator_from_spec",
    "generate_with_evaluation",
    "run_cell",
    "run_evaluators",
]
