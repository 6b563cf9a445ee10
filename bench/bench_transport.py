"""The lean transport's connection reuse: this checkout beside another, alternated.

Each round starts one process per checkout. The process sends bench_grid's 2,000 requests
(labkit's own messages, schema instructions included) through `OpenAICompatBackend` alone, at
concurrency 50, to the loopback server at 100 ms latency, then the same requests through the
raw aiohttp client (the floor, same process). It prints the TCP connections each opened (a
pooled client needs one per request in flight: 50), wall time and CPU per call. With
`--llama-server`, it also starts the real `llama_cpp.server` on the embedded SmolLM2 (as a user
would, `python -m llama_cpp.server`) and sends it 10 calls one after another, after one to warm
it: connections opened and failed calls. The order of the checkouts alternates by round.

Run: ``.venv/bin/python bench/bench_transport.py [--baseline /tmp/labkit-before]
[--rounds 3] [--llama-server]``, the baseline made by, e.g.,
``git worktree add /tmp/labkit-before <commit>``; without it, this checkout alone.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench_grid import ROOT, child_json

SCENARIO = """
import asyncio, json, os, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1] + "/bench")
import bench_grid as b
import aiohttp
import labkit
from labkit.backends.openai_compat import OpenAICompatBackend
from labkit.types import Request

opened = [0]
connect = aiohttp.TCPConnector._create_connection

async def counted(self, *args, **kwargs):  # every new TCP connection a client opens
    opened[0] += 1
    return await connect(self, *args, **kwargs)

aiohttp.TCPConnector._create_connection = counted
os.environ.setdefault(b.KEY_ENV, "sk-bench-not-a-real-key")
key = os.environ[b.KEY_ENV]

async def lean(requests, c):
    backend = OpenAICompatBackend(trust_env=False)
    sem = asyncio.Semaphore(c)
    failed = 0

    async def one(request):
        nonlocal failed
        async with sem:
            try:
                await backend.generate(request)
            except Exception:
                failed += 1

    try:
        await asyncio.gather(*(one(r) for r in requests))
    finally:
        await backend.aclose()
    return failed

def measured(fn):
    opened[0] = 0
    wall, cpu = b.measure(fn)
    return {"wall": wall, "cpu": cpu, "connections": opened[0]}

out = {"labkit": labkit.__file__}
server, url = b.start_server(0.1)
client = b.make_client(url, Path(tempfile.mkdtemp()))
bare = b.bare_requests(b.experiment(client, b.dataset(500), 50, b.MODELS))
client.close()
requests = [
    Request(model=r["model"], messages=r["messages"], params={"temperature": 0},
            transport={"api_base": url, "api_key": key})
    for r in bare
]
assert asyncio.run(lean(requests[:100], 50)) == 0  # warm-up
out["lean"] = measured(lambda: asyncio.run(lean(requests, 50)))
out["raw"] = measured(lambda: asyncio.run(b.raw_aiohttp(bare, url, 50)))
out["calls"] = len(requests)
server.stdin.close()

if sys.argv[2] == "llama":
    from labkit.backends.local import gguf_path
    sys.path.insert(0, sys.argv[3] + "/tests")  # the helpers of the bench's own checkout
    from ports import free_port, wait_http

    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512"]
    log = Path(tempfile.mkdtemp()) / "llama_cpp.server.log"
    with log.open("wb") as sink:
        llama = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        wait_http(url, llama, log, name="llama_cpp.server", timeout=120)
        base = {"api_base": f"http://127.0.0.1:{port}/v1", "api_key": key}
        calls = [
            Request(model="openai/smollm2", messages=[{"role": "user", "content": f"Say hi {i}"}],
                    params={"max_tokens": 8, "temperature": 0}, transport=base)
            for i in range(11)
        ]

        async def in_a_row():
            backend = OpenAICompatBackend(trust_env=False)
            failed = 0
            try:
                await backend.generate(calls[0])  # loads the model, imports the tokenizer
                opened[0] = 0
                for request in calls[1:]:
                    try:
                        await backend.generate(request)
                    except Exception:
                        failed += 1
            finally:
                await backend.aclose()
            return {"connections": opened[0], "failed": failed, "calls": len(calls) - 1}

        out["llama"] = asyncio.run(in_a_row())
    finally:
        llama.terminate()
        llama.wait()
print(json.dumps(out))
"""


def run(root: Path, llama: bool) -> dict[str, Any]:
    got: dict[str, Any] = child_json(SCENARIO, str(root), "llama" if llama else "-", str(ROOT))
    assert Path(got["labkit"]).resolve().is_relative_to(root.resolve()), got["labkit"]
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--baseline", help="another labkit checkout (a worktree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-server", action="store_true", help="also the real llama_cpp.server")
    args = ap.parse_args()
    paths = {"this checkout": ROOT}
    if args.baseline:
        paths["baseline"] = Path(args.baseline)
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for r in range(args.rounds):
        for name in list(paths) if r % 2 == 0 else list(paths)[::-1]:
            one = run(paths[name], args.llama_server)
            got[name].append(one)
            n = one["calls"]
            line = (
                f"round {r + 1}, {name}: lean {one['lean']['connections']} connections, "
                f"{one['lean']['cpu'] / n * 1e3:.3f} ms CPU/call, {one['lean']['wall']:.2f} s; "
                f"raw {one['raw']['connections']}, {one['raw']['cpu'] / n * 1e3:.3f} ms, "
                f"{one['raw']['wall']:.2f} s"
            )
            if "llama" in one:
                ll = one["llama"]
                line += f"; llama_cpp.server {ll['connections']} connections, {ll['failed']} failed"
            print(line, flush=True)
    print(f"\n{got['this checkout'][0]['calls']:,} calls at concurrency 50 on the loopback server")
    print(f"(100 ms latency); medians over {args.rounds} rounds, checkouts alternated")
    print(f"{'checkout':<16}{'conns':>7}{'CPU ms/call':>13}{'raw conns':>11}{'raw CPU ms':>12}")
    for name, runs in got.items():
        n = runs[0]["calls"]

        def med(path: str, field: str, runs: list[dict[str, Any]] = runs, n: int = n) -> float:
            scale = 1e3 / n if field == "cpu" else 1.0
            return statistics.median(x[path][field] * scale for x in runs)

        print(
            f"{name:<16}{med('lean', 'connections'):>7.0f}{med('lean', 'cpu'):>13.3f}"
            f"{med('raw', 'connections'):>11.0f}{med('raw', 'cpu'):>12.3f}  ({paths[name]})"
        )
        if "llama" in runs[0]:
            conns = [x["llama"]["connections"] for x in runs]
            failed = sum(x["llama"]["failed"] for x in runs)
            calls = sum(x["llama"]["calls"] for x in runs)
            print(
                f"{'':<16}llama_cpp.server, 10 calls in a row: connections {conns}, "
                f"{failed} of {calls} calls failed"
            )


if __name__ == "__main__":
    main()
