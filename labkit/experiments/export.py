"""From experiment to config file: pick the winner, export it with its suite and evidence.

`choose_winner` ranks the variants of a Results on one metric (a column of
`Results.summary`, i.e. `labkit.experiments.stats`) among those meeting every constraint; ties go to the
cheaper one, and when none qualifies the error lists each variant and why it failed.
`export_config` writes the winner (or a named variant) as the next version of a config file
(`labkit.artifact`): the prompt, the pinned model that answered, params without credentials,
the JSON Schema, a confidence threshold from `calibration.choose_threshold`, the evaluators, a
regression suite spread over the labelled items, and the evidence it won with.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..artifact import (
    ConfidencePolicy,
    DeployedConfig,
    Evidence,
    SuiteItem,
    check_models,
    is_secret_name,
    now_utc,
    save_config,
)
from ..client import default_client
from ..errors import ConfigError, DegenerateVariant, InputError
from ..evaluation import evaluator_from_spec
from ..types import OUTPUT_PARAMS
from . import calibration as calib
from . import stats
from .datasets import run_records

if TYPE_CHECKING:
    import pandas as pd

    from ..client import Client
    from ..evaluation import Evaluator
    from .results import Results

__all__ = ["Winner", "choose_winner", "export_config"]

# Metric name -> summary column; and which direction is better.
_ALIASES = {"success_rate": "rate", "success": "rate", "score": "score_mean"}
_LOWER_IS_BETTER = ("cost", "total_cost", "latency", "ttft", "errors", "error_rate")
_MAX_CLASSES = 10  # an expected field with more distinct values is free text, not a class


# ----------------------------------------------------------------------------- the winner


@dataclass(frozen=True)
class Winner:
    """The chosen variant and the table it was chosen from."""

    variant: str
    prompt: str
    model: str
    """The model as the experiment asked for it (alias or id)."""
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    n_items: int
    table: pd.DataFrame = field(repr=False)
    """Every variant's summary with `eligible` and `why` (the failed constraints)."""

    def __str__(self) -> str:
        ci = (
            f" [{self.ci_low:.3g}, {self.ci_high:.3g}]"
            if self.ci_low is not None and self.ci_high is not None
            else ""
        )
        return f"{self.variant}: {self.metric} = {self.value:.4g}{ci} (n={self.n})"


def _column(metric: str) -> str:
    return _ALIASES.get(metric, metric)


def _lower_better(column: str) -> bool:
    return column.startswith(_LOWER_IS_BETTER) or column in _LOWER_IS_BETTER


def _frame_of(results: Results | pd.DataFrame) -> pd.DataFrame:
    df = getattr(results, "df", results)
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a Results or a results DataFrame, got {type(results).__name__}")
    return df


def _summary(results: Results) -> pd.DataFrame:
    table = results.summary()
    table["error_rate"] = table["errors"] / table["n"].where(table["n"] > 0)
    return table


def choose_winner(
    results: Results,
    metric: str = "success_rate",
    constraints: Mapping[str, Any] | None = None,
    *,
    allow_degenerate: bool = False,
) -> Winner:
    """The best variant of `results` (a Results: `results.best` and `results.best_variant` call
    this) on `metric` among those meeting `constraints`; ties -> lower cost.

    `metric` is a column of `Results.summary` ("success_rate", "score", "parse_rate",
    "ci_low" for the most assured rate, "cost_per_success", "latency_p95", ...); cost, latency
    and error metrics are minimised, the rest maximised. `constraints` maps columns to bounds,
    e.g. ``{"cost_per_success": {"max": 0.01}, "n": {"min": 30}}``. A variant whose value is
    unknown (NaN: no successes to divide by) fails a constraint on it. When no variant
    qualifies, ConfigError lists every variant and the constraints it failed.

    A degenerate variant (`diagnostics.py`: predictions collapsed to one value, no lift
    over the majority-class baseline, replies copying the format example) is not eligible
    unless `allow_degenerate=True`; if that leaves none, DegenerateVariant says why.
    """
    df = _frame_of(results)
    if len(df) == 0:
        raise InputError("the results frame is empty: run the experiment first")
    table = _summary(results)
    col = _column(metric)
    if col not in table.columns:
        raise InputError(f"unknown metric {metric!r}; choose from {_metric_names(table)}")
    why: list[list[str]] = [[] for _ in range(len(table))]
    for name, bound in (constraints or {}).items():
        c = _column(name)
        if c not in table.columns:
            raise InputError(
                f"unknown constraint {name!r}; constrain one of {_metric_names(table)}"
            )
        if not isinstance(bound, Mapping) or not bound or set(bound) - {"min", "max"}:
            raise InputError(
                f"constraint {name!r} must be a mapping with 'min' and/or 'max', e.g. "
                f"{{{name!r}: {{'max': 0.01}}}}; got {bound!r}"
            )
        for i, value in enumerate(table[c].to_numpy(dtype=float)):
            if math.isnan(value):
                why[i].append(f"{name} is unknown")
            if "min" in bound and value < float(bound["min"]):
                why[i].append(f"{name} {value:.4g} < min {bound['min']}")
            if "max" in bound and value > float(bound["max"]):
                why[i].append(f"{name} {value:.4g} > max {bound['max']}")
    degenerate: dict[str, list[str]] = {}
    if not allow_degenerate:
        modes = results.failure_modes()
        for i, v in enumerate(table["variant"]):
            if reasons := modes.reasons(str(v)):
                degenerate[str(v)] = reasons
                why[i].append("degenerate: " + "; ".join(reasons))
    values = table[col].to_numpy(dtype=float)
    for i, value in enumerate(values):
        if math.isnan(value) and not why[i]:
            why[i].append(f"{metric} is unknown")
    table = table.assign(eligible=[not w for w in why], why=["; ".join(w) for w in why])
    ok = table[table["eligible"]]
    if ok.empty:
        lines = "\n".join(
            f"  - {v}: {w}" for v, w in zip(table["variant"], table["why"], strict=True)
        )
        if degenerate:
            raise DegenerateVariant(
                f"no variant can be picked as the winner:\n{lines}\n"
                "A degenerate variant's success rate is not skill; fix the prompt (see "
                "Results.failure_modes()), or pass allow_degenerate=True to pick "
                "one anyway.",
                degenerate,
            )
        raise ConfigError(
            f"no variant satisfies the constraints {dict(constraints or {})}:\n{lines}\n"
            "Relax a constraint, or run more items / variants.",
            where="best_variant",
        )
    sign = 1.0 if _lower_better(col) else -1.0
    cost = ok["cost_per_success"].fillna(ok["cost_per_item"]).fillna(math.inf)
    order = sorted(
        range(len(ok)),
        key=lambda i: (sign * float(ok[col].iloc[i]), float(cost.iloc[i]), i),
    )
    return _winner_for(df, table, str(ok["variant"].iloc[order[0]]), metric, shown=table)


def _metric_names(table: pd.DataFrame) -> str:
    skip = {"variant", "eligible", "why"}
    return ", ".join(["success_rate", *[c for c in table.columns if c not in skip]])


# ----------------------------------------------------------------------------- export


def export_config(
    results: Results,
    path: str | Path,
    variant: str | None = None,
    *,
    metric: str = "success_rate",
    constraints: Mapping[str, Any] | None = None,
    suite_size: int = 20,
    review_below: float | None = None,
    target_accuracy: float = 0.9,
    fallbacks: Sequence[str] | None = None,
    evaluators: Sequence[Evaluator | Mapping[str, Any]] | None = None,
    note: str = "",
    author: str | None = None,
    allow_unpinned: bool = False,
    allow_degenerate: bool = False,
    client: Client | None = None,
) -> Path:
    """Write `variant` (default: `choose_winner(results, metric, constraints)`) as a config file.

    The model is the pinned id that answered (an alias is resolved; a floating name is refused
    unless `allow_unpinned`; a degenerate best variant unless `allow_degenerate`).
    `review_below` defaults to `labkit.experiments.calibration.choose_threshold` at `target_accuracy` when the
    variant reported confidences. The suite is `suite_size` labelled items, spread over the
    expected labels. If `path` exists, its content stays in the history and this becomes the
    next version. Credentials are never written.
    """
    meta = getattr(results, "meta", None) or {}
    if not meta.get("prompts"):
        raise ConfigError(
            "these results carry no run definition (prompts, schema, params); export from the "
            "Results an Experiment returned, or from a file written by Results.to_parquet/to_csv",
            where="export_config",
        )
    df = _frame_of(results)
    table = _summary(results)
    if variant is None:
        win = choose_winner(results, metric, constraints, allow_degenerate=allow_degenerate)
    else:
        if variant not in set(table["variant"]):
            raise InputError(f"unknown variant {variant!r}; have {list(table['variant'])}")
        win = _winner_for(df, table, variant, metric)
    experiment = getattr(results, "experiment", None)
    c = client or getattr(experiment, "client", None)
    if c is None:
        c = default_client()
    rows = df[df["variant"] == win.variant]
    model = _pinned_model(c, win.model, rows, allow_unpinned)
    if fallbacks is None:  # the registry's chain, also when it is keyed by the alias
        chain = c.registry.resolve(win.model, profile=c.profile).chain
        if chain[0] != model:
            chain = c.registry.resolve(model, profile=c.profile).chain
        fallbacks = [m for m in chain[1:] if m != model]
    schema = meta.get("schema")
    specs = _evaluator_specs(meta.get("evaluators") or [], evaluators)
    cfg = DeployedConfig.model_validate(
        {
            "name": win.variant,
            "prompt": meta["prompts"][win.prompt],
            "system": meta.get("system"),
            "model": model,
            "fallbacks": list(fallbacks),
            "params": _safe_params(meta.get("params") or {}),
            "schema": schema,
            "confidence": _confidence(rows, schema, meta, review_below, target_accuracy),
            "evaluators": specs,
            "suite": _suite(results, win.variant, suite_size, schema),
            "evidence": _evidence(df, table, win, meta, constraints),
        }
    )
    p = Path(path)
    check_models(cfg, c, "<export>")
    save_config(p, cfg, action="export", note=note, author=author)
    return p


def _winner_for(
    df: pd.DataFrame,
    table: pd.DataFrame,
    variant: str,
    metric: str,
    shown: pd.DataFrame | None = None,
) -> Winner:
    """The Winner record of `variant`; `shown` is the table to keep with it (default: the
    summary marked with this variant as the only eligible one, as when it was picked by hand)."""
    col = _column(metric)
    if col not in table.columns:
        raise InputError(f"unknown metric {metric!r}; choose from {_metric_names(table)}")
    row = table[table["variant"] == variant].iloc[0]
    rows = df[df["variant"] == variant]
    is_rate = col == "rate"
    return Winner(
        variant=variant,
        prompt=str(rows["prompt"].iloc[0]),
        model=str(rows["model"].iloc[0]),
        metric=metric,
        value=float(row[col]),
        ci_low=float(row["ci_low"]) if is_rate else None,
        ci_high=float(row["ci_high"]) if is_rate else None,
        n=int(row["n"]),
        n_items=int(row["n_items"]),
        table=shown
        if shown is not None
        else table.assign(eligible=table["variant"] == variant, why=""),
    )


def _pinned_model(c: Client, asked: str, rows: pd.DataFrame, allow_unpinned: bool) -> str:
    """The pinned id behind the variant: what answered its (non-error) rows."""
    reg = c.registry
    if asked in reg.aliases:
        target = reg.aliases[asked].target(reg.profile(c.profile))
        if isinstance(target, dict) and len(target) > 1:
            raise ConfigError(
                f"alias {asked!r} splits traffic between {sorted(target)}; a deployed config "
                "pins one model: run the experiment on the model ids, or export with a "
                "variant named after one of them",
                where="export_config",
            )
    answered = rows.loc[rows["error"].isna(), "model_id"].dropna()
    model = (
        str(answered.value_counts().index[0])
        if len(answered)
        else reg.resolve(asked, profile=c.profile).model
    )
    if not reg.info(model).pinned and not allow_unpinned:
        raise ConfigError(
            f"{model!r} is a floating model name: the provider can change what it points to, "
            "and the config would silently change behaviour. Re-run with a dated version "
            "(e.g. 'openai/gpt-4o-mini-2024-07-18'), or pass allow_unpinned=True",
            where="export_config",
        )
    return model


def _safe_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if is_secret_name(key):
            warnings.warn(
                f"left {key!r} out of the exported config: credentials stay in the environment "
                "(api_key_env in labkit.yaml)",
                UserWarning,
                stacklevel=4,
            )
        elif key in OUTPUT_PARAMS:
            out[key] = value
        else:
            warnings.warn(
                f"left the transport setting {key!r} out of the exported config; set it per "
                "model in labkit.yaml (models: <id>: {...})",
                UserWarning,
                stacklevel=4,
            )
    return out


def _evaluator_specs(
    recorded: Sequence[Mapping[str, Any]], given: Sequence[Any] | None
) -> list[dict[str, Any]]:
    """Specs that `evaluator_from_spec` can rebuild; refuse ones it cannot (the gate needs them)."""
    items = list(given) if given is not None else list(recorded)
    specs = [dict(x) if isinstance(x, Mapping) else x.spec() for x in items]
    for i, spec in enumerate(specs):
        try:
            evaluator_from_spec(spec)
        except ConfigError as exc:
            raise ConfigError(
                f"evaluator {spec.get('name') or spec.get('type')!r} cannot be rebuilt from its "
                f"spec ({exc}). Define it at the top level of an importable module, or pass "
                "evaluators=[...] to export_config",
                where=f"evaluators[{i}]",
            ) from exc
    return specs


def _confidence(
    rows: pd.DataFrame,
    schema: Any,
    meta: Mapping[str, Any],
    review_below: float | None,
    target: float,
) -> ConfidencePolicy:
    requested = bool(meta.get("confidence", True))
    if review_below is not None or schema is None or not requested:
        return ConfidencePolicy(requested=requested, review_below=review_below)
    if rows["confidence"].notna().sum() == 0:
        return ConfidencePolicy(requested=requested)

    pick = calib.choose_threshold(rows, target_accuracy=target).iloc[0]
    if not bool(pick["met"]):
        warnings.warn(
            f"no confidence threshold reached {target:.0%} accuracy on the experiment's rows; "
            "every answer below confidence 1.0 will be routed to review",
            UserWarning,
            stacklevel=4,
        )
        return ConfidencePolicy(
            requested=True, review_below=1.0, target_accuracy=target, expected_coverage=0.0
        )
    return ConfidencePolicy(
        requested=True,
        review_below=float(pick["threshold"]),
        target_accuracy=target,
        expected_coverage=float(pick["coverage"]),
    )


def _suite(results: Results, variant: str, size: int, schema: Any) -> list[SuiteItem]:
    """`size` labelled items spread over the classes and the dataset, deterministically.

    Items are grouped by their categorical labels (fields with at most `_MAX_CLASSES` distinct
    values; free-text fields such as a reasoning or an order id do not split groups), slots
    go round-robin over the groups so rare classes are represented, and each group's items are
    taken evenly spaced through the dataset rather than from its start.
    """
    if size < 0:
        raise InputError(f"suite_size must be >= 0, got {size}")
    records = run_records(results)
    answered = set(results.df.loc[results.df["variant"] == variant, "item_id"].astype(str))
    props = _props(schema)
    dropped: set[str] = set()
    items: list[SuiteItem] = []
    for rec in records:
        expected = rec.get("expected")
        if str(rec["id"]) not in answered or not isinstance(expected, Mapping) or not expected:
            continue
        if props is not None:
            dropped |= {k for k in expected if k not in props}
            expected = {k: v for k, v in expected.items() if k in props}
        if expected:
            inputs = {k: v for k, v in rec.items() if k not in ("id", "expected")}
            items.append(SuiteItem(id=str(rec["id"]), inputs=inputs, expected=dict(expected)))
    if dropped:
        warnings.warn(
            f"expected field(s) {sorted(dropped)} are not in the output schema; the suite "
            "leaves them out",
            UserWarning,
            stacklevel=4,
        )
    values: dict[str, set[str]] = {}
    for item in items:
        for k, v in item.expected.items():
            values.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    classes = sorted(k for k, seen in values.items() if len(seen) <= _MAX_CLASSES)
    groups: dict[str, list[SuiteItem]] = {}
    for item in items:
        key = json.dumps([item.expected.get(k) for k in classes], default=str)
        groups.setdefault(key, []).append(item)
    quota = dict.fromkeys(groups, 0)
    left = min(size, len(items))
    while left:
        for key, group in groups.items():
            if left and quota[key] < len(group):
                quota[key] += 1
                left -= 1
    picked = [
        group[int(j * len(group) / quota[key])]
        for key, group in groups.items()
        for j in range(quota[key])
    ]
    order = {str(r["id"]): n for n, r in enumerate(records)}
    return sorted(picked, key=lambda i: order[i.id])


def _props(schema: Any) -> set[str] | None:
    if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
        return {str(k) for k in schema["properties"]}
    return None


def _evidence(
    df: pd.DataFrame,
    table: pd.DataFrame,
    win: Winner,
    meta: Mapping[str, Any],
    constraints: Mapping[str, Any] | None,
) -> Evidence:
    col = _column(win.metric)
    others = []
    from .diagnostics import own_answers

    # Winner vs each other variant; with several, Holm-adjusted p and matching intervals too.
    # Comparing models, a fallback's answers are left out (they are not the model's own).
    own, _ = own_answers(df, list(dict.fromkeys(df["variant"])))
    pairs = stats.pairwise_comparisons(own, baseline=win.variant)
    for _, pr in pairs.iterrows():
        row = table[table["variant"] == pr["a"]].iloc[0]
        entry = {
            "variant": str(pr["a"]),
            win.metric: _clean(row[col]),
            "success_rate": _clean(row["rate"]),
            "diff": _clean(-pr["diff"]),
            "ci_low": _clean(-pr["ci_high"]),
            "ci_high": _clean(-pr["ci_low"]),
            "p_value": _clean(pr["p"]),
            "n_items": int(pr["n_items"]),
            "method": str(pr["method"]),
        }
        if len(pairs) > 1:
            entry |= {
                "p_holm": _clean(pr["p_holm"]),
                "ci_low_holm": _clean(-pr["ci_high_holm"]),
                "ci_high_holm": _clean(-pr["ci_low_holm"]),
                "intervals": f"ci_low/ci_high unadjusted 95%; ci_*_holm Holm-adjusted over "
                f"{len(pairs)} comparisons",
            }
        others.append(entry)
    info = meta.get("dataset") or {}
    return Evidence(
        metric=win.metric,
        value=_clean(win.value),
        ci_low=_clean(win.ci_low),
        ci_high=_clean(win.ci_high),
        n=win.n,
        n_items=win.n_items,
        dataset=info.get("name"),
        dataset_fingerprint=info.get("fingerprint"),
        created_at=str(meta.get("created_at") or now_utc()),
        labkit_version=__version__,
        run_id=meta.get("run_id"),
        constraints=dict(constraints or {}),
        compared_to=others,
    )


def _clean(value: Any) -> float | None:
    """NaN -> None, numpy -> float (the file stays plain, portable YAML)."""
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v
