"""Issue 12 benchmark: the local model in its worker process, each figure beside a baseline
measured in the same run.

1. tokens/s through labkit (`generate`, cache off, traced) vs the same worker's
   OpenAI-compatible server called directly (one HTTP request, no labkit, no litellm);
2. first local call (worker start + model load + generation) vs the next call;
3. the worker's resident memory;
4. tokens/s of this venv's (portable) llama.cpp vs a native build, both in-process in child
   interpreters on the same model and prompt, interleaved (`--native PYTHON`; default the
   lead's /work/main/.venv/bin/python when it exists).

Run: .venv/bin/python bench/bench_local.py [--native /path/to/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

PROMPT = "Write a short paragraph about the history of tea."
MAX_TOKENS = 96


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_worker(rounds: int, starts: int) -> None:
    from labkit.backends.local_worker import running_workers, stop_all
    from labkit.client import Client
    from labkit.models import Registry

    tmp = Path(tempfile.mkdtemp())
    client = Client(registry=Registry(), cache_dir=tmp / "c", traces=tmp / "t.db")

    def call(seed: int, max_tokens: int = MAX_TOKENS) -> tuple[float, int]:
        t = time.perf_counter()
        done = client.generate(
            PROMPT,
            model="local/smollm2-135m",
            max_tokens=max_tokens,
            temperature=0.2,
            seed=seed,
            cache="off",
        )
        return time.perf_counter() - t, done.usage.completion_tokens

    # 2. first call (worker start) vs next call.
    firsts, nexts, boots = [], [], []
    for i in range(starts):
        stop_all()
        firsts.append(call(10 + i, 8)[0])
        boots.append(running_workers()[0].started_s or float("nan"))
        nexts.append(call(20 + i, 8)[0])
    worker = running_workers()[0]
    assert worker.pid is not None

    # 1. tokens/s, labkit vs the same server directly, interleaved with alternating order.
    url = f"{worker.url}/v1/chat/completions"

    def direct(seed: int, stream: bool = True) -> float:
        """One request straight to the server. Streamed, as labkit asks (it needs the first
        token's time), so the ratio is labkit's own cost; unstreamed for reference."""
        body = {
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0.2,
            "repeat_penalty": 1.0,  # what labkit sends (llama-cpp-python's in-process default)
            "seed": seed,
            "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        }
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=300) as resp:
            raw = resp.read()
        seconds = time.perf_counter() - t
        if not stream:
            return json.loads(raw)["usage"]["completion_tokens"] / seconds
        usage = [
            json.loads(line[5:])["usage"]
            for line in raw.decode().splitlines()
            if line.startswith("data:") and '"usage"' in line and "[DONE]" not in line
        ]
        return usage[-1]["completion_tokens"] / seconds

    def via_labkit(seed: int) -> float:
        seconds, tokens = call(seed)
        return tokens / seconds

    direct(0)
    via_labkit(0)
    lab, dire, whole = [], [], []
    for i in range(rounds):
        if i % 2 == 0:
            dire.append(direct(100 + i))
            lab.append(via_labkit(100 + i))
        else:
            lab.append(via_labkit(100 + i))
            dire.append(direct(100 + i))
        whole.append(direct(100 + i, stream=False))
    ml, md, mw = statistics.median(lab), statistics.median(dire), statistics.median(whole)
    print(f"\n## Local model tokens/s (median of {rounds}, {MAX_TOKENS} max tokens, interleaved)")
    print("| path | tokens/s | ratio |\n|---|---:|---:|")
    print(f"| worker's server called directly, streamed (baseline) | {md:7.1f} | 1.00 |")
    print(f"| labkit generate (cache off, traced, lean transport) | {ml:7.1f} | {ml / md:.3f} |")
    print(f"| worker's server called directly, not streamed | {mw:7.1f} | {mw / md:.3f} |")
    print(f"goal: ratio >= 0.95 -> {'MET' if ml / md >= 0.95 else 'MISSED'}")

    print(f"\n## Worker start (median of {starts}, 8-token calls)")
    print("| call | seconds |\n|---|---:|")
    print(f"| first local call (starts the worker) | {statistics.median(firsts):.2f} |")
    print(f"| of which worker start to ready | {statistics.median(boots):.2f} |")
    print(f"| next call (worker running) | {statistics.median(nexts):.3f} |")
    print(f"\nworker RSS: {rss_mb(worker.pid):.0f} MB (caller: {rss_mb(os.getpid()):.0f} MB)")
    client.close()
    stop_all()


BUILD_RUN = r"""
import json, sys, time, llama_cpp
path, rounds, max_tokens, threads, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, verbose=False)
msgs = [{"role": "user", "content": prompt}]
llm.create_chat_completion(messages=msgs, max_tokens=8, seed=0)
rates = []
for i in range(rounds):
    t = time.perf_counter()
    out = llm.create_chat_completion(messages=msgs, max_tokens=max_tokens, temperature=0.2, seed=100 + i)
    rates.append(out["usage"]["completion_tokens"] / (time.perf_counter() - t))
print(json.dumps({"rates": rates, "info": llama_cpp.llama_print_system_info().decode()}))
"""


def bench_builds(native: str, rounds: int) -> None:
    from labkit.backends.local import gguf_path
    from labkit.backends.local_worker import has_amx

    path = str(gguf_path())
    threads = str(max(1, min(4, os.cpu_count() or 1)))
    pythons = {"portable (this venv)": sys.executable, "native": native}
    rates: dict[str, list[float]] = {k: [] for k in pythons}
    infos: dict[str, str] = {}
    for i in range(rounds):  # whole-process rounds, alternating order
        order = list(pythons) if i % 2 == 0 else list(reversed(pythons))
        for name in order:
            out = subprocess.run(
                [pythons[name], "-c", BUILD_RUN, path, "3", str(MAX_TOKENS), threads, PROMPT],
                capture_output=True,
                text=True,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            )
            if out.returncode != 0:
                print(f"{name}: failed ({out.returncode}): {out.stderr[-400:]}")
                return
            data = json.loads(out.stdout.strip().splitlines()[-1])
            rates[name] += data["rates"]
            infos[name] = data["info"]
    base = statistics.median(rates["native"])
    print(f"\n## llama.cpp builds, in-process tokens/s (median of {3 * rounds}, interleaved)")
    print("| build | tokens/s | ratio | AMX path |\n|---|---:|---:|---|")
    for name in pythons:
        m = statistics.median(rates[name])
        print(f"| {name} | {m:7.1f} | {m / base:.3f} | {'yes' if has_amx(infos[name]) else 'no'} |")
    for name, info in infos.items():
        print(f"{name}: {info.strip()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--native", default="/work/main/.venv/bin/python")
    args = ap.parse_args()
    bench_worker(args.rounds, args.starts)
    # Venv interpreters are symlinks to one base Python: compare the venv paths, not targets.
    if (
        Path(args.native).exists()
        and Path(args.native).absolute() != Path(sys.executable).absolute()
    ):
        bench_builds(args.native, max(2, args.rounds // 4))
    else:
        print(f"\n(no native build to compare: {args.native} not found)")
