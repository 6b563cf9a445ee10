"""The local model's worker process: llama-cpp-python's OpenAI-compatible server on loopback.

Why a process: native code that crashes (llama.cpp's AMX path on recent Xeons, an out-of-memory
kill, a corrupt model file) takes down only the worker; the caller (a Jupyter kernel, pytest)
gets a `LocalWorkerCrashed` for the calls in flight and the next call starts a fresh worker.

Lifecycle (parent side, `LocalWorker`):
- one worker per process per (model file, n_ctx), started on the first local call, never at
  import or on a cache hit; two kernels each start their own, so no worker is shared and none
  has to outlive an owner;
- the child binds 127.0.0.1 port 0 itself and reports the port it got, so ports never collide
  and there is no pick-then-bind race;
- it dies with its owner: `atexit` stops it, and on Linux the child asks the kernel for SIGKILL
  when its parent dies (PR_SET_PDEATHSIG, which covers a SIGKILLed owner); everywhere it also
  exits when its stdin pipe (held by the owner only) closes;
- its own session (`start_new_session`), so a Ctrl-C or a Jupyter interrupt of the owner does
  not kill it;
- `interrupt_requests` is off (the server's default aborts a running stream when another request
  arrives), and the backend sends one request at a time per worker.

Child side (`python -m labkit.backends.local_worker --serve ...`): loads the model, adds two
routes for the caller's tokenizer (a vocab-only model, so tokenizing never waits for a running
generation), appends an OpenAI `usage` chunk to streamed chat completions (the server streams
none, and counts estimated by the caller would be wrong), then serves.

`make setup`'s check of this machinery is `python -m labkit.selfcheck` (it drives the whole
call path, so it lives above the client, not here).
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._child import die_with_parent, popen_owned, signal_name
from ..errors import LocalWorkerCrashed, LocalWorkerStartTimeout, ModelFileError

__all__ = ["LocalWorker", "check_model_file", "get_worker", "stop_all"]

READY = "LABKIT_WORKER_READY"
SYSTEM_INFO = "system info:"
START_TIMEOUT_S = 120.0
LOG_LINES = 60
GGUF_MAGIC = b"GGUF"


def check_model_file(path: Path) -> Path:
    """Fail before spawning anything when the model file cannot be a GGUF model."""
    if not path.exists():
        raise ModelFileError(str(path), "does not exist")
    if not path.is_file():
        raise ModelFileError(str(path), "is not a file (a directory?)")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelFileError(str(path), f"cannot be read ({exc.strerror})") from exc
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            str(path), f"is not a GGUF model (starts with {magic!r}, expected {GGUF_MAGIC!r})"
        )
    return path


class LocalWorker:
    """One worker process and the thread that spawned it and reads its output."""

    def __init__(self, model_path: Path, n_ctx: int, threads: int) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.threads = threads
        self.port: int | None = None
        self.log: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.system_info = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_s: float | None = None
        self._ready = threading.Event()
        self._exited = threading.Event()
        self._spawn_error: BaseException | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self._ready.is_set() and not self._exited.is_set()

    def start(self, timeout: float | None = None) -> None:
        """Spawn and wait until the model is loaded and the port is listening."""
        limit = timeout or float(os.environ.get("LABKIT_LOCAL_START_TIMEOUT", START_TIMEOUT_S))
        t0 = time.perf_counter()
        # The spawning thread lives as long as the worker: PR_SET_PDEATHSIG fires when the
        # thread that forked the child ends, not only the process.
        threading.Thread(target=self._run, name="labkit-local-worker", daemon=True).start()
        deadline = time.monotonic() + limit
        while not self._ready.wait(0.05):
            if self._exited.is_set():
                raise self.crash_error(at_start=True)
            if time.monotonic() > deadline:
                self.stop()
                raise LocalWorkerStartTimeout(
                    f"the local model worker did not come up within {limit:.0f}s. Set "
                    "LABKIT_LOCAL_START_TIMEOUT to wait longer on a slow or busy machine.",
                    model=str(self.model_path.name),
                    log_tail=list(self.log),
                    retryable=False,
                )
        self.started_s = time.perf_counter() - t0

    def _run(self) -> None:
        args = ["--serve", "--model", str(self.model_path), "--n-ctx", str(self.n_ctx)]
        args += ["--threads", str(self.threads)]
        try:
            self.proc = popen_owned(
                "labkit.backends.local_worker",
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self._spawn_error = exc
            self.log.append(f"could not start {sys.executable}: {exc}")
            self._exited.set()
            return
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith(READY) and not self._ready.is_set():
                self.port = int(line.split()[1])
                self._ready.set()
                continue
            if line.startswith(SYSTEM_INFO):
                self.system_info = line
            if line:
                self.log.append(line)
        self.proc.wait()
        self._exited.set()

    def wait_exit(self, timeout: float) -> bool:
        """True when the worker has exited (or does within `timeout` seconds)."""
        return self._exited.wait(timeout)

    def crash_error(self, *, model: str = "", at_start: bool = False) -> LocalWorkerCrashed:
        code = self.proc.returncode if self.proc is not None else None
        sig = signal_name(code)
        how = f"was killed by {sig}" if sig else f"exited with status {code}"
        when = "while starting" if at_start else "during the call"
        cause = _cause(sig, has_amx(self.system_info))
        return LocalWorkerCrashed(
            f"the local model worker (pid {self.pid}) {how} {when}. {cause} Your process is "
            "unaffected; the next local call starts a fresh worker.",
            model=model or self.model_path.name,
            exit_code=code,
            signal=sig,
            log_tail=list(self.log),
            # A crash at start repeats on retry; one in flight (OOM, a kill) usually does not.
            retryable=not at_start,
        )

    def stop(self, grace: float = 3.0) -> None:
        self._stopping = True
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(grace)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


def has_amx(system_info: str) -> bool:
    """Whether llama.cpp's system info line reports an AMX code path compiled in."""
    return any(f"{flag} = 1" in system_info for flag in ("AMX_INT8", "AMX_TILE", "AMX_BF16", "AMX"))


def _cause(sig: str | None, amx: bool) -> str:
    if sig == "SIGSEGV" and amx:
        return (
            "The crash is in llama.cpp's AMX code, which a native build compiles on recent Intel "
            "Xeons: reinstall the portable build (`make clean-wheels setup`, see the README)."
        )
    if sig == "SIGILL":
        return (
            "This CPU lacks an instruction the llama.cpp build uses: rebuild for it with "
            "`LLAMA_CMAKE_ARGS=-DGGML_NATIVE=ON make clean-wheels setup`."
        )
    if sig == "SIGKILL":
        return "It was killed (often the out-of-memory killer; check free memory)."
    if sig == "SIGSEGV":
        return (
            "A native crash in llama.cpp: a native build with AMX on a recent Xeon (reinstall "
            "the portable build: `make clean-wheels setup`) or a damaged model file."
        )
    return "See the worker's log lines below."


# ---------------------------------------------------------------- process-wide registry
_WORKERS: dict[tuple[str, int], LocalWorker] = {}
_WORKERS_LOCK = threading.Lock()


def get_worker(model_path: Path, n_ctx: int) -> LocalWorker:
    """The running worker for this model, started (or restarted after a crash) if needed.
    Blocking: call it from a worker thread, not an event loop."""
    key = (str(model_path), n_ctx)
    with _WORKERS_LOCK:
        worker = _WORKERS.get(key)
        if worker is not None and worker.alive():
            return worker
        check_model_file(model_path)
        threads = max(1, min(4, os.cpu_count() or 1))
        worker = LocalWorker(model_path, n_ctx, threads)
        worker.start()
        _WORKERS[key] = worker
        return worker


def running_workers() -> list[LocalWorker]:
    with _WORKERS_LOCK:
        return [w for w in _WORKERS.values() if w.alive()]


def stop_all() -> None:
    """Stop every worker this process started (also run at exit)."""
    with _WORKERS_LOCK:
        workers = list(_WORKERS.values())
        _WORKERS.clear()
    for w in workers:
        w.stop()


atexit.register(stop_all)


# ------------------------------------------------------------------------ child side
def _add_usage_to_streams(llama_cls: Any) -> None:
    """Streamed chat completions end with an OpenAI `usage` chunk (exact llama.cpp counts).

    `Llama.generate` sees the prompt tokens and yields each sampled token; the completion counts
    the ones before an end-of-generation token, as llama-cpp-python's own usage does.
    """
    import llama_cpp

    generate = llama_cls.generate
    chat = llama_cls.create_chat_completion

    def counting_generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        counts = self._labkit_usage = [len(tokens), 0]
        for token in generate(self, tokens, *args, **kwargs):
            if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                counts[1] += 1
            yield token

    def chat_with_usage(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = chat(self, *args, **kwargs)
        if not kwargs.get("stream"):
            return out

        def chunks() -> Any:
            last = None
            for chunk in out:
                last = chunk
                yield chunk
            prompt, completion = getattr(self, "_labkit_usage", (0, 0))
            if last is not None:
                yield {
                    "id": last["id"],
                    "object": "chat.completion.chunk",
                    "created": last["created"],
                    "model": last["model"],
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    },
                }

        return chunks()

    llama_cls.generate = counting_generate
    llama_cls.create_chat_completion = chat_with_usage


def _scrub_settings_env(*models: Any) -> None:
    """pydantic-settings would read fields such as API_KEY, MODEL or CACHE from the owner's
    environment; the worker's settings come only from its arguments."""
    os.environ.pop("CONFIG_FILE", None)
    names = {n.lower() for m in models for n in m.model_fields}
    for key in list(os.environ):
        if key.lower() in names:
            del os.environ[key]


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    special: bool = False


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[int]


def serve(model: str, n_ctx: int, threads: int, parent: int) -> None:
    die_with_parent(parent)
    import socket

    import llama_cpp
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    print(SYSTEM_INFO, llama_cpp.llama_print_system_info().decode(), flush=True)
    _scrub_settings_env(ModelSettings, ServerSettings)
    _add_usage_to_streams(llama_cpp.Llama)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    app = create_app(
        server_settings=ServerSettings(host="127.0.0.1", port=0, interrupt_requests=False),
        model_settings=[
            ModelSettings(
                model=model,
                model_alias="local",
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,
                use_mlock=False,
                verbose=False,
            )
        ],
    )
    vocab = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    vocab_lock = threading.Lock()

    @app.post("/labkit/tokenize")
    def tokenize(body: TokenizeBody) -> dict[str, Any]:
        with vocab_lock:
            ids = vocab.tokenize(body.text.encode(), add_bos=False, special=body.special)
        return {"tokens": list(ids)}

    @app.post("/labkit/detokenize")
    def detokenize(body: DetokenizeBody) -> dict[str, Any]:
        with vocab_lock:
            text = bytes(vocab.detokenize(body.tokens)).decode("utf-8", errors="ignore")
        return {"text": text}

    print(f"{READY} {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.backends.local_worker")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parent", type=int, default=0)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.model, args.n_ctx, args.threads, args.parent or os.getppid())
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
