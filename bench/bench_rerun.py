"""Cached re-runs of one grid: this checkout beside another (an earlier commit), alternated.

Each round starts one process per checkout. The process runs bench_grid's 2,000-call grid
against the loopback server at 100 ms latency (fresh cache), then re-runs the same
`Experiment` from the cache `--reruns` times back to back, and prints the median wall time
and CPU (all threads) per cached call. The order of the two checkouts alternates by round, so
load drift hits both alike.

Run: ``.venv/bin/python bench/bench_rerun.py --baseline /tmp/labkit-before [--rounds 3]``
where the baseline is, e.g., ``git worktree add /tmp/labkit-before <commit>``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench_grid import ROOT, child_json

SCENARIO = """
import json, os, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1] + "/bench")
import bench_grid as b

os.environ.setdefault(b.KEY_ENV, "sk-bench-not-a-real-key")
server, url = b.start_server(0.1)
client = b.make_client(url, Path(tempfile.mkdtemp()) / "c")
exp = b.experiment(client, b.dataset(500), 50, b.MODELS)
exp.run(progress=False)
walls, cpus = [], []
for _ in range(int(sys.argv[2])):
    w, c = time.perf_counter(), time.process_time()
    exp.run(progress=False)
    walls.append(time.perf_counter() - w)
    cpus.append((time.process_time() - c) / exp.total * 1000)
assert exp.results.df["cache_hit"].all(), "the re-run was not served from the cache"
import labkit
print(json.dumps({"labkit": labkit.__file__, "wall": walls, "cpu_ms": cpus}))
client.close()
server.stdin.close()
"""


def run(root: Path, reruns: int) -> dict[str, Any]:
    got: dict[str, Any] = child_json(SCENARIO, str(root), str(reruns))
    assert Path(got["labkit"]).resolve().is_relative_to(root.resolve()), got["labkit"]
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="another labkit checkout (a worktree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reruns", type=int, default=5)
    args = ap.parse_args()
    if not args.baseline:  # `make bench` runs every script bare
        print("skipped: pass --baseline PATH, another checkout to compare with (e.g. made by")
        print("`git worktree add /tmp/labkit-before <commit>`)")
        return
    paths = {"this checkout": ROOT, "baseline": Path(args.baseline)}
    medians: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for r in range(args.rounds):
        for name in list(paths) if r % 2 == 0 else list(paths)[::-1]:
            got = run(paths[name], args.reruns)
            wall, cpu = statistics.median(got["wall"]), statistics.median(got["cpu_ms"])
            medians[name].append((wall, cpu))
            runs = ", ".join(f"{w:.2f}" for w in got["wall"])
            print(f"round {r + 1}, {name}: median {wall:.3f} s, {cpu:.3f} ms CPU/call ({runs})")
    print(
        f"\n2,000-call grid re-run from the cache, {args.reruns} times back to back after a fresh"
    )
    print(f"run; median over rounds of each round's median ({args.rounds} rounds, alternated)")
    for name, values in medians.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{name:<16}{wall:>8.3f} s{cpu:>9.3f} ms CPU per cached call  ({paths[name]})")
    this = statistics.median(w for w, _ in medians["this checkout"])
    base = statistics.median(w for w, _ in medians["baseline"])
    print(f"ratio this / baseline: {this / base:.2f}")


if __name__ == "__main__":
    main()
