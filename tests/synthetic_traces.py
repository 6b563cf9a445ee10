"""Seeded synthetic trace databases for the monitor's tests and benchmark.

Rows follow the trace schema (`labkit.tracing.COLUMNS`, the table the client writes) and are
inserted in chunks with executemany, so a million rows never sit in memory at once. Each
window has the same profile (error, parse and repair rates; per-field confidences on a 0.05
grid; lognormal latency and TTFT; completion lengths) unless `shift` changes it from window
`shift_at` on, which is how the tests plant a drift with a known place.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from labkit.tracing import COLUMNS, TraceStore

FIELDS = ("sentiment", "topic")


@dataclass(frozen=True)
class Profile:
    error_rate: float = 0.02
    parse_fail: float = 0.05
    repair_rate: float = 0.2
    conf_a: float = 8.0  # confidence ~ Beta(a, b), rounded to 0.05
    conf_b: float = 2.0
    latency_median: float = 0.8
    ttft_median: float = 0.2
    tokens_mean: float = 40.0


def write_traces(
    path: str | Path,
    *,
    windows: int = 10,
    per_window: int = 300,
    window_s: float = 86400.0,
    start: float | None = None,
    models: Sequence[str] = ("openai/gpt-4o-2024-08-06",),
    alias: str | None = "triage",
    seed: int = 0,
    base: Profile = Profile(),
    shift: Profile | None = None,
    shift_at: int | None = None,
    shift_models: Sequence[str] | None = None,
    chunk: int = 50_000,
) -> Path:
    """`windows` x `per_window` attempt rows per model, times spread evenly in each window.

    `shift` replaces `base` from window `shift_at` on (for `shift_models`, default all).
    `start` defaults to `windows` windows before now, aligned to the window width.
    """
    path = Path(path)
    store = TraceStore(path)
    store._connect()  # the real schema and indexes
    store.close()
    rng = np.random.default_rng(seed)
    if start is None:
        start = (time.time() // window_s - windows) * window_s
    names = list(COLUMNS)
    sql = f"INSERT INTO traces ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    conn = sqlite3.connect(path)
    counter = conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0]  # ids stay unique
    try:
        for w in range(windows):
            for model in models:
                shifted = shift is not None and shift_at is not None and w >= shift_at
                shifted &= shift_models is None or model in shift_models
                prof = shift if shifted and shift is not None else base
                done = 0
                while done < per_window:
                    n = min(chunk, per_window - done)
                    ts = (
                        start
                        + w * window_s
                        + (done + np.arange(n) + rng.random(n)) * window_s / per_window
                    )
                    cols = _rows(rng, prof, n, ts, model, alias, counter)
                    none = [None] * n
                    conn.executemany(sql, zip(*(cols.get(c, none) for c in names), strict=True))
                    conn.commit()
                    counter += n
                    done += n
    finally:
        conn.close()
    return path


def _rows(
    rng: np.random.Generator,
    p: Profile,
    n: int,
    ts: np.ndarray,
    model: str,
    alias: str | None,
    counter: int,
) -> dict[str, list[object]]:
    """Column-wise: a million rows in seconds, not minutes."""
    error = rng.random(n) < p.error_rate
    parse_ok = ~error & (rng.random(n) >= p.parse_fail)
    repaired = parse_ok & (rng.random(n) < p.repair_rate)
    conf = np.round(rng.beta(p.conf_a, p.conf_b, (n, len(FIELDS))) * 20) / 20
    latency = p.latency_median * rng.lognormal(0.0, 0.3, n)
    ttft = p.ttft_median * rng.lognormal(0.0, 0.3, n)
    tokens = rng.poisson(p.tokens_mean, n) + 1
    ok = ~error
    meta = [
        json.dumps({"finish_reason": "stop", "confidences": dict(zip(FIELDS, c, strict=True))})
        if good else (json.dumps({"finish_reason": "stop"}) if fine else None)
        for c, good, fine in zip(conf.tolist(), parse_ok.tolist(), ok.tolist(), strict=True)
    ]  # fmt: skip
    reply = json.dumps({"sentiment": "positive", "topic": "billing"})
    cols: dict[str, list[object]] = {
        "id": [f"{counter + i:016x}" for i in range(n)],
        "ts": ts.tolist(),
        "kind": ["attempt"] * n,
        "call_id": [f"c{counter + i:015x}" for i in range(n)],
        "alias": [alias] * n,
        "model": [model] * n,
        "attempt": [1] * n,
        "cache_hit": [0] * n,
        "prompt_tokens": [120] * n,
        "status": np.where(error, "error", "ok").tolist(),
        "error_type": [("RateLimited" if e else None) for e in error.tolist()],
        "error": [("429" if e else None) for e in error.tolist()],
        "response": [
            None if e else (reply if g else "Sure! The sentiment is positive")
            for e, g in zip(error.tolist(), parse_ok.tolist(), strict=True)
        ],
        "completion_tokens": np.where(ok, tokens, 0).tolist(),
        "cost_usd": np.where(ok, 120 * 2.5e-6 + tokens * 1e-5, 0.0).tolist(),
        "latency_s": np.where(ok, latency, 0.05).tolist(),
        "ttft_s": [t if o else None for t, o in zip(ttft.tolist(), ok.tolist(), strict=True)],
        "parse_ok": [
            int(g) if o else None for g, o in zip(parse_ok.tolist(), ok.tolist(), strict=True)
        ],
        "repairs": [
            ('["strip_fence"]' if r else "[]") if o else None
            for r, o in zip(repaired.tolist(), ok.tolist(), strict=True)
        ],
        "meta": meta,
    }
    return cols


def shifted(**changes: float) -> Profile:
    """The base profile with some fields changed."""
    return replace(Profile(), **changes)
