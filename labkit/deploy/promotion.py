"""The promotion gate for model upgrades: `gate(path, candidate)`.

`gate` runs the config's regression suite on the current and a candidate pinned model (same
call path, cached, no fallbacks standing in; each item is an `evaluation.run_cell`), scores
both with the config's evaluators, and compares them item by item with
`labkit.experiments._noninferiority.noninferiority`: an exact unconditional test ordered by Tango's
score, whose false-promotion rate is <= alpha at every suite size (the percentile bootstrap it
replaces promoted up to 10% of truly worse candidates at 50 items). The candidate is promoted
only if non-inferior: p <= alpha, i.e. the one-sided (1 - alpha) lower bound of
(candidate - current) lies above -margin. A promotion is a new version of the file, so
`labkit.rollback` undoes it.

(The module is not called `gate` so that `labkit.deploy.gate`, the function, cannot be
shadowed by a submodule of the same name.)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._version import __version__
from ..artifact import (
    DeployedConfig,
    Evidence,
    SuiteItem,
    check_models,
    now_utc,
    read_config,
    save_config,
)
from ..client import default_client
from ..errors import ConfigError, InputError
from ..evaluation import FieldMatch, evaluator_from_spec, run_cell
from ..trace_rows import trace_row
from .runtime import generate_args

if TYPE_CHECKING:
    from ..client import Client
    from ..evaluation import Evaluator

__all__ = ["GateVerdict", "gate"]


# ----------------------------------------------------------------------------- the gate


@dataclass
class GateVerdict:
    """The gate's decision and everything it rests on."""

    decision: Literal["promote", "keep"]
    current: str
    candidate: str
    n: int
    """Suite items compared (both models answered or failed each one)."""
    current_rate: float
    candidate_rate: float
    diff: float
    """candidate_rate - current_rate."""
    ci_low: float
    """One-sided (1 - alpha) lower bound of `diff`, inverted from the exact test."""
    ci_high: float
    """One-sided (1 - alpha) upper bound (together: a 1 - 2 alpha interval)."""
    margin: float
    alpha: float
    p_value: float
    """One-sided exact p of H0 "candidate worse by margin or more"; promote iff <= alpha."""
    reason: str
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    """Items where one model passed and the other failed, with both outputs."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed calls per model (a failed call counts as a failed item)."""
    run_id: str = ""
    config_version: int = 0
    """The version gated."""
    promoted_version: int | None = None
    """The version written by a promotion."""
    method: str = ""
    """The test the decision was made with (`labkit.experiments._noninferiority.noninferiority`)."""

    @property
    def promoted(self) -> bool:
        return self.promoted_version is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        head = {"promote": "PROMOTE", "keep": "KEEP"}[self.decision]
        lines = [
            f"{head}: {self.candidate} vs {self.current} on {self.n} suite items",
            f"  pass rate {self.candidate_rate:.1%} vs {self.current_rate:.1%}, "
            f"diff {self.diff:+.1%}, lower {1 - self.alpha:.0%} bound {self.ci_low:+.1%} "
            f"(margin -{self.margin:.1%}), p={self.p_value:.3g} (exact, H0: diff <= -margin)",
            f"  {self.reason}",
        ]
        if self.errors:
            lines.append(
                "  failed calls: " + ", ".join(f"{m}: {k}" for m, k in self.errors.items())
            )
        if self.disagreements:
            lines.append(f"  {len(self.disagreements)} item(s) disagree:")
            for d in self.disagreements[:10]:
                mark = "candidate" if d["candidate_passed"] else "current"
                lines.append(f"    - {d['id']}: only {mark} passed")
        if self.promoted_version is not None:
            lines.append(f"  written as version {self.promoted_version}")
        return "\n".join(lines)


def gate(
    path: str | Path,
    candidate: str,
    *,
    margin: float = 0.05,
    alpha: float = 0.05,
    client: Client | None = None,
    promote: bool = True,
    note: str = "",
    author: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> GateVerdict:
    """Run the config's regression suite on its model and on `candidate`; promote if non-inferior.

    Both models answer every suite item through the same call path (cached, traced, no
    fallbacks standing in), the config's evaluators score the answers, and
    `labkit.experiments._noninferiority.noninferiority` (exact, size <= alpha at any suite size) tests "candidate
    worse by margin or more". Rejected: the verdict is "promote" and, with `promote=True`, a
    new version with the candidate model is written (its evidence is the gate's); otherwise
    "keep" and nothing is written. `n_boot` and `seed` only matter for non-binary outcomes.
    """
    c = client
    if c is None:
        c = default_client()
    p = Path(path)
    cfg = read_config(p)
    check_models(cfg, c, p)
    if not cfg.suite:
        raise ConfigError(
            "the regression suite is empty, so there is nothing to compare the models on; "
            "export again with suite_size > 0 (it needs labelled items) or add suite items",
            where=f"{p}, field suite",
        )
    if not 0 <= margin < 1:
        raise InputError(f"margin must be in [0, 1), got {margin}")
    if not 0 < alpha < 0.5:
        raise InputError(f"alpha must be in (0, 0.5), got {alpha}")
    cand = _candidate(c, candidate, cfg.model)
    run_id = (
        "gate-"
        + hashlib.sha256(f"{p.resolve()}|{cfg.version}|{cand}|{now_utc()}".encode()).hexdigest()[
            :16
        ]
    )
    outcomes = c.run(_run_suite(c, cfg, [cfg.model, cand], run_id, progress))
    verdict = _verdict(cfg, outcomes, cand, margin, alpha, n_boot, seed, run_id)
    _trace(c, verdict)
    if verdict.decision == "promote" and promote:
        new = cfg.model_copy(
            update={
                "model": cand,
                "fallbacks": [m for m in cfg.fallbacks if m != cand],
                "evidence": _gate_evidence(cfg, verdict),
            }
        )
        saved = save_config(
            p,
            new,
            action="promote",
            note=note or f"gate: {cfg.model} -> {cand} (diff {verdict.diff:+.1%})",
            author=author,
            expect_version=cfg.version,
        )
        verdict.promoted_version = saved.version
    return verdict


def _candidate(c: Client, candidate: str, current: str) -> str:
    reg = c.registry
    model = reg.resolve(candidate, profile=c.profile).model  # UnknownModel names close matches
    if not reg.info(model).pinned:
        raise ConfigError(
            f"{model!r} is a floating model name; the gate compares pinned versions, so a "
            "promotion cannot drift afterwards. Pass a dated id",
            where="--candidate",
        )
    if model == current:
        raise InputError(f"{model!r} is already the config's model; name another candidate")
    return model


async def _run_suite(
    c: Client,
    cfg: DeployedConfig,
    models: list[str],
    run_id: str,
    progress: Callable[[int, int], None] | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> item id -> {passed, value, error}; every item gets an outcome."""
    evaluators: list[Evaluator] = []
    for i, spec in enumerate(cfg.evaluators):
        try:
            evaluators.append(evaluator_from_spec(spec))
        except ConfigError as exc:
            raise ConfigError(str(exc), where=f"field evaluators[{i}]") from exc
    if not evaluators:
        evaluators = [FieldMatch()]
    total = len(models) * len(cfg.suite)
    done_count = 0
    out: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in models}

    async def one(model: str, item: SuiteItem) -> None:
        nonlocal done_count
        row = {"id": item.id, **item.inputs, "expected": item.expected}
        try:
            got = await run_cell(
                c,
                evaluators,
                row,
                **generate_args(cfg, item.inputs, model, [], run_id, item.id),
            )
        except Exception as exc:
            out[model][item.id] = {
                "passed": False,
                "value": None,
                "error": f"{type(exc).__name__}: {exc}",
            }
        else:
            done = got.completion
            value = done.value if done.parsed is not None else done.text
            reasons = "; ".join(s.reason for s in got.scores if not s.passed and s.reason)
            out[model][item.id] = {
                "passed": got.passed,
                "value": value,
                "error": None,
                "reason": reasons,
            }
        done_count += 1
        if progress is not None:
            progress(done_count, total)

    await asyncio.gather(*(one(m, item) for item in cfg.suite for m in models))
    return out


def _verdict(
    cfg: DeployedConfig,
    outcomes: Mapping[str, Mapping[str, Mapping[str, Any]]],
    cand: str,
    margin: float,
    alpha: float,
    n_boot: int,
    seed: int,
    run_id: str,
) -> GateVerdict:
    # Lazy: production imports labkit.deploy without pandas; only a gate run needs the stats.
    import pandas as pd

    from ..experiments._noninferiority import noninferiority

    cur = cfg.model
    rows = [
        {"item_id": item.id, "variant": m, "passed": bool(outcomes[m][item.id]["passed"])}
        for item in cfg.suite
        for m in (cur, cand)
    ]
    ni = noninferiority(
        pd.DataFrame(rows), cand, cur, margin, alpha=alpha, n_boot=n_boot, seed=seed
    )
    ok, low = ni.promote, ni.interval[0]
    reason = (
        f"non-inferior: the candidate is at worst {-low:.1%} worse "
        f"(lower bound {low:+.1%} > -{margin:.1%})"
        if ok and low < 0
        else f"non-inferior: lower bound {low:+.1%} > -{margin:.1%}"
        if ok
        else f"cannot rule out a loss larger than the margin: lower bound {low:+.1%} "
        f"<= -{margin:.1%}"
        + (" (more suite items would narrow the interval)" if ni.estimate >= 0 else "")
    )
    disagreements = []
    for item in cfg.suite:
        a, b = outcomes[cur][item.id], outcomes[cand][item.id]
        if a["passed"] != b["passed"]:
            disagreements.append(
                {
                    "id": item.id,
                    "current_passed": a["passed"],
                    "candidate_passed": b["passed"],
                    "current_output": a.get("error") or a.get("value"),
                    "candidate_output": b.get("error") or b.get("value"),
                    "expected": item.expected,
                }
            )
    errors = {
        m: n for m in (cur, cand) if (n := sum(1 for o in outcomes[m].values() if o["error"]))
    }
    return GateVerdict(
        decision="promote" if ok else "keep",
        current=cur,
        candidate=cand,
        n=ni.n,
        current_rate=ni.rate_current,
        candidate_rate=ni.rate_candidate,
        diff=ni.estimate,
        ci_low=low,
        ci_high=ni.interval[1],
        margin=margin,
        alpha=alpha,
        p_value=ni.p_value,
        reason=reason,
        disagreements=disagreements,
        errors=errors,
        run_id=run_id,
        config_version=cfg.version,
        method=ni.method,
    )


def _gate_evidence(cfg: DeployedConfig, v: GateVerdict) -> Evidence:
    from ..experiments import stats  # lazy: see _verdict (deploy imports without pandas)

    k = round(v.candidate_rate * v.n)
    low, high = stats.wilson_interval(k, v.n)
    suite = json.dumps([i.model_dump(mode="json") for i in cfg.suite], sort_keys=True)
    summary = {k: val for k, val in v.to_dict().items() if k not in ("disagreements",)}
    summary["disagreements"] = [d["id"] for d in v.disagreements]
    return Evidence(
        metric="suite_pass_rate",
        value=v.candidate_rate,
        ci_low=low,
        ci_high=high,
        n=v.n,
        n_items=v.n,
        dataset=f"regression suite of v{cfg.version}",
        dataset_fingerprint=hashlib.sha256(suite.encode()).hexdigest(),
        created_at=now_utc(),
        labkit_version=__version__,
        run_id=v.run_id,
        compared_to=[
            {
                "model": v.current,
                "suite_pass_rate": v.current_rate,
                "diff": v.diff,
                "ci_low": v.ci_low,
                "ci_high": v.ci_high,
                "p_value": v.p_value,
                "n_items": v.n,
            }
        ],
        gate=_finite(json.loads(json.dumps(summary, default=str))),
    )


def _trace(c: Client, v: GateVerdict) -> None:
    """One parent trace row per gate run, so the trace browser lists it beside experiments."""
    try:
        row = trace_row(
            "parent",
            "ok",
            run_id=v.run_id,
            event="gate",
            meta={k: val for k, val in v.to_dict().items() if k != "disagreements"},
        )
        c.tracer.record(**row)
    except Exception:  # the trace store never fails a gate
        pass


def _finite(value: Any) -> Any:
    """NaN/inf -> None throughout, so the evidence survives a YAML round trip unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
