"""Issue 4 benchmark: the policy layer under faults, beside litellm's own Router in the same run.

1,000 requests, 50 at a time, to a loopback primary that answers 30% 429 (Retry-After 0.05-0.2 s),
5% 500 and 2% timeouts, with a healthy fallback model on a second server. The draws are paired:
the n-th attempt of a given request meets the same fault (and Retry-After) for both contenders,
so the comparison carries no luck of the draw. Each contender gets fresh servers; both stream,
as labkit always does. Figures:

- completions and completion rate (goal 100%),
- extra requests per success: (requests the servers saw - successes) / successes,
- wall time, and its ratio to the same client's no-fault run (healthy primary, same latency;
  run with IDEAL_N requests and scaled to N: the loop is CPU-bound, so time grows linearly).

Goal: labkit completes at least as many requests as the Router with no more extra requests.

Those faults are independent of load, so no client behaviour can lower the 429 rate: with the
same retry budget both clients must make the same extra requests (drawn by arrival order
instead, the two differed by 0-3 requests in 3,200, either way).
A second, smaller scenario gives the primary a real limit (LIMIT_PER_S requests per one-second
window, then 429 with Retry-After until the window resets, as fixed-window RPM limits answer),
where honouring Retry-After across callers is what saves requests.

Run: .venv/bin/python bench/bench_resilience.py   [N=1000 CONCURRENCY=50 in the environment]
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOG", "CRITICAL")

N = int(os.environ.get("N", "1000"))
IDEAL_N = min(N, int(os.environ.get("IDEAL_N", "300")))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "50"))
LATENCY = 0.05  # server time per successful answer
TIMEOUT = 3.0  # client-side request timeout, both contenders (well above a busy loop's stalls)
TIMEOUT_DELAY = 4.0  # how long a "timeout" fault keeps the request hanging
FAULTS = {"429": 0.3, "500": 0.05, "timeout": 0.02}
RETRIES = 2  # after the first attempt: labkit max_attempts=3, Router num_retries=2
LIMITED_N = min(N, int(os.environ.get("LIMITED_N", "200")))
LIMIT_PER_S = 20
PRIMARY = "openai/gpt-4o-mini-2024-07-18"
FALLBACK = "openai/gpt-4o-2024-08-06"
SIZES = {"ideal": IDEAL_N, "faults": N, "limited": LIMITED_N}
KEY_ENV = "LABKIT_BENCH_KEY"
os.environ[KEY_ENV] = "sk-bench"


@dataclass
class Outcome:
    name: str
    n: int
    wall_s: float
    successes: int
    requests: int
    primary_requests: int
    fallback_requests: int
    served_by_fallback: int
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        return self.successes / self.n

    @property
    def wall_per_n(self) -> float:
        """Wall time scaled to N requests."""
        return self.wall_s * N / self.n

    @property
    def extra_per_success(self) -> float:
        return (self.requests - self.successes) / max(1, self.successes)


def servers(scenario: str, seed: int = 7) -> tuple[Any, Any]:
    """(primary, fallback) for "ideal", "faults" or "limited"; started."""
    from labkit.testing import FakeOpenAIServer

    common: dict[str, Any] = {"reply": "primary answer", "latency": LATENCY, "max_lifetime": 600}
    primary: Any
    if scenario == "limited":
        primary = _rate_limited_server(LIMIT_PER_S, **common)
    elif scenario == "faults":
        primary = _paired_fault_server(seed, **common, timeout_delay=TIMEOUT_DELAY)
    else:
        primary = FakeOpenAIServer(**common)
    fallback = FakeOpenAIServer(reply="fallback answer", latency=LATENCY, max_lifetime=600)
    return primary.start(), fallback.start()


def _paired_fault_server(seed: int, **kwargs: Any) -> Any:
    """A FakeOpenAIServer drawing FAULTS per (messages, attempt number), not per arrival."""
    import json

    from labkit.testing import FakeOpenAIServer, Fault

    class Paired(FakeOpenAIServer):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            self._seen: collections.Counter[str] = collections.Counter()

        def _next(self, body: dict[str, Any]) -> tuple[int, Fault | None, str]:
            n, _, text = super()._next(body)
            key = json.dumps(body.get("messages"), sort_keys=True)
            with self._lock:
                attempt = self._seen[key]
                self._seen[key] += 1
            rng = random.Random(f"{seed}|{key}|{attempt}")
            u, acc = rng.random(), 0.0
            for name, p in FAULTS.items():
                acc += p
                if u < acc:
                    if name == "timeout":
                        return n, Fault(kind="timeout"), text
                    ra = rng.uniform(0.05, 0.2) if name == "429" else None
                    return n, Fault(int(name), retry_after=ra), text
            return n, None, text

    return Paired()


def _rate_limited_server(per_window: int, **kwargs: Any) -> Any:
    """A FakeOpenAIServer admitting `per_window` requests per 1 s window; the rest get 429 with
    Retry-After = time to the next window."""
    from labkit.testing import FakeOpenAIServer, Fault

    class Limited(FakeOpenAIServer):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            self._start, self._window, self._used = time.monotonic(), -1, 0

        def _next(self, body: dict[str, Any]) -> tuple[int, Fault | None, str]:
            n, fault, text = super()._next(body)
            with self._lock:
                elapsed = time.monotonic() - self._start
                if int(elapsed) != self._window:
                    self._window, self._used = int(elapsed), 0
                self._used += 1
                if self._used > per_window:
                    fault = Fault(429, retry_after=round(1.0 - elapsed % 1.0, 3) + 0.001)
            return n, fault, text

    return Limited()


async def burst(
    one: Callable[[int], Awaitable[str]], n: int
) -> tuple[list[str | BaseException], float]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def guarded(i: int) -> str | BaseException:
        async with gate:
            try:
                return await one(i)
            except Exception as exc:
                return exc

    start = time.perf_counter()
    out = await asyncio.gather(*(guarded(i) for i in range(n)))
    return list(out), time.perf_counter() - start


def tally(name: str, results: list[str | BaseException], wall: float, p: Any, f: Any) -> Outcome:
    ok = [r for r in results if isinstance(r, str)]
    out = Outcome(
        name=name,
        n=len(results),
        wall_s=wall,
        successes=len(ok),
        requests=p.count + f.count,
        primary_requests=p.count,
        fallback_requests=f.count,
        served_by_fallback=sum(r == "fallback answer" for r in ok),
    )
    out.errors.update(type(r).__name__ for r in results if isinstance(r, BaseException))
    out.statuses.update(p.responses)
    p.stop()
    f.stop()
    return out


def run_labkit(name: str, scenario: str) -> Outcome:
    from labkit.client import Client
    from labkit.models import Registry

    p, f = servers(scenario)
    reg = Registry(
        models={
            PRIMARY: {"api_base": p.url, "api_key_env": KEY_ENV},
            FALLBACK: {"api_base": f.url, "api_key_env": KEY_ENV},
        },
        fallbacks={PRIMARY: [FALLBACK]},
        policy={"retry": {"max_attempts": RETRIES + 1}},  # everything else: labkit's defaults
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-resilience-"))
    client = Client(registry=reg, cache_dir=None, traces=tmp / "traces.db")

    async def one(i: int) -> str:
        done = await client.agenerate(f"question {i}", model=PRIMARY, cache="off", timeout=TIMEOUT)
        return done.text

    results, wall = client.run(burst(one, SIZES[scenario]))
    out = tally(name, results, wall, p, f)
    if scenario != "ideal":
        events = client.traces(kind="event", limit=None)
        kinds = collections.Counter(events["event"])
        opens = sum(1 for m in events["meta"] if isinstance(m, dict) and m.get("to") == "open")
        print(f"   {name}: events {dict(kinds)}; breaker opened {opens}x")
        print(f"   {name}: limiter {client.policy.limiter_states().get(PRIMARY)}")
    client.close()
    return out


def run_router(name: str, scenario: str) -> Outcome:
    from labkit.backends.litellm_backend import import_litellm

    litellm = import_litellm()
    for logger in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    p, f = servers(scenario)

    def deployment(group: str, model: str, url: str) -> dict[str, Any]:
        params = {"model": model, "api_base": url, "api_key": "sk-bench", "timeout": TIMEOUT}
        return {"model_name": group, "litellm_params": params}

    router = litellm.Router(
        model_list=[deployment("primary", PRIMARY, p.url), deployment("fallback", FALLBACK, f.url)],
        num_retries=RETRIES,
        fallbacks=[{"primary": ["fallback"]}],
        timeout=TIMEOUT,
    )

    async def one(i: int) -> str:
        stream = await router.acompletion(
            model="primary",
            messages=[{"role": "user", "content": f"question {i}"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts)

    results, wall = asyncio.run(burst(one, SIZES[scenario]))
    return tally(name, results, wall, p, f)


def warm_up() -> None:
    """Import litellm and make one call before any clock starts, for both contenders."""
    from labkit.backends.litellm_backend import LiteLLMBackend
    from labkit.testing import FakeOpenAIServer
    from labkit.types import Request

    with FakeOpenAIServer(reply="warm", max_lifetime=60) as server:
        transport = {"api_base": server.url, "api_key": "sk-bench"}
        request = Request(model=PRIMARY, messages=[{"role": "user", "content": "hi"}],
                          transport=transport)  # fmt: skip
        asyncio.run(LiteLLMBackend().generate(request))


def table(runs: dict[str, Outcome], rows: list[tuple[str, str]]) -> None:
    """One row per (run, its no-fault baseline)."""
    print(
        f"| client | requests | completions | rate | extra req/success | via fallback | "
        f"primary 429/5xx seen | wall s | wall s per {N} | vs own no-fault | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, baseline in rows:
        o, base = runs[name], runs[baseline]
        faults = sum(n for s, n in o.statuses.items() if s == 429 or s >= 500)
        print(
            f"| {name} | {o.n} | {o.successes} | {o.rate:.1%} | {o.extra_per_success:.3f} | "
            f"{o.served_by_fallback} | {faults} | {o.wall_s:.1f} | {o.wall_per_n:.1f} | "
            f"{o.wall_per_n / base.wall_per_n:.2f}x | {dict(o.errors) or '-'} |"
        )


def main() -> None:
    random.seed(0)
    print(f"# Resilience under faults: {N} requests, {CONCURRENCY} at a time")
    print(f"primary faults {FAULTS}, Retry-After 0.05-0.2 s, latency {LATENCY}s, "
          f"timeout {TIMEOUT}s; fallback healthy; {RETRIES} retries per model")  # fmt: skip
    warm_up()
    runs: dict[str, Outcome] = {}
    plan = (
        ("labkit no-fault", run_labkit, "ideal"),
        ("Router no-fault", run_router, "ideal"),
        ("labkit", run_labkit, "faults"),
        ("litellm Router", run_router, "faults"),
        ("labkit, limited", run_labkit, "limited"),
        ("Router, limited", run_router, "limited"),
    )
    for name, fn, scenario in plan:
        t = time.perf_counter()
        runs[name] = fn(name, scenario)
        print(f"   {name}: done in {time.perf_counter() - t:.1f}s")
    print(f"\n## Random faults ({N} requests; no-fault runs: {IDEAL_N}, scaled)")
    table(
        runs,
        [
            ("labkit no-fault", "labkit no-fault"),
            ("Router no-fault", "Router no-fault"),
            ("labkit", "labkit no-fault"),
            ("litellm Router", "Router no-fault"),
        ],
    )
    lab, rtr = runs["labkit"], runs["litellm Router"]
    more = lab.successes >= rtr.successes
    fewer = lab.extra_per_success <= rtr.extra_per_success
    print(
        f"\ngoal: completion 100% -> {'MET' if lab.successes == N else 'MISSED'} ({lab.rate:.1%}); "
        f">= Router's completions -> {'MET' if more else 'MISSED'} "
        f"({lab.successes} vs {rtr.successes}); <= Router's extra requests -> "
        f"{'MET' if fewer else 'MISSED'} ({lab.extra_per_success:.3f} vs "
        f"{rtr.extra_per_success:.3f}; {lab.requests - rtr.requests:+d} requests)"
    )
    print(
        f"\n## A primary limited to {LIMIT_PER_S} requests/s ({LIMITED_N} requests; "
        "429 + Retry-After to the next window)"
    )
    table(
        runs,
        [("labkit, limited", "labkit no-fault"), ("Router, limited", "Router no-fault")],
    )


if __name__ == "__main__":
    main()
