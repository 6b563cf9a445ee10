"""Issue 2 benchmark: the call path's own overhead, each figure beside a baseline from this run.

1. cache-hit `generate()` (trace row included) vs a raw `diskcache` get and vs
   `litellm.completion(mock_response=...)` (the floor of any uncached litellm path);
2. `import labkit` time vs a bare interpreter start.
(Local model tokens/s moved to bench_local.py: the model now runs in a worker process.)

Run: .venv/bin/python bench/bench_callpath.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def median_us(fn: Callable[[], object], n: int, warmup: int = 50) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def bench_cache_hit(n: int = 3000) -> None:
    import diskcache

    from labkit.client import Client
    from labkit.models import Registry
    from labkit.testing import FakeBackend

    tmp = Path(tempfile.mkdtemp())
    client = Client(registry=Registry(), cache_dir=tmp / "c", traces=tmp / "t.db")
    client.add_backend("fake", FakeBackend("a cached answer"))
    client.generate("What is a cache?", model="fake/x")
    hit = median_us(lambda: client.generate("What is a cache?", model="fake/x"), n)
    assert client.generate("What is a cache?", model="fake/x").cache_hit

    raw = diskcache.Cache(str(tmp / "raw"))
    raw.set("k", '{"text": "a cached answer"}')
    raw_get = median_us(lambda: raw.get("k"), n)

    from labkit.backends.litellm_backend import import_litellm

    litellm = import_litellm()
    messages = [{"role": "user", "content": "What is a cache?"}]
    mock = median_us(
        lambda: litellm.completion(
            model="openai/gpt-4o-mini-2024-07-18",
            messages=messages,
            mock_response="a cached answer",
        ),
        300,
        warmup=20,
    )
    print("\n## Cache hit (median of", n, "calls)")
    print("| path | median µs | vs labkit hit |\n|---|---:|---:|")
    print(f"| labkit generate() cache hit + trace row | {hit:8.1f} | 1.00x |")
    print(f"| raw diskcache get | {raw_get:8.1f} | {raw_get / hit:.2f}x |")
    print(f"| litellm.completion(mock_response=...) | {mock:8.1f} | {mock / hit:.1f}x |")
    print(
        f"goal: <= 100 µs -> {'MET' if hit <= 100 else 'MISSED'}; "
        f">= 10x faster than litellm mock -> {'MET' if mock / hit >= 10 else 'MISSED'} ({mock / hit:.1f}x)"
    )
    client.close()


def bench_import(runs: int = 9) -> None:
    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    base = statistics.median(run("pass") for _ in range(runs))
    lab = statistics.median(run("import labkit") for _ in range(runs))
    inner = statistics.median(
        float(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import time; t=time.perf_counter(); import labkit; print(time.perf_counter()-t)",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(runs)
    )
    print(f"\n## import labkit (median of {runs} fresh interpreters)")
    print("| measure | ms |\n|---|---:|")
    print(f"| bare interpreter start | {base * 1e3:6.1f} |")
    print(f"| interpreter + import labkit | {lab * 1e3:6.1f} |")
    print(f"| import labkit alone (in-process timer) | {inner * 1e3:6.1f} |")
    print(f"goal: < 300 ms -> {'MET' if inner < 0.3 else 'MISSED'}")
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, labkit; print(sorted(m for m in ('litellm','llama_cpp','pandas','plotly','ipywidgets') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"heavy modules loaded by `import labkit`: {heavy}")


if __name__ == "__main__":
    which = set(sys.argv[1:]) or {"hit", "import"}
    if "import" in which:
        bench_import()
    if "hit" in which:
        bench_cache_hit()
