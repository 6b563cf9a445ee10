"""Team set-up costs: a cache hit on Redis vs diskcache, and a grid with OTLP export on vs off.

1. Cache hit, median per call over `--hits` hits, rounds alternated (the machine is shared):
   `client.generate` answered from a diskcache folder (the default) and from a redis-server on
   loopback (started here, Debian's `redis-server`), and the bare store `get` under both.
2. Grid throughput with OpenTelemetry export on vs off: bench_grid's grid (N items x 2 prompts
   x 2 models) against the loopback OpenAI-compatible server (a child process) at `--latency`,
   concurrency `--concurrency`, on a fresh cache; then the same grid re-run from the cache
   (CPU-bound: the harshest case for export). Each run's timing includes writing its trace
   rows and posting its spans (flushed before the clock stops, in both modes). Spans are built
   and posted by labkit's exporter process (`labkit.otel_export`); CPU is reported for the
   grid's own process and, apart, for the exporter. Export posts OTLP/HTTP to a loopback
   receiver in a child process that reads and discards (so the figure is labkit's own cost,
   not a collector's). Medians over `--rounds`, order rotated each round. Goal: export costs
   < 5% of throughput.

Run: ``.venv/bin/python bench/bench_team.py [--items 250] [--rounds 3] [--hits 2000]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_callpath import median_us  # noqa: E402
from bench_grid import KEY_ENV, MODELS, dataset, experiment, measure, start_server  # noqa: E402

from labkit.client import Client  # noqa: E402
from labkit.models import Registry  # noqa: E402
from labkit.otel import OtelConfig  # noqa: E402
from labkit.testing import FakeBackend  # noqa: E402

GOAL_EXPORT = 0.05
SINK = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
posts = [0, 0]
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        posts[0] += 1; posts[1] += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
threading.Thread(target=s.serve_forever, daemon=True).start()
sys.stdin.read()
print(posts[0], posts[1], flush=True)
"""
# Capabilities given, so no litellm lookup muddles the figures.
CAPS = {"context_window": 128000, "max_output_tokens": 16384, "json_mode": True,
        "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        return None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port, socket_timeout=1)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


def bench_hits(tmp: Path, redis_url: str | None, hits: int, rounds: int) -> None:
    stores: dict[str, Any] = {"diskcache": tmp / "hit-cache"}
    if redis_url:
        stores["redis (loopback)"] = redis_url
    clients = {}
    for name, where in stores.items():
        c = Client(registry=Registry(), cache=where, traces=tmp / f"hit-{len(clients)}.db")
        c.add_backend("fake", FakeBackend(["a cached answer of moderate length " * 4]))
        c.generate("Name three uses of a cache.", model="fake/x", max_tokens=60)
        clients[name] = c
    key = (
        next(iter(clients.values()))
        .prepare("Name three uses of a cache.", model="fake/x", max_tokens=60)
        .key
    )
    call: dict[str, list[float]] = {n: [] for n in clients}
    get: dict[str, list[float]] = {n: [] for n in clients}
    for r in range(rounds):
        order = list(clients)[r % len(clients) :] + list(clients)[: r % len(clients)]
        for name in order:
            c = clients[name]
            assert c.generate("Name three uses of a cache.", model="fake/x", max_tokens=60).cache_hit  # fmt: skip
            call[name].append(median_us(lambda c=c: c.generate("Name three uses of a cache.", model="fake/x", max_tokens=60), hits))  # fmt: skip
            store = c.cache
            assert store is not None
            get[name].append(median_us(lambda s=store: s.get(key), hits))
    for c in clients.values():
        c.close()
    base = statistics.median(call["diskcache"])
    print(f"\n1. Cache hit, median of {rounds} rounds x {hits} hits (same run)")
    print(f"{'store':<20} {'generate() hit':>16} {'store.get':>12} {'vs diskcache':>13}")
    for name in clients:
        whole, bare = statistics.median(call[name]), statistics.median(get[name])
        print(f"{name:<20} {whole:>13.0f} µs {bare:>9.0f} µs {whole / base:>12.2f}x")
    if not redis_url:
        print("(redis-server not installed: `make redis`; only diskcache measured)")


def grid_client(url: str, folder: Path, otel: OtelConfig | None) -> Client:
    models = {m: {"api_base": url, "api_key_env": KEY_ENV, **CAPS} for m in MODELS}
    return Client(
        registry=Registry(models=models), cache_dir=folder / "cache",
        traces=folder / "traces.db", otel=otel if otel is not None else False,
    )  # fmt: skip


def exporter_cpu(client: Client) -> float:
    """CPU seconds the client's exporter process has used so far (Linux /proc; 0 if none)."""
    total = 0.0
    for sink in client.tracer.sinks:
        pid = getattr(sink, "pid", None)
        if pid is None:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_and_flush(exp: Any, client: Client) -> float:
    """The grid with its trace rows written (returns that wall time), then its spans posted:
    each run pays for its own export inside the whole timing (both modes flush)."""
    t0 = time.perf_counter()
    exp.run(progress=False)
    client.tracer.flush()
    grid = time.perf_counter() - t0
    for sink in client.tracer.sinks:
        sink.flush()  # type: ignore[attr-defined]
    return grid


def warm_up(client: Client) -> None:
    """One call first, so a client's exporter process has started (once per client, as in a
    notebook session) before the clock does; done in both modes."""
    client.generate("Warm up.", model=MODELS[0], max_tokens=5)
    client.tracer.flush()
    for sink in client.tracer.sinks:
        sink.flush()  # type: ignore[attr-defined]


def bench_export(tmp: Path, args: argparse.Namespace) -> None:
    server, url = start_server(args.latency)
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert sink.stdout is not None
    endpoint = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
    rows = dataset(args.items)
    results: dict[str, dict[str, list[float]]] = {
        k: {f"{m}{p}": [] for m in ("", "cpu_", "exp_", "all_") for p in ("miss", "hit")}
        for k in ("off", "on")
    }
    spans = 0
    try:
        warm = grid_client(url, tmp / "warm", OtelConfig(endpoint=endpoint))
        experiment(warm, rows[:25], args.concurrency, MODELS).run(progress=False, cache="off")
        warm.close()
        for r in range(args.rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                folder = tmp / f"grid-{r}-{mode}"
                cfg = OtelConfig(endpoint=endpoint) if mode == "on" else None
                client = grid_client(url, folder, cfg)
                warm_up(client)
                exp = experiment(client, rows, args.concurrency, MODELS)
                calls = exp.total
                for phase in ("miss", "hit"):  # a fresh grid, then the same from the cache
                    before = exporter_cpu(client)
                    grid: list[float] = []
                    wall, cpu = measure(lambda e=exp, c=client, g=grid: g.append(run_and_flush(e, c)))  # fmt: skip
                    results[mode][phase].append(calls / grid[0])
                    results[mode]["all_" + phase].append(calls / wall)
                    results[mode]["cpu_" + phase].append(cpu / calls * 1000)
                    spent = exporter_cpu(client) - before
                    results[mode]["exp_" + phase].append(spent / calls * 1000)
                client.close()
                if mode == "on":
                    spans += sum(s.spans for s in client.tracer.sinks)  # type: ignore[attr-defined]
    finally:
        for proc in (server, sink):
            if proc.stdin is not None:
                proc.stdin.close()
        posts = sink.stdout.readline().split() if sink.stdout else []
        for proc in (server, sink):
            proc.wait(timeout=10)
    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in results.items()}
    print(
        f"\n2. Grid, {calls} calls ({args.items} items x 2 prompts x 2 models), concurrency "
        f"{args.concurrency}, server latency {args.latency * 1000:.0f} ms; median of "
        f"{args.rounds} rounds, order rotated"
    )
    print(f"{'':<28} {'export off':>12} {'export on':>12} {'cost':>8}")
    for key, label in (
        ("miss", "fresh grid, calls/s"),
        ("hit", "from the cache, calls/s"),
        ("all_miss", "fresh, to last span posted"),
        ("all_hit", "cache, to last span posted"),
    ):
        off, on = med["off"][key], med["on"][key]
        print(f"{label:<28} {off:>12.0f} {on:>12.0f} {1 - on / off:>7.1%}")
    for key, label in (("cpu_miss", "fresh grid, CPU ms/call"), ("cpu_hit", "from cache, CPU ms/call")):  # fmt: skip
        off, on = med["off"][key], med["on"][key]
        print(f"{label:<28} {off:>12.3f} {on:>12.3f} {on / off - 1:>+7.1%}  (grid process)")
    for key, label in (("exp_miss", "fresh grid"), ("exp_hit", "from the cache")):
        print(f"{'exporter process, ' + label:<40} {med['on'][key]:>12.3f} ms CPU/call")
    # each round's on vs off (adjacent runs): steadier on a machine whose load drifts
    keys = ("miss", "hit", "all_miss", "all_hit")
    pairs = {k: zip(results["on"][k], results["off"][k], strict=True) for k in keys}
    paired = {k: statistics.median(1 - on / off for on, off in v) for k, v in pairs.items()}
    print(
        "paired per round, median cost: fresh {miss:.1%}, from the cache {hit:.1%}; to the last "
        "span posted: fresh {all_miss:.1%}, from the cache {all_hit:.1%}".format(**paired)
    )
    cost = 1 - med["on"]["miss"] / med["off"]["miss"]
    verdict = "met" if cost < GOAL_EXPORT else "NOT met"
    print(f"spans exported: {spans} in {posts[0] if posts else '?'} OTLP posts "
          f"({int(posts[1]) / 1e6 if len(posts) > 1 else 0:.1f} MB)")  # fmt: skip
    print(f"goal: export costs < {GOAL_EXPORT:.0%} of a fresh grid's throughput: {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--items", type=int, default=250, help="dataset rows (calls = 4 x items)")
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hits", type=int, default=2000)
    args = ap.parse_args()
    os.environ.setdefault(KEY_ENV, "sk-bench-not-a-real-key")
    tmp = Path(tempfile.mkdtemp(prefix="labkit-bench-team-"))
    redis = start_redis(tmp)
    try:
        bench_hits(tmp, redis[1] if redis else None, args.hits, args.rounds)
    finally:
        if redis is not None:
            redis[0].kill()
            redis[0].wait(10)
    bench_export(tmp, args)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
