"""The one call path. Every generation — a notebook cell, a grid run, a judge, production code —
goes through `Client.agenerate`, in this order:

    build messages -> resolve alias (profile, A/B) -> cache lookup -> [policy: fallback chain x
    retries x breaker x rate limits -> fit context -> backend -> parse -> trace the attempt]
    -> cache store

A cache hit is answered in the caller's thread without touching the event loop, litellm or the
model, and still leaves a trace row. Misses run on the client's own event-loop thread, so
`generate()` works the same in a script and inside Jupyter's already-running loop, and the
policy's async primitives always live on one loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._loop import LoopThread
from ._parse_cache import parse_print, parse_record, stored_parse
from ._prepared import Prepared
from ._slots import GROUP_WINDOW, current_slots
from .cache import cache_key, encode_entry, key_for
from .cache_stores import CacheConfig, CacheStore, cache_store
from .context import check_fit, count_tokens, estimate_tokens, require_fit, token_upper_bound
from .errors import ConfigError, InputError, scrub_chain
from .models import Registry
from .otel import OtelConfig, otel_sink
from .prompts import build_messages
from .redact import Redactor, add_secret, map_strings, scrub_secrets
from .resilience import Policy
from .structured import SchemaLike, json_instructions, parse, response_format
from .trace_rows import trace_row
from .tracing import TraceStore, new_id
from .types import (
    OUTPUT_PARAMS,
    Completion,
    Event,
    Message,
    Request,
    check_params,
    mend_text,
    trusted,
)

if TYPE_CHECKING:
    import pandas as pd

    from .backends.base import Backend

__all__ = ["CacheMode", "Client", "configure", "default_client"]

CacheMode = Literal["use", "refresh", "off"]
_WAIT_SLICE = 0.1  # seconds: how soon a Ctrl-C is taken while a sync call waits on the loop
TRANSPORT_PARAMS = frozenset(
    {"timeout", "api_base", "base_url", "api_key", "extra_headers", "api_version"}
)


class _Unset:
    """The default of an argument whose absence defers to labkit.yaml (None means "off")."""

    def __repr__(self) -> str:
        return "<from labkit.yaml, else the default>"


_UNSET: Any = _Unset()


class Client:
    """Holds the registry, cache, trace store, policy and backends of one project."""

    def __init__(
        self,
        *,
        registry: Registry | str | Path | None = None,
        cache_dir: str | Path | None = _UNSET,
        traces: str | Path = ".labkit/traces.db",
        redact: Redactor | None = None,
        profile: str | None = None,
        policy: Policy | None = None,
        backends: Mapping[str, Backend] | None = None,
        cache: str | Path | CacheConfig | CacheStore | Mapping[str, Any] | None = _UNSET,
        cache_ttl: float | None = None,
        otel: bool | str | OtelConfig | Mapping[str, Any] | None = _UNSET,
    ) -> None:
        """`cache`: a folder (diskcache), "redis://host:port/db" (shared), a `CacheConfig`, a
        store, or None for no cache; unset, `cache_dir`, then labkit.yaml's `cache:`, then
        ".labkit/cache". `cache_ttl`: seconds an entry lives. `otel`: OTLP/HTTP span export
        beside the SQLite traces (True, an endpoint URL or an `OtelConfig`; False: off); unset,
        labkit.yaml's `otel:`, then the OTEL_EXPORTER_OTLP_ENDPOINT variable."""
        self._registry = registry if isinstance(registry, Registry) else None
        self._registry_path = None if isinstance(registry, Registry) else registry
        self.profile = profile
        team = self.registry.team if cache is _UNSET or otel is _UNSET else {}
        where = self._registry_path or "labkit.yaml"
        if cache is _UNSET:
            default = team.get("cache", ".labkit/cache") or None  # `cache: false` is off
            cache = default if cache_dir is _UNSET else cache_dir
        self.cache = cache_store(cache, ttl=cache_ttl, where=f"{where}: cache")
        self.tracer = TraceStore(traces, redact)
        sink = otel_sink(
            team.get("otel") if otel is _UNSET else otel,
            f"{where}: otel",
            otel is _UNSET,
            log_dir=self.tracer.path.parent,
        )
        if sink is not None:
            self.tracer.sinks.append(sink)
        self._policy = policy
        self._backends: dict[str, Backend] = dict(backends or {})
        self._runner: LoopThread | None = None
        self._lock = threading.Lock()
        self._schema_memo: dict[
            tuple[int, bool], tuple[Any, dict[str, Any] | None, str, str | None]
        ] = {}
        self._cache_queue: list[tuple[str, str, asyncio.Future[None]]] = []

    # ------------------------------------------------------------------ parts
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.load(self._registry_path, profile=self.profile)
        return self._registry

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            self._policy = Policy(self.registry.policy)
        return self._policy

    def add_backend(self, prefix: str, backend: Backend) -> None:
        """Route model ids starting with `prefix/` to `backend` (e.g. a `labkit.testing.FakeBackend`)."""
        self._backends[prefix] = backend

    def backend_for(self, model: str) -> Backend:
        prefix = model.split("/", 1)[0]
        if prefix in self._backends:
            return self._backends[prefix]
        kind = self.registry.info(model).backend
        if kind not in self._backends:
            if kind == "local":
                from .backends.local import LocalBackend

                self._backends["local"] = LocalBackend()
            elif kind == "litellm":
                from .backends.litellm_backend import LiteLLMBackend

                self._backends["litellm"] = LiteLLMBackend()
            elif kind == "openai_compat":
                from .backends.openai_compat import OpenAICompatBackend

                self._backends[kind] = OpenAICompatBackend(self.registry.capabilities)
            else:
                raise ConfigError(
                    f"no backend registered for {model!r}; call client.add_backend({kind!r}, "
                    "labkit.testing.FakeBackend(...)) first"
                )
        return self._backends[kind]

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        """Start a coroutine on the client's loop without waiting (e.g. a grid run behind a
        notebook button, so the kernel stays responsive); returns a concurrent Future."""
        return self._loop_runner().submit(coro)

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the client's loop and wait for it, from sync code or Jupyter."""
        return self._run_sync(coro)

    def _loop_runner(self) -> LoopThread:
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    self._runner = LoopThread()
        return self._runner

    def _run_sync(self, coro: Any) -> Any:
        self._runner = self._loop_runner()
        if threading.current_thread() is self._runner.thread:
            coro.close()
            raise RuntimeError(
                "labkit: call `await client.agenerate(...)` inside labkit's own loop"
            )
        fut = self._runner.submit(coro)
        try:
            # Waited on in slices: the kernel may deliver Ctrl-C's SIGINT to any thread, and a
            # main thread blocked in one long wait would only run Python's handler (and so
            # stop the grid) once the whole grid had finished.
            while True:
                try:
                    return fut.result(timeout=_WAIT_SLICE)
                except concurrent.futures.TimeoutError:
                    if fut.done():  # the call's own TimeoutError (or it finished just now)
                        return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise

    async def _run_async(self, coro: Any) -> Any:
        self._runner = self._loop_runner()
        try:
            if asyncio.get_running_loop() is self._runner.loop:
                return await coro
        except RuntimeError:
            pass
        return await asyncio.wrap_future(self._runner.submit(coro))

    # -------------------------------------------------------------- the path
    def prepare(
        self,
        prompt: str | None = None,
        *,
        model: str | None = None,
        messages: list[Message] | None = None,
        template: str | None = None,
        variables: Mapping[str, Any] | None = None,
        system: str | None = None,
        schema: SchemaLike | None = None,
        confidence: bool = True,
        sample: int = 0,
        profile: str | None = None,
        ab_key: str | None = None,
        run_id: str | None = None,
        item_id: str | None = None,
        parent_id: str | None = None,
        fallbacks: Sequence[str] | None = None,
        **params: Any,
    ) -> Prepared:
        """Validate the arguments and work out the request; no I/O, nothing sent.
        `fallbacks` replaces the registry's fallback chain (a deployed config pins its own;
        the gate measures a model alone with `fallbacks=[]`)."""
        unknown = set(params) - OUTPUT_PARAMS - TRANSPORT_PARAMS
        if unknown:
            raise InputError(
                f"unknown generation parameter(s) {sorted(unknown)}; supported: "
                f"{sorted(OUTPUT_PARAMS | TRANSPORT_PARAMS)}"
            )
        if not isinstance(sample, int) or sample < 0:
            raise InputError(
                f"sample must be a non-negative int (the repeat index), got {sample!r}"
            )
        msgs = build_messages(
            prompt, messages=messages, template=template, variables=variables, system=system
        )
        reg = self.registry
        if ab_key is None:  # the A/B arm follows the item, else the conversation
            ab_key = item_id or (str(msgs) if model in reg.aliases else "")
        res = reg.resolve(model, profile=profile or self.profile, ab_key=ab_key)
        if fallbacks is not None:
            chain = list(dict.fromkeys([res.model, *fallbacks]))
            res = res.model_copy(update={"chain": chain})
        json_schema = fingerprint = None
        if schema is not None:
            json_schema, instructions, fingerprint = self._schema_parts(schema, confidence)
            msgs = _append_instructions(msgs, instructions)
        out_params = {k: v for k, v in params.items() if k in OUTPUT_PARAMS}
        merged = {**res.info.params, **out_params}
        check_params(merged)
        add_secret(params.get("api_key"))
        key = key_for(
            res.model,
            msgs,
            merged,
            json_schema,
            bool(json_schema is not None and res.info.json_mode),
            sample,
        )
        return Prepared(
            call_id=new_id(),
            messages=msgs,
            params=out_params,
            transport={k: v for k, v in params.items() if k in TRANSPORT_PARAMS},
            schema=schema,
            json_schema=json_schema,
            resolution=res,
            sample=sample,
            key=key,
            meta={"run_id": run_id, "item_id": item_id, "parent_id": parent_id},
            parse_print=fingerprint,
        )

    def _schema_parts(
        self, schema: Any, confidence: bool
    ) -> tuple[dict[str, Any] | None, str, str | None]:
        """(JSON Schema, prompt instructions, parse fingerprint) of `schema`, memoised: a grid
        asks for the same schema thousands of times, and deriving them was a third of a cache
        hit's CPU. A dict schema is compared by value (it may have been edited in place),
        anything else by identity."""
        memo = self._schema_memo.get((id(schema), confidence))
        if memo is not None and (memo[0] is schema or memo[0] == schema):
            return memo[1], memo[2], memo[3]
        parts = (
            response_format(schema, confidence=confidence).get("schema"),
            json_instructions(schema, confidence=confidence),
            parse_print(schema),
        )
        if len(self._schema_memo) > 256:
            self._schema_memo.clear()
        try:
            kept = copy.deepcopy(schema) if isinstance(schema, dict) else schema
        except Exception:  # an uncopyable value inside: just not memoised
            return parts
        self._schema_memo[(id(schema), confidence)] = (kept, *parts)
        return parts

    def lookup(self, p: Prepared) -> Completion | None:
        """The cache-hit path: stored completion, flagged, parsed and traced; None on a miss."""
        if self.cache is None:
            return None
        if p.found is not None:  # fetched ahead, in bulk
            (hit,) = p.found
            p.found = None  # used once: a later lookup of the same call reads anew
        else:
            hit = self.cache.get(p.key)
        if hit is None:
            return None
        parsed = repairs = None
        if p.schema is not None:  # the entry's `parsed` is its stored parse record
            parsed = stored_parse(hit.parsed, p.parse_print) or _parse(hit.text, p.schema)
            repairs = parsed.repair_steps
        # Plain attribute writes: the values are known-good (a Parsed, which `parsed: Any`
        # takes as it is), and pydantic's validating __setattr__ would cost a tenth of the hit
        # path.
        hit.__dict__.update(
            cache_hit=True,
            trace_id=p.call_id,
            alias=p.resolution.alias,
            cache_key=p.key,
            parsed=parsed,
        )
        row = trace_row(
            "cache_hit",
            "hit",
            completion=hit,
            call_id=p.call_id,
            **p.meta,
            alias=p.resolution.alias,
            attempt=0,
            prompt=p.messages,
            params=p.params,
            cache_key=p.key,
            parse_ok=hit.parsed.ok if hit.parsed else None,
            repairs=repairs,
            meta=_confidences(hit),
        )
        self.tracer.record(**row)
        origin = hit.origin
        if (
            origin
            and p.meta["run_id"]
            and origin.get("run_id") == p.meta["run_id"]
            and not self.tracer.knows(origin.get("id") or "")
        ):
            # A resumed grid: the attempt that produced this answer may have died queued
            # (SIGKILL within the batch window); write it unless it is already there.
            req = Request(model=hit.model, messages=p.messages, params=p.params)
            self._trace_attempt(
                p, hit.model, origin.get("attempt", 1), req, hit, None, 0, None, None
            )
        return hit

    def prefetch(self, prepared: list[Prepared]) -> int:
        """Fetch the cache entries (stored parse results included) of many prepared calls in one
        SQLite round trip; each call's `lookup` then uses what was fetched instead of its own
        query. Nothing is flagged, parsed or traced here: that stays in `lookup`, when the call
        runs. Returns the number of entries found."""
        if self.cache is None or not prepared:
            return 0
        keys = [p.key for p in prepared]
        try:
            texts = self.cache.get_texts(keys)
        except Exception:  # the store would not open: each lookup finds out on its own
            return 0
        hits = 0
        for p in prepared:
            text = texts.get(p.key)
            hit = self._decode(p, text) if text is not None else None
            p.found = (hit,)
            hits += hit is not None
        return hits

    def _decode(self, p: Prepared, text: str) -> Completion | None:
        """The cache entry `text` of `p`, decoded. A grid run again (re-run from the cache, or
        resumed) reads the entries it read last time: when the store still holds the very text
        this call read then, the answer is a copy of what it decoded to (the same text decodes
        to the same answer; the copy keeps each run's per-call fields apart). A changed or
        rewritten entry differs in its text and is decoded anew. Decoding was the largest part
        of a cached hit."""
        assert self.cache is not None  # only `prefetch` calls it, with a cache
        seen = p.decoded[0]
        if seen is not None and seen[0] == text:
            return seen[1].model_copy()
        hit = self.cache.decode(p.key, text)
        if hit is not None:
            p.decoded[0] = (text, hit.model_copy())
        return hit

    async def agenerate_prepared(self, p: Prepared, cache: CacheMode = "use") -> Completion:
        """`agenerate` for a call already prepared (a grid prepares cells in bulk)."""
        _check_cache_mode(cache)
        if cache == "use" and (hit := self.lookup(p)) is not None:
            return hit
        result: Completion = await self._run_async(self.execute(p, cache))
        return result

    async def execute(self, p: Prepared, cache: CacheMode = "use") -> Completion:
        """The miss path: policy around backend attempts; stores the answer in the cache."""
        res = p.resolution

        def emit(event: Event) -> None:
            self.tracer.record(
                **trace_row(
                    "event",
                    "event",
                    call_id=p.call_id,
                    **p.meta,
                    alias=res.alias,
                    model=event.model,
                    event=event.kind.value,
                    meta=event.detail,
                    breaker_state=event.detail.get("to") if event.kind.value == "breaker" else None,
                )
            )

        async def attempt(model: str, n: int) -> Completion:
            info = self.registry.info(model)
            params = {**info.params, **p.params}
            transport = dict(p.transport)
            if info.api_base and "api_base" not in transport:
                transport["api_base"] = info.api_base
            if info.api_key_env and "api_key" not in transport:
                import os

                transport["api_key"] = os.environ.get(info.api_key_env)
                add_secret(transport["api_key"])
            # From values prepare() checked, not validated again; copied one level deep as
            # validation did, so a backend that edits its request cannot change the call.
            req = trusted(
                Request,
                {
                    "model": model,
                    "messages": [dict(m) for m in p.messages],
                    "params": params,
                    "json_schema": None if p.json_schema is None else dict(p.json_schema),
                    "json_mode": bool(p.json_schema is not None and info.json_mode),
                    "sample": p.sample,
                    "transport": transport,
                },
            )
            backend = self.backend_for(model)
            started = time.perf_counter()
            ctx_tokens = ctx_limit = None
            try:
                ctx_tokens, ctx_limit = self._fit(backend, req, emit)
                slots = current_slots()  # a grid's cap on requests in flight
                if slots is None:
                    done = await backend.generate(req)
                else:
                    async with slots.gate:
                        done = await backend.generate(req)
            except Exception as exc:  # provider errors, overflow, and a backend bug alike
                self._trace_attempt(
                    p,
                    model,
                    n,
                    req,
                    None,
                    exc,
                    time.perf_counter() - started,
                    ctx_tokens,
                    ctx_limit,
                )
                raise
            escaped = _clean_reply(done)
            # The first model of the chain is the one prepare() keyed (same id, same registry
            # params): reuse its key instead of hashing the request again. Known-good values
            # are written to the fields directly here and below, past pydantic's __setattr__.
            done.__dict__["cache_key"] = p.key if model == res.model else cache_key(req)
            if p.schema is not None:
                done.__dict__["parsed"] = _parse(done.text, p.schema)
            if ctx_tokens is None and ctx_limit is not None:
                ctx_tokens = done.usage.prompt_tokens or None
            self._trace_attempt(
                p, model, n, req, done, None, done.latency_s, ctx_tokens, ctx_limit, escaped
            )
            return done

        # Charged to the tokens-per-minute bucket up front, corrected from the reported usage.
        estimated = estimate_tokens(p.messages) + int(p.params.get("max_tokens") or 0)
        try:
            done, _ = await self.policy.execute(
                res.chain, attempt, emit=emit, estimated_tokens=estimated
            )
        except Exception as exc:  # error rows of a grid join their traces by this id
            with contextlib.suppress(AttributeError, TypeError):
                exc.trace_id = p.call_id  # type: ignore[attr-defined]
            scrub_chain(exc)  # a provider's own exception may quote the key
            raise
        done.__dict__.update(alias=res.alias, trace_id=p.call_id)
        if self.cache is not None and cache != "off" and done.cache_key:
            # The parse record is kept only under the key its fingerprint was made for.
            fingerprint = p.parse_print if done.cache_key == p.key else None
            record = parse_record(done, fingerprint) if fingerprint else None
            await self._cache_store(done.cache_key, encode_entry(done, record))
        return done

    async def _cache_store(self, key: str, entry: str) -> None:
        """Store an answer's entry (`encode_entry`), committed together with the others that
        finish in the same turn of the loop, or, in a grid, within `GROUP_WINDOW` (group
        commit: one SQLite commit per call was a third of a grid call's CPU; see `_slots`).
        Returns once the answer is on disk, as `set` did."""
        assert self.cache is not None
        loop = asyncio.get_running_loop()
        if self._runner is None or loop is not self._runner.loop:
            error = self.cache.set_many([(key, entry)])[0]  # not on our loop: no batch to join
            if error is not None:
                raise error
            return
        fut: asyncio.Future[None] = loop.create_future()
        slots, queued = current_slots(), len(self._cache_queue) + 1
        if slots is None or slots.batch == 1:
            if queued == 1:  # the first of this turn's batch
                loop.call_soon(self._cache_flush)
        elif queued == 1:  # the first of a grid's window
            loop.call_later(GROUP_WINDOW, self._cache_flush)
        elif queued == slots.batch:  # enough to share a commit: now
            loop.call_soon(self._cache_flush)
        queued_entry = (key, entry, fut)
        self._cache_queue.append(queued_entry)
        try:
            await fut
        except asyncio.CancelledError:
            # A call cancelled before it returned leaves no cache entry, as one cancelled while
            # reading the reply did (a resumed grid asks again, and a grid keeps a row for every
            # cached answer): withdraw it, or take it back if the commit came first.
            if queued_entry in self._cache_queue:
                self._cache_queue.remove(queued_entry)
            else:  # the batch was written in the meantime
                with contextlib.suppress(Exception):
                    self.cache.delete(key)
            raise

    def _cache_flush(self) -> None:
        batch, self._cache_queue = self._cache_queue, []
        if not batch:
            return
        try:
            assert self.cache is not None
            errors = self.cache.set_many([(key, entry) for key, entry, _ in batch])
        except Exception as exc:  # the store would not open: every waiter hears why
            errors = [exc] * len(batch)
        for (_, _, fut), err in zip(batch, errors, strict=True):
            if fut.done():  # its caller was cancelled; the answer is stored anyway
                continue
            if err is None:
                fut.set_result(None)
            else:
                fut.set_exception(err)

    def _fit(
        self, backend: Backend, req: Request, emit: Callable[[Event], None]
    ) -> tuple[int | None, int | None]:
        """Count prompt tokens and check window and output limit; raises ContextOverflow."""
        caps = self.registry.capabilities(req.model)
        window, out_limit = caps.context_window, caps.max_output_tokens
        if window is None and out_limit is None:
            return None, None
        max_tokens = req.params.get("max_tokens")
        upper = token_upper_bound(req.messages)
        if upper is not None:
            bound = check_fit(req.model, upper, max_tokens, window, out_limit)
            if bound.fits and not bound.near_limit:
                # The exact count is at most the bound, so it would fit, not even near the
                # limit: skip the tokenizer pass; the trace takes the provider's count later.
                return None, window
        tokens = count_tokens(
            req.model, req.messages, counter=lambda m: backend.count_tokens(req.model, m)
        )
        fit = require_fit(req.model, tokens, max_tokens, window, out_limit)
        event = fit.event()
        if event is not None:
            emit(event)
        return tokens, caps.context_window

    def _trace_attempt(
        self,
        p: Prepared,
        model: str,
        n: int,
        req: Request,
        done: Completion | None,
        exc: BaseException | None,
        latency: float,
        ctx_tokens: int | None,
        ctx_limit: int | None,
        escaped: bool = False,
    ) -> None:
        state = self.policy.breaker_state(model)
        origin = done.origin if done is not None and done.cache_hit else None
        common: dict[str, Any] = dict(
            call_id=origin.get("call_id", p.call_id) if origin else p.call_id,
            **(p.meta if origin is None else {k: origin.get(k) for k in p.meta}),
            alias=p.resolution.alias,
            model=model,
            attempt=n,
            prompt=req.messages,
            params=req.params,
            cache_hit=False,
            context_tokens=ctx_tokens,
            context_limit=ctx_limit,
            breaker_state=state,
        )
        if done is None:
            assert exc is not None
            self.tracer.record(
                **trace_row(
                    "attempt",
                    "error",
                    **common,
                    latency_s=latency,
                    error_type=type(exc).__name__,
                    error=str(exc),
                    meta={"status_code": getattr(exc, "status", None)},
                )
            )
            return
        record = self.tracer.record_if_missing if origin else self.tracer.record
        if origin is None:  # kept with the cache entry: see lookup()
            origin = done.__dict__["origin"] = {
                "id": new_id(),
                "call_id": p.call_id,
                "attempt": n,
                "ts": time.time(),
                **p.meta,
            }
        row = trace_row(
            "attempt",
            "ok",
            completion=done,
            **common,
            id=origin.get("id"),
            ts=origin.get("ts") or time.time(),
            cache_key=done.cache_key,
            parse_ok=done.parsed.ok if done.parsed else None,
            repairs=done.parsed.repair_steps if done.parsed else None,
            meta={
                "finish_reason": done.finish_reason,
                **(_confidences(done) or {}),
                **({"restored": True} if done.cache_hit else {}),
                **({"escaped": ["response"]} if escaped else {}),
            },
        )
        record(**row)

    # ------------------------------------------------------------ public API
    async def agenerate(
        self, prompt: str | None = None, *, cache: CacheMode = "use", **kwargs: Any
    ) -> Completion:
        """Async `generate`; see there."""
        return await self.agenerate_prepared(self.prepare(prompt, **kwargs), cache)

    def generate(
        self, prompt: str | None = None, *, cache: CacheMode = "use", **kwargs: Any
    ) -> Completion:
        """Generate one completion through the cached, traced, policy-wrapped call path.

        Ask with `prompt=`, `template=` + `variables=` (`{{name}}` placeholders) or `messages=`.
        `model` is an alias or 'provider/model' id (default: the local SmolLM2 model);
        `schema` (pydantic model, JSON Schema or {field: type}) asks for JSON and parses it;
        `sample` is the repeat index; `cache` is "use", "refresh" (ignore, then overwrite) or
        "off". Output parameters (temperature, max_tokens, ...) go in as keywords.
        """
        p = self.prepare(prompt, **kwargs)
        _check_cache_mode(cache)
        if cache == "use" and (hit := self.lookup(p)) is not None:
            return hit
        result: Completion = self._run_sync(self.execute(p, cache))
        return result

    def traces(self, **filters: Any) -> pd.DataFrame:
        """Trace rows as a DataFrame; filters: run_id, call_id, model, kind, status,
        cache_hit, errors, since, limit."""
        return self.tracer.query(**filters)

    def close(self) -> None:
        if self._runner is not None:
            inside = threading.current_thread() is self._runner.thread
            for backend in self._backends.values():  # pooled connections live on our loop
                if hasattr(backend, "aclose") and not inside:
                    with contextlib.suppress(Exception):
                        self._runner.submit(backend.aclose()).result(timeout=5)
            self._runner.close()
            self._runner = None
        if self.cache is not None:
            self.cache.close()
        self.tracer.close()


def _check_cache_mode(cache: str) -> None:
    if cache not in ("use", "refresh", "off"):
        raise InputError(f"cache must be 'use', 'refresh' or 'off', got {cache!r}")


def _append_instructions(messages: list[Message], text: str) -> list[Message]:
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user" and isinstance(m.get("content"), str):
            m["content"] = f"{m['content']}\n\n{text}"
            return out
    return [*out, {"role": "user", "content": text}]


def _clean_reply(done: Completion) -> bool:
    """Where a reply enters labkit: a quoted API key (a prompt held one, a proxy echoed it) is
    scrubbed, and text UTF-8 cannot hold (lone surrogates) escaped, before the cache, the trace
    or a results frame sees it. True when text was escaped (the trace row notes it)."""
    clean = mend_text(scrub_secrets(done.text, pairs=False))
    if clean == done.text:
        return False
    escaped = mend_text(done.text) is not done.text
    done.text = clean
    done.raw = map_strings(done.raw, lambda t: mend_text(scrub_secrets(t, pairs=False)))
    return escaped


def _parse(text: str, schema: Any) -> Any:
    return parse(text, schema)


def _confidences(done: Completion) -> dict[str, Any] | None:
    """Per-field confidences for the trace's meta, so `labkit.monitor` can watch them drift."""
    confs = done.parsed.confidences if done.parsed is not None else None
    return {"confidences": dict(confs)} if confs else None


_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process-wide client behind `labkit.generate`; created on first use, not at import."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Client()
    return _default


def configure(**kwargs: Any) -> Client:
    """Replace the default client (cache_dir=, traces=, registry=, profile=, redact=, ...)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = Client(**kwargs)
    return _default
