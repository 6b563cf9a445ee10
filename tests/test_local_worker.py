"""The local model's worker process: crashes cost calls, never the caller; bad model files are
named before anything starts; the build has no AMX path; no worker outlives its owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from labkit.backends.local import LocalBackend
from labkit.backends.local_worker import has_amx, running_workers
from labkit.client import Client
from labkit.errors import LocalWorkerCrashed, LocalWorkerError, ModelFileError, RetryExhausted
from labkit.experiments import Experiment
from labkit.experiments.progress import ProgressState
from labkit.models import Registry

pytestmark = pytest.mark.local_model

ITEMS = [
    {"id": f"q{i}", "q": f"Name a fruit that starts with the letter {c}."}
    for i, c in enumerate("abcdefgh")
]


def _client(tmp_path: Path, backend: LocalBackend | None = None) -> Client:
    client = Client(registry=Registry(), cache_dir=tmp_path / "c", traces=tmp_path / "t.db")
    if backend is not None:
        client.add_backend("local", backend)
    return client


def _alive(pid: int) -> bool:
    """Running, and not a zombie (exited, not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, limit: float = 30.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_sigkill_mid_grid_costs_calls_not_the_process(local_client: Client) -> None:
    local_client.generate("Say hi.", model="local/smollm2-135m", max_tokens=4, cache="off")
    (worker,) = [w for w in running_workers() if w.n_ctx == 8192]
    first_pid = worker.pid
    assert first_pid is not None
    killed: list[int] = []

    def kill_once(state: ProgressState) -> None:
        # After the first row, the next request is in flight (concurrency 2): kill the worker.
        if state.done >= 1 and not killed:
            os.kill(first_pid, signal.SIGKILL)
            killed.append(first_pid)

    exp = Experiment(
        ITEMS,
        {"p": "{{q}}"},
        ["local/smollm2-135m"],
        params={"max_tokens": 48, "temperature": 0.7},
        client=local_client,
        concurrency=2,
    )
    exp.on_progress.append(kill_once)
    df = exp.run(progress=False, cache="off").df
    assert killed and _wait_gone(first_pid)
    assert len(df) == len(ITEMS)
    # Every row is an answer (retried on a fresh worker) or an error row naming the crash.
    errors = df[df["error"].notna()]
    assert all("LocalWorkerCrashed" in e or "worker" in e for e in errors["error"])
    assert (df[df["error"].isna()]["output"].str.len() > 0).all()
    traced = local_client.traces(kind="attempt", errors=True)
    crashed = traced[traced["error_type"] == "LocalWorkerCrashed"]
    assert len(crashed) >= 1
    assert "SIGKILL" in crashed.iloc[0]["error"]
    # The next call answers, from a new worker.
    done = local_client.generate("Name one colour.", model="local/smollm2-135m", max_tokens=8)
    assert done.text.strip()
    (again,) = [w for w in running_workers() if w.n_ctx == 8192]
    assert again.pid != first_pid


def test_a_crash_error_carries_the_signal_and_the_log(tmp_path: Path) -> None:
    client = _client(tmp_path, LocalBackend(n_ctx=512))
    client.generate("Say hi.", model="local/smollm2-135m", max_tokens=4, cache="off")
    (worker,) = [w for w in running_workers() if w.n_ctx == 512]
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGSEGV)
    assert worker.wait_exit(30)
    err = worker.crash_error(model="local/smollm2-135m")
    assert isinstance(err, LocalWorkerCrashed) and err.retryable
    assert err.signal == "SIGSEGV" and err.exit_code == -signal.SIGSEGV
    assert "SIGSEGV" in str(err) and "next local call starts a fresh worker" in str(err)
    assert any(line.startswith("system info:") for line in err.log_tail)
    assert client.generate("Say hi.", model="local/smollm2-135m", max_tokens=4, sample=1).text
    client.close()


def test_concurrency_4_grid_has_no_error_rows(local_client: Client) -> None:
    exp = Experiment(
        ITEMS[:6],
        {"p": "{{q}}"},
        ["local/smollm2-135m"],
        params={"max_tokens": 24},
        client=local_client,
        concurrency=4,
    )
    df = exp.run(progress=False, cache="off").df
    assert len(df) == 6 and df["error"].isna().all()
    assert (df["completion_tokens"] > 0).all()


def test_streamed_usage_matches_the_servers_own_count(local_client: Client) -> None:
    messages = [{"role": "user", "content": "Write one sentence about rivers."}]
    done = local_client.generate(
        messages=messages,
        model="local/smollm2-135m",
        max_tokens=20,
        seed=7,
        temperature=0,
        cache="off",
    )
    (worker,) = [w for w in running_workers() if w.n_ctx == 8192]
    body = {"messages": messages, "max_tokens": 20, "seed": 7, "temperature": 0, "stream": False}
    req = urllib.request.Request(
        f"{worker.url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        direct = json.loads(resp.read())
    assert direct["choices"][0]["message"]["content"] == done.text
    assert done.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert done.usage.completion_tokens == direct["usage"]["completion_tokens"]
    assert 0 < done.ttft_s <= done.latency_s


def test_installed_llama_cpp_has_no_amx_path() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CPU" in out  # a real system info line
    assert not has_amx(out), out
    assert has_amx("CPU : AVX2 = 1 | AMX_INT8 = 1 |")


@pytest.mark.parametrize("kind", ["missing", "directory", "garbage"])
def test_bad_model_path_is_named_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = tmp_path / "model.gguf"
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"\x00not a model at all" * 10)
    monkeypatch.setenv("LABKIT_LOCAL_MODEL_PATH", str(path))
    before = {w.pid for w in running_workers()}
    client = _client(tmp_path)
    with pytest.raises(ModelFileError) as info:
        client.generate("hi", model="local/smollm2-135m", max_tokens=4)
    assert str(path) in str(info.value) and "LABKIT_LOCAL_MODEL_PATH" in str(info.value)
    assert info.value.path == str(path)
    assert {w.pid for w in running_workers()} == before
    client.close()


def test_a_model_that_fails_to_load_gives_the_workers_log(tmp_path: Path) -> None:
    path = tmp_path / "truncated.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 64)  # magic right, body not
    client = _client(tmp_path, LocalBackend(model_path=path))
    with pytest.raises((LocalWorkerCrashed, RetryExhausted)) as info:
        client.generate("hi", model="local/smollm2-135m", max_tokens=4)
    err: Any = info.value
    err = err if isinstance(err, LocalWorkerError) else err.last_error
    assert isinstance(err, LocalWorkerCrashed) and not err.retryable
    assert err.exit_code not in (None, 0) and err.log_tail
    assert "while starting" in str(err)
    client.close()


def test_a_worker_that_does_not_come_up_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABKIT_LOCAL_START_TIMEOUT", "0.2")
    client = _client(tmp_path, LocalBackend(n_ctx=256))
    with pytest.raises(LocalWorkerError) as info:
        client.generate("hi", model="local/smollm2-135m", max_tokens=4)
    assert "did not come up within" in str(info.value)
    assert "LABKIT_LOCAL_START_TIMEOUT" in str(info.value)
    assert not [w for w in running_workers() if w.n_ctx == 256]
    client.close()


def test_no_worker_outlives_a_killed_owner(tmp_path: Path) -> None:
    script = f"""
import sys, time
from labkit.client import Client
from labkit.models import Registry
from labkit.backends.local_worker import running_workers
c = Client(registry=Registry(), cache_dir={str(tmp_path / "c")!r}, traces={str(tmp_path / "t.db")!r})
c.generate("Say yes.", model="local/smollm2-135m", max_tokens=4)
print(running_workers()[0].pid, flush=True)
time.sleep(600)
"""
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        worker_pid = int(owner.stdout.readline())
        assert _alive(worker_pid)
    finally:
        owner.kill()
        owner.wait()
    assert _wait_gone(worker_pid)


def test_import_and_cache_hits_start_no_worker(tmp_path: Path) -> None:
    script = f"""
import os, sys, labkit
from labkit.client import Client
from labkit.models import Registry
def children():
    tasks = os.listdir(f"/proc/{{os.getpid()}}/task")
    return sum(len(open(f"/proc/{{os.getpid()}}/task/{{t}}/children").read().split()) for t in tasks)
print(children())
c = Client(registry=Registry(), cache_dir={str(tmp_path / "c")!r}, traces={str(tmp_path / "t.db")!r})
done = c.generate("Say yes.", model="local/smollm2-135m", max_tokens=4)
print(done.cache_hit, children(), 'llama_cpp' in sys.modules)
"""
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["0", "False", "1", "False"]
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert second.stdout.split() == ["0", "True", "0", "False"]
