"""Issue 6 benchmark: a 2,000-call grid through labkit beside bare litellm, in the same run.

The grid is N items x 2 prompts x 2 models (default 500 x 2 x 2 = 2,000 calls) against the
loopback OpenAI-compatible server (run in a child process, as a provider would be remote) at
100 ms latency, concurrency 50. Figures, each a median over `--rounds` (interleaved, the order alternating,
so load drift hits both paths alike):

- ideal: calls x latency / concurrency (no client overhead at all);
- bare `litellm.acompletion` under an `asyncio.Semaphore(50)`, streamed with usage (the same
  wire protocol labkit's backend speaks: it streams to measure time to first token) and, for
  reference, not streamed. Requests are byte-identical to labkit's (same messages);
- `Experiment.run()` on a fresh cache (goal: at least 0.95x the streamed baseline's throughput);
- the same grid re-run from the cache (goal: under 2 s), and its peak Python heap (tracemalloc,
  measured in a separate re-run because tracing slows Python down) and the process's max RSS.

Run: ``.venv/bin/python bench/bench_grid.py [--items 500] [--rounds 3] [--profile out.prof]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labkit.backends.litellm_backend import import_litellm  # noqa: E402
from labkit.client import Client  # noqa: E402
from labkit.experiment import Experiment  # noqa: E402
from labkit.models import Registry  # noqa: E402

MODELS = ["openai/gpt-4o-mini-2024-07-18", "openai/gpt-4o-2024-08-06"]
PROMPTS = {
    "terse": "Sentiment of this review: {{review}}",
    "careful": "Read the review and decide whether the customer liked the product.\n{{review}}",
}
SCHEMA = {"sentiment": ["positive", "negative"]}
KEY_ENV = "LABKIT_BENCH_KEY"
GOAL_RATIO, GOAL_CACHED_S = 0.95, 2.0

SERVER = """
import sys, json, time
from labkit.testing import FakeOpenAIServer
reply = json.dumps({"sentiment": "positive", "sentiment_confidence": 0.8})
with FakeOpenAIServer(reply=reply, latency=float(sys.argv[1]), max_lifetime=3600) as s:
    print(s.url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
"""


def dataset(n: int) -> list[dict[str, Any]]:
    words = ["great", "awful", "fine", "broken", "lovely", "late"]
    return [
        {
            "id": f"r{i:05d}",
            "review": f"The product was {words[i % 6]}; order {i} arrived on day {i % 28 + 1}.",
            "expected": {"sentiment": "positive" if i % 2 == 0 else "negative"},
        }
        for i in range(n)
    ]


def make_client(url: str, folder: Path) -> Client:
    registry = Registry(models={m: {"api_base": url, "api_key_env": KEY_ENV} for m in MODELS})
    return Client(registry=registry, cache_dir=folder / "cache", traces=folder / "traces.db")


def experiment(client: Client, rows: list[dict[str, Any]], concurrency: int) -> Experiment:
    return Experiment(
        rows, PROMPTS, MODELS, schema=SCHEMA, client=client, concurrency=concurrency,
        params={"temperature": 0}, name="bench",
    )  # fmt: skip


def bare_requests(exp: Experiment) -> list[dict[str, Any]]:
    """The exact messages labkit sends for every cell, so both paths send the same bytes."""
    out = []
    for cell in exp._cells():
        p = exp.client.prepare(
            template=exp.prompts[cell.prompt], variables=exp._inputs[cell.item],
            model=cell.model, schema=exp.schema, sample=cell.repeat, **exp.params,
        )  # fmt: skip
        out.append({"model": cell.model, "messages": p.messages, **exp.params})
    return out


async def bare_litellm(
    requests: list[dict[str, Any]], url: str, concurrency: int, stream: bool
) -> float:
    litellm = import_litellm()
    sem = asyncio.Semaphore(concurrency)
    key = os.environ[KEY_ENV]

    async def one(req: dict[str, Any]) -> None:
        async with sem:
            kw = {**req, "api_base": url, "api_key": key, "max_retries": 0}
            if stream:
                s = await litellm.acompletion(
                    stream=True, stream_options={"include_usage": True}, **kw
                )
                chunks = [c async for c in s]
                full = litellm.stream_chunk_builder(chunks, messages=req["messages"])
            else:
                full = await litellm.acompletion(**kw)
            litellm.completion_cost(completion_response=full, model=req["model"])

    start = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - start


CPU: dict[str, list[float]] = {}


def timed(fn: Callable[[], Any], key: str | None = None) -> tuple[float, Any]:
    """Wall time of fn(); its process CPU time (all threads) goes to CPU[key]."""
    cpu, start = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    if key is not None:
        CPU.setdefault(key, []).append(time.process_time() - cpu)
    return wall, out


async def _call(fn: Callable[[], Any]) -> None:
    fn()


def run_baselines(
    times: dict[str, list[float]], requests: list[dict[str, Any]], url: str, args: Any
) -> None:
    for kind, stream in (("stream", True), ("plain", False)):
        if kind == "plain" and args.no_plain:
            continue
        coro = bare_litellm(requests, url, args.concurrency, stream)
        elapsed, _ = timed(partial(asyncio.run, coro), kind)
        times[kind].append(elapsed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=500, help="dataset rows (calls = 4 x items)")
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-plain", action="store_true", help="skip the non-streamed baseline")
    ap.add_argument("--profile", help="write a cProfile of one labkit run to this file")
    args = ap.parse_args()
    os.environ.setdefault(KEY_ENV, "sk-bench-not-a-real-key")

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.latency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    tmp = Path(tempfile.mkdtemp(prefix="labkit-bench-grid-"))
    rows = dataset(args.items)
    try:
        # Warm-up (imports, litellm's model tables, connection setup) on a small grid, both paths.
        warm = make_client(url, tmp / "warm")
        warm_exp = experiment(warm, rows[:25], args.concurrency)
        requests_all = bare_requests(experiment(warm, rows, args.concurrency))
        calls = len(requests_all)
        asyncio.run(bare_litellm(requests_all[:100], url, args.concurrency, True))
        warm_exp.run(progress=False, cache="off")
        warm.close()

        times: dict[str, list[float]] = {"stream": [], "plain": [], "labkit": []}
        last: Experiment | None = None
        for r in range(args.rounds):
            # Alternate which path goes first, so drift within a round favours neither.
            if r % 2 == 0:
                run_baselines(times, requests_all, url, args)
            client = make_client(url, tmp / f"round{r}")
            exp = experiment(client, rows, args.concurrency)
            if args.profile and r == 0:
                import cProfile

                prof = cProfile.Profile()  # the grid runs on the client's loop thread:
                client.run(_call(prof.enable))  # profile that thread, not this one
                elapsed, res = timed(partial(exp.run, progress=False), "labkit")
                client.run(_call(prof.disable))
                prof.dump_stats(args.profile)
            else:
                elapsed, res = timed(partial(exp.run, progress=False), "labkit")
            errors = int(res.df["error"].notna().sum())
            assert len(res) == calls, (len(res), calls)
            times["labkit"].append(elapsed)
            if r % 2 == 1:
                run_baselines(times, requests_all, url, args)
            print(
                f"round {r + 1}: litellm streamed {times['stream'][-1]:.2f}s"
                + (f", plain {times['plain'][-1]:.2f}s" if times["plain"] else "")
                + f", labkit {elapsed:.2f}s ({errors} errors)",
                flush=True,
            )
            if last is not None:
                last.client.close()
            last = exp

        assert last is not None
        cached = []
        for _ in range(3):
            elapsed, res = timed(partial(last.run, progress=False), "cached")
            assert bool(res.df["cache_hit"].all()), "re-run was not served from the cache"
            cached.append(elapsed)
        tracemalloc.start()
        last.run(progress=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        last.client.close()
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=10)

    ideal = calls * args.latency / args.concurrency
    med = {k: statistics.median(v) for k, v in times.items() if v}
    cached_s = statistics.median(cached)
    base = med["stream"]
    print()
    print(
        f"grid: {args.items} items x {len(PROMPTS)} prompts x {len(MODELS)} models = {calls} "
        f"calls, server latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}, "
        f"medians of {args.rounds} round(s)"
    )
    header = (
        f"{'path':<44}{'wall s':>9}{'calls/s':>10}{'x ideal':>9}{'thru vs litellm':>17}"
        f"{'CPU ms/call':>13}"
    )
    print(header)
    print("-" * len(header))

    def line(name: str, secs: float, key: str | None) -> None:
        ratio = f"{base / secs:.3f}" if key else "-"
        cpu = f"{statistics.median(CPU[key]) * 1000 / calls:.1f}" if key in CPU else "-"
        print(
            f"{name:<44}{secs:>9.2f}{calls / secs:>10.1f}{secs / ideal:>9.2f}{ratio:>17}{cpu:>13}"
        )

    line("ideal (calls x latency / concurrency)", ideal, None)
    if "plain" in med:
        line("litellm.acompletion, not streamed", med["plain"], "plain")
    line("litellm.acompletion, streamed (baseline)", base, "stream")
    line("labkit Experiment.run, fresh cache", med["labkit"], "labkit")
    line("labkit Experiment.run, from cache", cached_s, "cached")
    print()
    ratio = base / med["labkit"]
    print(
        f"labkit throughput / litellm streamed: {ratio:.3f} (goal >= {GOAL_RATIO}: "
        f"{'met' if ratio >= GOAL_RATIO else 'NOT met'})"
    )
    print(
        f"cached re-run: {cached_s:.2f} s (goal < {GOAL_CACHED_S} s: "
        f"{'met' if cached_s < GOAL_CACHED_S else 'NOT met'}); peak traced heap "
        f"{peak / 2**20:.1f} MiB; process max RSS {rss_mb:.0f} MiB"
    )


if __name__ == "__main__":
    main()
