"""Grid throughput near the network floor: labkit beside a raw client, litellm and promptfoo.

A 2,000-call grid (N items x 2 prompts x 2 models; default N = 500) against the loopback
OpenAI-compatible server (a child process, as a provider would be remote) at 100 ms latency,
at concurrency 50, 100 and 200. Every path sends the same messages (labkit's own, schema
instructions included). Rows, each a median over `--rounds` with the path order rotated every
round (the machine is shared, so load drift hits every path alike):

- ideal: calls x latency / concurrency (no client overhead at all);
- raw aiohttp: one pooled session, SSE lines parsed with json.loads, nothing else (the floor);
  with `--httpx`, the same on httpx (the measurement behind the transport's choice of aiohttp);
- bare `litellm.acompletion`, streamed + `stream_chunk_builder` + `completion_cost`, on
  `--litellm-calls` calls only (at ~20 ms CPU per call the full grid would take minutes);
- promptfoo 0.120.0 (`promptfoo eval -j C --no-cache`), when Node >= 20 and npm can install it
  into `--promptfoo-dir` (outside the repository); skipped with a note otherwise;
- labkit `Experiment.run` on a fresh cache (lean transport, schema parse, traces), and at the
  first concurrency the same with CPython's default collector settings (the baseline of the
  grid's relaxed collector, `labkit/_gc.py`).

Then: labkit's own per-call CPU above the backend (the same grid on a scripted `FakeBackend`),
the grid re-run from the cache (goal < 0.5 s; median of 5, each started with the trace rows
of the run before it written), and a 400-call grid as a fresh interpreter's first (a new
kernel's first run) beside the same grid run again there. CPU is process CPU (all threads;
promptfoo's from its child processes) per call; a labkit run's includes writing the trace rows
it queued. Goals: labkit wall <= 1.3x raw aiohttp at concurrency 50 (same-round ratio),
<= 2 ms CPU per call, faster than promptfoo.

Run: ``.venv/bin/python bench/bench_grid.py [--items 500] [--rounds 3] [--profile out.prof]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labkit.backends.litellm_backend import import_litellm  # noqa: E402
from labkit.client import Client  # noqa: E402
from labkit.experiments.runner import Experiment  # noqa: E402
from labkit.models import Registry  # noqa: E402
from labkit.testing import FakeBackend  # noqa: E402

MODELS = ["openai/gpt-4o-mini-2024-07-18", "openai/gpt-4o-2024-08-06"]
PROMPTS = {
    "terse": "Sentiment of this review: {{review}}",
    "careful": "Read the review and decide whether the customer liked the product.\n{{review}}",
}
SCHEMA = {"sentiment": ["positive", "negative"]}
REPLY = json.dumps({"sentiment": "positive", "sentiment_confidence": 0.8})
KEY_ENV = "LABKIT_BENCH_KEY"
PROMPTFOO = "0.120.0"
GOAL_VS_RAW, GOAL_CPU_MS, GOAL_CACHED_S = 1.3, 2.0, 0.5

SERVER = """
import sys, json, time
from labkit.testing import FakeOpenAIServer
with FakeOpenAIServer(reply=sys.argv[2], latency=float(sys.argv[1]), max_lifetime=3600) as s:
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


def make_client(url: str | None, folder: Path) -> Client:
    models = {m: {"api_base": url, "api_key_env": KEY_ENV} for m in MODELS} if url else {}
    return Client(
        registry=Registry(models=models), cache_dir=folder / "cache", traces=folder / "traces.db"
    )


def experiment(client: Client, rows: list[dict[str, Any]], c: int, models: list[str]) -> Experiment:
    return Experiment(
        rows, PROMPTS, models, schema=SCHEMA, client=client, concurrency=c,
        params={"temperature": 0}, name="bench",
    )  # fmt: skip


def default_gc(run: Callable[..., Any], **kw: Any) -> Any:
    """`run` with the grid's relaxed collector switched off (the baseline of the `gc` rows)."""
    from labkit.experiments import runner

    relaxed = runner.relaxed_gc
    runner.relaxed_gc = contextlib.nullcontext  # type: ignore[assignment]
    try:
        return run(**kw)
    finally:
        runner.relaxed_gc = relaxed


def bare_requests(exp: Experiment) -> list[dict[str, Any]]:
    """The exact messages labkit sends for every cell, so every path sends the same bytes."""
    out = []
    for cell in exp._cells():
        p = exp.client.prepare(
            template=exp.prompts[cell.prompt], variables=exp._inputs[cell.item],
            model=cell.model, schema=exp.schema, sample=cell.repeat, **exp.params,
        )  # fmt: skip
        out.append({"model": cell.model, "messages": p.messages, **exp.params})
    return out


# ----------------------------------------------------------------------------- the paths
def _streamed(req: dict[str, Any]) -> dict[str, Any]:
    """The body a raw client posts: the wire model name, streamed with usage."""
    return {
        **req,
        "model": req["model"].split("/", 1)[1],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _check_sse(lines: list[bytes]) -> None:
    """What any client must do with the stream: decode each event, join text, keep usage."""
    parts, usage = [], None
    for line in lines:
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
            chunk = json.loads(line[5:])
            usage = chunk.get("usage") or usage
            for ch in chunk["choices"]:
                parts.append(ch["delta"].get("content") or "")
    assert "".join(parts) == REPLY and usage


async def raw_aiohttp(requests: list[dict[str, Any]], url: str, c: int) -> None:
    """The floor: what any client must do (post, read SSE, decode JSON, sum usage)."""
    import aiohttp

    sem = asyncio.Semaphore(c)
    headers = {"authorization": f"Bearer {os.environ[KEY_ENV]}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(req: dict[str, Any]) -> None:
            body = _streamed(req)
            async with (
                sem,
                session.post(f"{url}/chat/completions", json=body, headers=headers) as r,
            ):
                _check_sse([line async for line in r.content])

        await asyncio.gather(*(one(r) for r in requests))


async def raw_httpx(requests: list[dict[str, Any]], url: str, c: int) -> None:
    """The same floor on httpx, the other pooled client at hand (it decides the transport)."""
    import httpx

    sem = asyncio.Semaphore(c)
    headers = {"authorization": f"Bearer {os.environ[KEY_ENV]}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=c)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(req: dict[str, Any]) -> None:
            body = _streamed(req)
            url_ = f"{url}/chat/completions"
            async with sem, client.stream("POST", url_, json=body, headers=headers) as r:
                _check_sse([line.encode() async for line in r.aiter_lines()])

        await asyncio.gather(*(one(r) for r in requests))


async def bare_litellm(requests: list[dict[str, Any]], url: str, c: int) -> None:
    litellm = import_litellm()
    sem = asyncio.Semaphore(c)
    key = os.environ[KEY_ENV]

    async def one(req: dict[str, Any]) -> None:
        async with sem:
            kw = {**req, "api_base": url, "api_key": key, "max_retries": 0}
            s = await litellm.acompletion(stream=True, stream_options={"include_usage": True}, **kw)
            chunks = [ch async for ch in s]
            full = litellm.stream_chunk_builder(chunks, messages=req["messages"])
            litellm.completion_cost(completion_response=full, model=req["model"])

    await asyncio.gather(*(one(r) for r in requests))


class Promptfoo:
    """promptfoo's CLI on a config that sends the same messages; None when it cannot run."""

    def __init__(self, folder: Path, requests: list[dict[str, Any]], url: str) -> None:
        self.folder = folder
        self.bin = folder / "node_modules" / ".bin" / "promptfoo"
        self.work = Path(tempfile.mkdtemp(prefix="labkit-bench-pf-"))
        by_model: dict[str, list[str]] = {}
        for r in requests:
            by_model.setdefault(r["model"], []).append(r["messages"][-1]["content"])
        messages = by_model[MODELS[0]]  # the same messages go to every model
        assert all(v == messages for v in by_model.values())
        (self.work / "tests.json").write_text(json.dumps([{"vars": {"m": m}} for m in messages]))
        providers = [
            {
                "id": f"openai:chat:{m.split('/', 1)[1]}",
                "config": {"apiBaseUrl": url, "apiKeyEnvar": KEY_ENV, "temperature": 0},
            }
            for m in MODELS
        ]
        config = {"prompts": ["{{m}}"], "providers": providers, "tests": "file://tests.json"}
        (self.work / "promptfooconfig.yaml").write_text(json.dumps(config))
        self.calls = len(messages) * len(MODELS)

    @staticmethod
    def setup(folder: Path) -> str | None:
        """Install promptfoo into `folder` if needed; a reason string when it cannot run."""
        node = shutil.which("node")
        if node is None:
            return "node is not installed"
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
        if int(version.strip().lstrip("v").split(".")[0] or 0) < 20:
            return f"promptfoo {PROMPTFOO} needs Node >= 20, found {version.strip()}"
        package = folder / "node_modules" / "promptfoo"
        if not (folder / "node_modules" / ".bin" / "promptfoo").exists():
            npm = shutil.which("npm")
            if npm is None:
                return "npm is not installed"
            print(f"installing promptfoo@{PROMPTFOO} into {folder} (once) ...", flush=True)
            folder.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                [npm, "install", "--prefix", str(folder), f"promptfoo@{PROMPTFOO}",
                 "--no-audit", "--no-fund"],
                capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode != 0:
                return f"npm install failed: {done.stderr.strip().splitlines()[-1:]}"
        link = package / "drizzle"  # 0.120.0 looks for its migrations here, ships them in dist/
        if not link.exists() and (package / "dist" / "drizzle").is_dir():
            link.symlink_to(Path("dist") / "drizzle")
        return None

    def run(self, c: int) -> None:
        env = {
            **os.environ,
            "PROMPTFOO_DISABLE_TELEMETRY": "1",
            "PROMPTFOO_DISABLE_UPDATE": "1",
            "PROMPTFOO_CACHE_ENABLED": "false",
            "PROMPTFOO_CONFIG_DIR": str(self.work / "home"),
            "NO_COLOR": "1",
        }
        args = [str(self.bin), "eval", "-c", "promptfooconfig.yaml", "-j", str(c), "--no-cache",
                "--no-progress-bar", "--no-table", "-o", "out.json"]  # fmt: skip
        done = subprocess.run(args, cwd=self.work, env=env, capture_output=True, text=True)
        out = json.loads((self.work / "out.json").read_text())
        results = out["results"]["results"]
        errors = sum(1 for r in results if r.get("error"))
        # 0.120.0 can exit 1 from its log writer after the eval finished; the results decide.
        if len(results) != self.calls or errors:
            raise RuntimeError(
                f"promptfoo: exit {done.returncode}, {len(results)} results, {errors} errors: "
                f"{done.stderr[-400:]}"
            )


# ----------------------------------------------------------------------------- measuring
def measure(fn: Callable[[], Any], *, children: bool = False) -> tuple[float, float]:
    """(wall s, CPU s) of fn(): this process's CPU (all threads), or its waited children's."""

    def cpu() -> float:
        if children:
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            return ru.ru_utime + ru.ru_stime
        return time.process_time()

    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def measure_run(fn: Callable[[], Any], client: Client) -> tuple[float, float]:
    """`measure` for a labkit run: the wall the caller waits for, and the CPU of the run plus
    writing the trace rows it queued (the writer thread writes the last of them after the run
    returns; they are the run's work, so they are charged to it here)."""
    wall, cpu = measure(fn)
    return wall, cpu + measure(client.tracer.flush)[1]


class GcClock:
    """Seconds spent in the garbage collector (every generation, every thread) while on."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._tick)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._tick)


async def _call(fn: Callable[[], Any]) -> None:
    fn()


FIRST_ITEMS = 100
FIRST = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import bench_grid as b
rows = b.dataset(b.FIRST_ITEMS)
client = b.make_client(sys.argv[2], b.Path(sys.argv[3]))
walls = []
for cache in ("use", "off"):
    exp = b.experiment(client, rows, int(sys.argv[4]), b.MODELS)
    start = time.perf_counter()
    exp.run(progress=False, cache=cache)
    walls.append(time.perf_counter() - start)
client.close()
print(json.dumps([*walls, "litellm" in sys.modules]))
"""


def child_json(script: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `script` in a fresh interpreter with `args`; the JSON of its last output line."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_grid(url: str, folder: Path, c: int) -> tuple[float, float, bool]:
    """(first grid's wall, the same grid again, whether litellm got imported) in a fresh
    interpreter: what a user's first run in a new kernel waits for (imports, the model map)."""
    cold, warm, imported = child_json(
        FIRST, str(Path(__file__).parent), url, str(folder), str(c),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return float(cold), float(warm), bool(imported)


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    """The loopback OpenAI-compatible server as a child process (closing its stdin stops it),
    and its base URL."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(latency), REPLY],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--items", type=int, default=500, help="dataset rows (calls = 4 x items)")
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", default="50,100,200")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--litellm-calls", type=int, default=400)
    ap.add_argument("--promptfoo-dir", default="/tmp/pf", help="where promptfoo is installed")
    ap.add_argument("--no-promptfoo", action="store_true")
    ap.add_argument(
        "--httpx", action="store_true", help="add a raw httpx client (transport choice)"
    )
    ap.add_argument("--profile", help="write a cProfile of one labkit run to this file")
    args = ap.parse_args()
    os.environ.setdefault(KEY_ENV, "sk-bench-not-a-real-key")
    levels = [int(c) for c in args.concurrency.split(",")]

    server, url = start_server(args.latency)
    tmp = Path(tempfile.mkdtemp(prefix="labkit-bench-grid-"))
    rows = dataset(args.items)
    walls: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    ratios: dict[int, list[float]] = {}
    counts: dict[str, int] = {}
    gc_s: dict[str, list[float]] = {}
    try:
        warm = make_client(url, tmp / "warm")
        requests = bare_requests(experiment(warm, rows, 50, MODELS))
        calls = counts["raw"] = counts["labkit"] = counts["labkit-gc"] = counts["httpx"] = len(
            requests
        )
        lite_reqs = requests[: args.litellm_calls]
        counts["litellm"] = len(lite_reqs)
        note = "skipped (--no-promptfoo)" if args.no_promptfoo else None
        pf: Promptfoo | None = None
        if note is None:
            note = Promptfoo.setup(Path(args.promptfoo_dir))
        if note is None:
            pf = Promptfoo(Path(args.promptfoo_dir), requests, url)
            counts["promptfoo"] = pf.calls
        # Warm-up: imports, litellm's tables, connections, node's module cache.
        asyncio.run(raw_aiohttp(requests[:100], url, 50))
        asyncio.run(bare_litellm(requests[:50], url, 50))
        experiment(warm, rows[:25], 50, MODELS).run(progress=False, cache="off")
        warm.close()

        last: Experiment | None = None
        for c in levels:
            for r in range(args.rounds):
                paths: dict[str, Callable[[], Any]] = {
                    "raw": lambda: asyncio.run(raw_aiohttp(requests, url, c)),  # noqa: B023
                    "litellm": lambda: asyncio.run(bare_litellm(lite_reqs, url, c)),  # noqa: B023
                }
                if args.httpx:
                    paths["httpx"] = lambda: asyncio.run(raw_httpx(requests, url, c))  # noqa: B023
                if pf is not None:
                    paths["promptfoo"] = lambda: pf.run(c)  # noqa: B023
                client = make_client(url, tmp / f"c{c}r{r}")
                exp = experiment(client, rows, c, MODELS)
                paths["labkit"] = lambda: exp.run(progress=False)  # noqa: B023
                if c == levels[0]:  # baseline for the relaxed collector: CPython's defaults
                    gc_client = make_client(url, tmp / f"gc{c}r{r}")
                    gc_exp = experiment(gc_client, rows, c, MODELS)
                    paths["labkit-gc"] = lambda: default_gc(gc_exp.run, progress=False)  # noqa: B023
                names = list(paths)
                names = names[r % len(names) :] + names[: r % len(names)]
                line = []
                for name in names:
                    # Each path starts without the garbage of the one before it: left to the
                    # next path's collections, a labkit grid's garbage cost the path after it
                    # (raw aiohttp, in two of three rotated rounds) ~0.2 s of wall.
                    gc.collect()
                    profiling = args.profile and name == "labkit" and c == levels[0] and r == 0
                    if profiling:
                        import cProfile

                        prof = cProfile.Profile()  # the grid runs on the client's loop thread
                        client.run(_call(prof.enable))
                    with GcClock() as collector:
                        if name.startswith("labkit"):
                            owner = client if name == "labkit" else gc_client
                            wall, cpu = measure_run(paths[name], owner)
                        else:
                            wall, cpu = measure(paths[name], children=name == "promptfoo")
                    if name.startswith("labkit") and c == levels[0]:
                        gc_s.setdefault(name, []).append(collector.seconds)
                    if profiling:
                        client.run(_call(prof.disable))
                        prof.dump_stats(args.profile)
                    if name.startswith("labkit"):
                        done = exp if name == "labkit" else gc_exp
                        errs = int(done.results.df["error"].notna().sum())
                        assert errs == 0 and len(done.results) == calls, (errs, len(done.results))
                    walls.setdefault((name, c), []).append(wall)
                    cpus.setdefault((name, c), []).append(cpu / counts[name])
                    line.append(f"{name} {wall:.2f}s")
                ratios.setdefault(c, []).append(walls["labkit", c][-1] / walls["raw", c][-1])
                print(f"concurrency {c}, round {r + 1}: " + ", ".join(line), flush=True)
                if last is not None:
                    last.client.close()
                last = exp
                if c == levels[0]:
                    gc_client.close()

        assert last is not None
        cached, cached_gc = [], []
        for _ in range(5):  # alternated with the default collector as the baseline
            # Each re-run starts with the trace rows of the run before it written, as a user's
            # re-run does seconds after a grid: the writer thread holds the GIL while it
            # encodes, and 2,000 queued rows cost a re-run 0.05-0.15 s that are not its own.
            # Its own rows are charged to its CPU (`measure_run`).
            last.client.tracer.flush()
            cached.append(measure_run(lambda: last.run(progress=False), last.client))
            cached_gc.append(measure_run(lambda: default_gc(last.run, progress=False), last.client))
        assert bool(last.results.df["cache_hit"].all()), "re-run was not served from the cache"
        last.client.close()
        scripted = []
        for r in range(args.rounds):  # labkit's own work: the same grid on a scripted backend
            client = make_client(None, tmp / f"fake{r}")
            client.add_backend("fake", FakeBackend(REPLY))
            fake_models = [f"fake/{m.split('/', 1)[1]}" for m in MODELS]
            run = experiment(client, rows, levels[0], fake_models).run
            scripted.append(measure_run(lambda: run(progress=False), client)[1])  # noqa: B023
            client.close()
        first = [first_grid(url, tmp / f"first{r}", levels[0]) for r in range(args.rounds)]
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=10)

    print()
    print(
        f"grid: {args.items} items x {len(PROMPTS)} prompts x {len(MODELS)} models = {calls} "
        f"calls (bare litellm: {counts['litellm']}), server latency {args.latency * 1000:.0f} ms, "
        f"medians of {args.rounds} rounds, path order rotated each round"
    )
    if note:
        print(f"promptfoo: {note}")
    header = f"{'path':<38}{'conc':>6}{'calls':>7}{'wall s':>9}{'x ideal':>9}{'CPU ms/call':>13}"
    print(header)
    print("-" * len(header))
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu_ms = {k: statistics.median(v) * 1000 for k, v in cpus.items()}
    labels = {
        "raw": "raw aiohttp client (floor)",
        "httpx": "raw httpx client",
        "litellm": "litellm.acompletion, streamed",
        "promptfoo": f"promptfoo {PROMPTFOO} eval",
        "labkit": "labkit Experiment.run, fresh cache",
        "labkit-gc": "  the same, CPython's default GC",
    }
    for c in levels:
        ideal = calls * args.latency / c
        print(f"{'ideal (calls x latency / concurrency)':<38}{c:>6}{calls:>7}{ideal:>9.2f}")
        for name, label in labels.items():
            if (name, c) in med:
                n = counts[name]
                x = med[name, c] / (n * args.latency / c)
                print(
                    f"{label:<38}{c:>6}{n:>7}{med[name, c]:>9.2f}{x:>9.2f}{cpu_ms[name, c]:>13.2f}"
                )
    cached_s = statistics.median(w for w, _ in cached)
    above = statistics.median(scripted) * 1000 / calls
    cached_ms = statistics.median(c for _, c in cached) * 1000 / calls
    print(
        f"{'labkit re-run from the cache':<38}{levels[-1]:>6}{calls:>7}{cached_s:>9.2f}"
        f"{'':>9}{cached_ms:>13.2f}"
    )
    print(
        f"{'  the same, CPython default GC':<38}{levels[-1]:>6}{calls:>7}"
        f"{statistics.median(w for w, _ in cached_gc):>9.2f}{'':>9}"
        f"{statistics.median(c for _, c in cached_gc) * 1000 / calls:>13.2f}"
    )
    print(f"labkit's own CPU above the backend (scripted FakeBackend): {above:.2f} ms/call")
    cold, warm_s, imported = (statistics.median(f[i] for f in first) for i in range(3))
    print(
        f"first grid of a fresh interpreter ({FIRST_ITEMS * 4} calls): {cold:.2f} s vs the same"
        f" grid run again there {warm_s:.2f} s; litellm imported by it: {bool(imported)}"
    )
    print()
    c0 = levels[0]
    vs_raw = statistics.median(ratios[c0])
    lk_cpu = cpu_ms["labkit", c0]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(
        f"labkit wall / raw aiohttp at concurrency {c0} (median of same-round ratios): "
        f"{vs_raw:.2f} (goal <= {GOAL_VS_RAW}: {verdict(vs_raw <= GOAL_VS_RAW)})"
        + "".join(f"; at {c}: {statistics.median(ratios[c]):.2f}" for c in levels[1:])
    )
    print(
        f"labkit CPU per call: {lk_cpu:.2f} ms (goal <= {GOAL_CPU_MS}: {verdict(lk_cpu <= GOAL_CPU_MS)})"
    )
    print(
        f"relaxed collector during the grid: {lk_cpu:.2f} ms CPU/call, wall {med['labkit', c0]:.2f}"
        f" s vs CPython's defaults {cpu_ms['labkit-gc', c0]:.2f} ms, {med['labkit-gc', c0]:.2f} s"
        f" (same rounds); cached re-run {cached_s:.3f} s vs"
        f" {statistics.median(w for w, _ in cached_gc):.3f} s; time in the collector per grid"
        f" {statistics.median(gc_s['labkit']):.3f} s vs {statistics.median(gc_s['labkit-gc']):.3f} s"
    )
    if ("promptfoo", c0) in med:
        faster = [med["promptfoo", c] / med["labkit", c] for c in levels]
        print(
            "promptfoo wall / labkit wall: "
            + ", ".join(f"{c}: {f:.2f}" for c, f in zip(levels, faster, strict=True))
            + f" (goal > 1: {verdict(min(faster) > 1)})"
        )
    print(
        f"cached re-run of {calls} calls: {cached_s:.3f} s (goal < {GOAL_CACHED_S}: {verdict(cached_s < GOAL_CACHED_S)})"
    )


if __name__ == "__main__":
    main()
