"""Synthetic results frames for tests and benchmarks (the experiment module makes the real ones).

`make_results` follows the contract in the `labkit.experiments.stats` docstring: one row per (item,
prompt, model, repeat), with item difficulty shared across variants (so pairing matters),
per-field correctness and roughly calibrated confidences, token counts and prices, latencies,
cache hits, repair steps, and a sprinkle of error and parse-failure rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

FIELDS = ("name", "date", "amount")
REPAIR_STEPS = ("strip_fence", "extract_json", "fix_quotes", "coerce_types", "drop_extras")
ERRORS = (("RateLimitError", "429 rate limit exceeded"), ("Timeout", "request timed out"))
PRICES = {"small": (0.15e-6, 0.6e-6), "large": (2.5e-6, 10e-6)}  # per prompt / completion token


def make_results(
    n_items: int = 40,
    prompts: Sequence[str] = ("terse", "cot"),
    models: Sequence[str] = ("small", "large"),
    repeats: int = 1,
    seed: int = 0,
    error_rate: float = 0.03,
    parse_fail_rate: float = 0.03,
    skills: Sequence[float] | None = None,
) -> pd.DataFrame:
    """A realistic results frame of ``n_items x len(prompts) x len(models) x repeats`` rows.

    ``skills`` (one per variant, prompt-major order) sets how good each variant is on the
    logit scale; item difficulty is shared, so variants agree on the hard items.
    """
    rng = np.random.default_rng(seed)
    variants = [(p, m) for p in prompts for m in models]
    n_var = len(variants)
    skill = np.asarray(skills if skills is not None else np.linspace(0.0, 1.2, n_var), float)
    difficulty = rng.normal(0.0, 1.2, n_items)

    item = np.repeat(np.arange(n_items), n_var * repeats)
    var = np.tile(np.repeat(np.arange(n_var), repeats), n_items)
    rep = np.tile(np.arange(repeats), n_items * n_var)
    rows = item.size
    prompt = np.array([variants[v][0] for v in range(n_var)])[var]
    model = np.array([variants[v][1] for v in range(n_var)])[var]

    logit = skill[var] - difficulty[item] + 1.0
    field_logit = logit[:, None] + rng.normal(0.8, 0.6, (rows, len(FIELDS)))
    p_field = 1 / (1 + np.exp(-field_logit))
    correct = rng.random((rows, len(FIELDS))) < p_field
    # Confidence: noisy, somewhat overconfident, reported on a 0.05 grid like real models do.
    conf = 1 / (1 + np.exp(-(field_logit + 0.6 + rng.normal(0, 0.8, field_logit.shape))))
    conf = np.round(conf * 20) / 20

    error = rng.random(rows) < error_rate
    parse_fail = ~error & (rng.random(rows) < parse_fail_rate)
    ok = ~error & ~parse_fail
    passed = ok & correct.all(axis=1)
    score = np.where(ok, correct.mean(axis=1), np.nan)

    long_prompt = np.char.find(prompt.astype(str), "cot") >= 0
    prompt_tokens = rng.integers(300, 420, rows) + np.where(long_prompt, 250, 0)
    completion_tokens = rng.integers(40, 90, rows) + np.where(long_prompt, 180, 0)
    cached_tokens = np.where(rng.random(rows) < 0.4, prompt_tokens // 2, 0)
    completion_tokens = np.where(error, 0, completion_tokens)
    price_in = np.array([PRICES.get(m, PRICES["small"])[0] for m in model])
    price_out = np.array([PRICES.get(m, PRICES["small"])[1] for m in model])
    cost = np.where(error, 0.0, prompt_tokens * price_in + completion_tokens * price_out)
    base = np.where(model == "large", 1.2, 0.5)
    latency = base * rng.lognormal(0.0, 0.35, rows) + completion_tokens * 0.004
    ttft = np.where(error | (rng.random(rows) < 0.1), np.nan, base * rng.lognormal(-1.2, 0.3, rows))
    needs = rng.random((rows, len(REPAIR_STEPS))) < np.array([0.25, 0.1, 0.05, 0.15, 0.08])
    needs &= ok[:, None] | parse_fail[:, None]
    err_pick = rng.integers(0, len(ERRORS), rows)

    def row_dict(values: np.ndarray, i: int) -> dict[str, float]:
        return {f: float(values[i, j]) for j, f in enumerate(FIELDS)} if ok[i] else {}

    parsed = [
        {"name": f"n{item[i]}", "date": "2024-01-01", "amount": float(item[i])} if ok[i] else None
        for i in range(rows)
    ]
    frame = pd.DataFrame(
        {
            "run_id": f"run-{seed}",
            "item_id": [f"item-{i:04d}" for i in item],
            "prompt": prompt,
            "model": model,
            "model_id": [f"{m}-2024-07-18" for m in model],
            "variant": [f"{p} · {m}" for p, m in zip(prompt, model, strict=True)],
            "repeat": rep.astype("int64"),
            "output": [None if error[i] else json.dumps(parsed[i]) for i in range(rows)],
            "parsed": parsed,
            "parse_ok": ok,
            "passed": passed,
            "score": score,
            "scores": [{"fields": float(score[i])} if ok[i] else {} for i in range(rows)],
            "confidence": np.where(ok, conf.mean(axis=1), np.nan),
            "confidences": [row_dict(conf, i) for i in range(rows)],
            "field_correct": [
                {f: bool(correct[i, j]) for j, f in enumerate(FIELDS)} if ok[i] else {}
                for i in range(rows)
            ],
            "prompt_tokens": prompt_tokens.astype("int64"),
            "completion_tokens": completion_tokens.astype("int64"),
            "cached_tokens": cached_tokens.astype("int64"),
            "cost_usd": cost,
            "latency_s": latency,
            "ttft_s": ttft,
            "cache_hit": rng.random(rows) < 0.1,
            "repairs": [
                [s for j, s in enumerate(REPAIR_STEPS) if needs[i, j]] for i in range(rows)
            ],
            "error": [ERRORS[err_pick[i]][1] if error[i] else None for i in range(rows)],
            "error_type": [ERRORS[err_pick[i]][0] if error[i] else None for i in range(rows)],
            "trace_id": [f"t-{seed}-{i}" for i in range(rows)],
        }
    )
    return frame


def binary_frame(
    a: Sequence[int], b: Sequence[int], names: tuple[str, str] = ("A", "B")
) -> pd.DataFrame:
    """Two variants with given 0/1 outcomes on the same items (for exact reference checks)."""
    n = len(a)
    return pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n)] * 2,
            "variant": [names[0]] * n + [names[1]] * n,
            "repeat": 0,
            "passed": [bool(v) for v in (*a, *b)],
            "error": None,
        }
    )


def fallback_frame() -> pd.DataFrame:
    """Two models on 20 items: big (right on the even items) answered the odd ones through its
    fallback, mini; mini answers for itself. A fair comparison of models uses 10 items."""
    df = binary_frame([1, 0] * 10, [1, 1, 0, 0] * 5, names=("p · big", "p · mini"))
    df["model"] = df["variant"].map({"p · big": "openai/big-2024", "p · mini": "openai/mini-2024"})
    df["model_id"] = df["model"]
    fell_back = (df["variant"] == "p · big") & (df.index % 2 == 1)
    df.loc[fell_back, "model_id"] = "openai/mini-2024"
    return df
