"""Trace rows as OpenTelemetry spans, exported over OTLP/HTTP (Phoenix, Langfuse, Jaeger, Tempo).

One redaction path: spans are built from the rows the SQLite trace store has just redacted
(a `tracing.TraceSink` fed by its writer thread), so a span holds exactly what the row holds,
never the raw prompt or a key. SQLite stays the local record; export runs beside it.

Off the hot path: calls only queue rows (as before); the trace writer thread turns each batch
into spans and hands them to the SDK's `BatchSpanProcessor`, whose own thread encodes and posts
them. A collector that is down costs dropped spans (the SDK logs them), never a call.

Span tree, built from the row columns (`tracing.COLUMNS`):

    call            one per call_id: "chat {model}" (kind=parent rows: "labkit.{event}")
    ├── attempt     one per attempt row: "attempt {n} {model}", CLIENT, error status on failure
    ├── cache hit   a cache_hit row: "cache hit {model}"
    └── event       a policy event (retry, wait, fallback, breaker, rate_limit, context)
    child calls     judge calls, chunks, refine attempts: their `parent_id` is this call

Ids are derived from labkit's own ids (span id = hash of call_id or row id, trace id = hash of
the root call's id), so rows flushed in different batches, or a parent row written after its
children (a chunked call, an eval loop), still land in one tree. The one case that cannot: a
parent row written after its children that itself has a parent; it becomes its own trace with
a link to that parent.

Attributes follow the OpenTelemetry GenAI semantic conventions (`gen_ai.operation.name`,
`gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.*`, `gen_ai.response.
finish_reasons`, `gen_ai.request.*` parameters, `error.type`) with labkit's own under `labkit.*`
(cache hit, repairs, parse_ok, confidences, cost, cached tokens, ttft, ids). Token usage sits
on the call span only, once per call, so a backend summing a trace does not count the attempt
that answered twice; the attempt spans carry theirs as `labkit.usage.*`. The redacted prompt
and reply go in `input.value` / `output.value` (what Phoenix and Langfuse display) unless
`content=False`.

A call's span is sent when its answer row arrives (an ok attempt or a cache hit). A call that
ended in an error has no such row: it is sent once no row followed its last failed attempt for
`grace_s` seconds (a retry is announced by an event row right after the failure), and at close.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError

__all__ = ["OtelConfig", "SpanSink", "configured", "otel_sink", "span_sink"]

_log = logging.getLogger("labkit.otel")
_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "n": "gen_ai.request.choice_count",
}
_LABKIT_COLUMNS = (
    "kind",
    "call_id",
    "parent_id",
    "run_id",
    "item_id",
    "alias",
    "attempt",
    "status",
    "cost_usd",
    "latency_s",
    "ttft_s",
    "cached_tokens",
    "cache_key",
    "context_tokens",
    "context_limit",
    "event",
    "breaker_state",
)


class OtelConfig(BaseModel):
    """The `otel:` section of `labkit.yaml` (or `Client(otel=OtelConfig(...))`). Every field
    left unset falls back to the standard OTEL_* environment variables."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None
    """OTLP/HTTP base URL, e.g. "http://127.0.0.1:6006" (Phoenix) or
    "https://cloud.langfuse.com/api/public/otel"; "/v1/traces" is appended. None: the
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT variables."""
    headers_env: dict[str, str] = Field(default_factory=dict)
    """Header name -> name of the environment variable holding its value (an Authorization
    token stays out of the file). OTEL_EXPORTER_OTLP_HEADERS works too."""
    service_name: str | None = None
    """`service.name` of the exported resource (default: OTEL_SERVICE_NAME, else "labkit")."""
    project: str | None = None
    """Phoenix project the spans go to (`openinference.project.name`); None: Phoenix's
    "default"."""
    content: bool = True
    """Export the redacted prompt and reply text (False: ids, models, usage and timings only)."""
    grace_s: float = Field(2.0, gt=0)
    """A call whose last attempt failed is sent after this long without a retry."""
    timeout_s: float = Field(10.0, gt=0)
    """HTTP timeout of one export request."""

    @classmethod
    def parse(cls, value: Any, where: str = "otel") -> OtelConfig | None:
        """From `Client(otel=...)` or labkit.yaml: True/False, an endpoint URL or a mapping."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, OtelConfig):
            return value
        if isinstance(value, str):
            return cls(endpoint=value)
        if isinstance(value, Mapping):
            from .models import _validate

            cfg: OtelConfig = _validate(cls, {**value}, where)
            return cfg
        raise ConfigError(
            f"expected true/false, an OTLP endpoint URL or a mapping, got {type(value).__name__}",
            where=where,
        )


def configured() -> OtelConfig | None:
    """Export settings from the environment alone: on when an OTLP endpoint is set (and
    OTEL_SDK_DISABLED is not true)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if any(os.environ.get(name) for name in _ENDPOINT_ENVS):
        return OtelConfig()
    return None


def otel_sink(value: Any, where: str = "otel", unset: bool = False) -> SpanSink | None:
    """The sink for `Client(otel=...)` (or, when `unset`, labkit.yaml's `otel:` else the
    environment); None when export is off."""
    cfg = OtelConfig.parse(value, where)
    if cfg is None and unset and value is None:
        cfg = configured()
        return None if cfg is None else span_sink(cfg, required=False)
    return None if cfg is None else span_sink(cfg)


def span_sink(cfg: OtelConfig, *, required: bool = True) -> SpanSink | None:
    """A `SpanSink` for `cfg`. Without the OpenTelemetry packages: ConfigError with the install
    hint when `required` (export was asked for in code or labkit.yaml), else a warning (only
    the environment asked) and None."""
    try:
        return SpanSink(cfg)
    except ImportError as exc:
        hint = "pip install 'labkit[otel]'"
        if required:
            raise ConfigError(f"OpenTelemetry export needs its packages: {hint} ({exc})") from exc
        import warnings

        warnings.warn(
            f"labkit: an OTLP endpoint is set in the environment but OpenTelemetry is not "
            f"installed ({hint}); traces stay in SQLite only.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _id(text: str, size: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "big") or 1


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _resource(base: Any, made: Any) -> Any:
    """`made` with its hash computed once: the SDK's encoder groups every span by resource,
    and Resource hashes by dumping its attributes to JSON each time."""

    class _Resource(base):
        def __init__(self) -> None:
            super().__init__(made.attributes, made.schema_url)
            self._hash = hash((tuple(sorted(made.attributes.items())), made.schema_url))

        def __hash__(self) -> int:
            return self._hash

    return _Resource()


class _Call:
    """What a call's span needs, gathered from its rows as they arrive."""

    __slots__ = ("deadline", "end", "error", "first", "last", "rows", "start", "trace")

    def __init__(self, trace: int, row: dict[str, Any], start: float, end: float) -> None:
        self.trace = trace
        self.first = row
        self.last = row
        self.start = start
        self.end = end
        self.rows = 0
        self.deadline = float("inf")
        self.error: dict[str, Any] | None = None


class SpanSink:
    """A `tracing.TraceSink` turning redacted trace rows into OTLP spans; see the module doc."""

    def __init__(self, cfg: OtelConfig) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        from . import __version__

        self.cfg = cfg
        endpoint = cfg.endpoint
        if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        headers = {k: os.environ.get(env, "") for k, env in cfg.headers_env.items()} or None
        if headers:
            from .redact import add_secret

            for value in headers.values():
                add_secret(value)
        self.exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=cfg.timeout_s)
        resource: dict[str, Any] = {}
        if cfg.service_name or not os.environ.get("OTEL_SERVICE_NAME"):
            resource["service.name"] = cfg.service_name or "labkit"
        if cfg.project:
            resource["openinference.project.name"] = cfg.project
        self.resource = _resource(Resource, Resource.create(resource))
        self.processor = BatchSpanProcessor(self.exporter)
        self._scope = InstrumentationScope("labkit", __version__)
        self._Span, self._Ctx, self._Link = ReadableSpan, SpanContext, Link
        self._Status, self._Code, self._Kind = Status, StatusCode, SpanKind
        self._flags = TraceFlags(TraceFlags.SAMPLED)
        self._calls: dict[str, _Call] = {}
        self._traces: dict[str, int] = {}  # call_id -> trace id, for the children to come
        self._lock = threading.Lock()
        self._closed = False
        self.sent = 0
        """Spans handed to the batch processor so far."""
        atexit.register(self.close)

    # ------------------------------------------------------------------ rows in
    def export(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            if self._closed:
                return
            now = time.time()
            for row in rows:
                self._row(row, now)
            if self._calls:
                late = [c for c, call in self._calls.items() if call.deadline <= now]
                for call_id in late:
                    self._end_call(call_id)

    def _trace_of(self, call_id: str, parent_id: str | None) -> int:
        trace = self._traces.get(call_id)
        if trace is None:
            if parent_id:
                trace = self._traces.get(parent_id) or _id(parent_id, 16)
                self._remember(parent_id, trace)
            else:
                trace = _id(call_id, 16)
            self._remember(call_id, trace)
        return trace

    def _remember(self, call_id: str, trace: int) -> None:
        if call_id not in self._traces:
            if len(self._traces) >= 200_000:  # old calls' children are long done
                self._traces.clear()
            self._traces[call_id] = trace

    def _row(self, row: dict[str, Any], now: float) -> None:
        kind = row.get("kind")
        call_id = row.get("call_id")
        if not call_id:
            return
        ts = float(row.get("ts") or now)
        if kind == "parent":
            self._parent_span(row, call_id, ts)
            return
        trace = self._trace_of(call_id, row.get("parent_id"))
        start = ts - float(row.get("latency_s") or 0.0) if kind == "attempt" else ts
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = _Call(trace, row, start, ts)
        call.start, call.end, call.last = min(call.start, start), max(call.end, ts), row
        call.rows += 1
        parent = self._Ctx(trace, _id(call_id, 8), False, self._flags)
        self._emit(self._child_name(row), row, trace, _id(row["id"], 8), parent, start, ts)
        status = row.get("status")
        if status == "error":
            call.error = row
        if status in ("ok", "hit"):
            self._end_call(call_id)
        elif row.get("event") == "fallback" and (_json(row.get("meta")) or {}).get("to") is None:
            self._end_call(call_id)  # the chain ran out: the call raises
        elif kind == "attempt":  # a failed attempt: final unless a retry event follows
            call.deadline = now + self.cfg.grace_s
        else:
            call.deadline = now + 600.0  # a retry or wait announced: the call goes on

    @staticmethod
    def _child_name(row: dict[str, Any]) -> str:
        kind = row.get("kind")
        if kind == "attempt":
            return f"attempt {row.get('attempt')} {row.get('model')}"
        if kind == "cache_hit":
            return f"cache hit {row.get('model')}"
        return f"labkit.{row.get('event') or kind}"

    def _end_call(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        last, first = call.last, call.first
        if last.get("status") not in ("ok", "hit"):  # no answer: the call failed
            last = {**last, **(call.error or {}), "status": "error", "event": None}
        summary = dict(last)
        summary["kind"] = "call"
        summary["model"] = last.get("model") or first.get("model")
        summary["prompt"] = first.get("prompt") or last.get("prompt")
        summary["parent_id"] = first.get("parent_id")
        summary["attempt"] = None
        parent_id = first.get("parent_id")
        parent = None
        if parent_id:
            parent = self._Ctx(call.trace, _id(parent_id, 8), False, self._flags)
        request_model = first.get("model")
        self._emit(
            f"chat {summary['model']}",
            summary,
            call.trace,
            _id(call_id, 8),
            parent,
            call.start,
            call.end,
            request_model=request_model,
            usage=True,
        )

    def _parent_span(self, row: dict[str, Any], call_id: str, ts: float) -> None:
        parent_id = row.get("parent_id")
        links: tuple[Any, ...] = ()
        known = self._traces.get(call_id)
        above = (self._traces.get(parent_id) or _id(parent_id, 16)) if parent_id else None
        if known is not None and above is not None and above != known:
            # its children already went out under this call's own trace: keep them, link up
            parent_ctx = self._Ctx(above, _id(str(parent_id), 8), False, self._flags)
            links = (self._Link(parent_ctx),)
            trace, parent = known, None
        else:
            trace = self._trace_of(call_id, parent_id)
            parent = self._Ctx(trace, _id(parent_id, 8), False, self._flags) if parent_id else None
        start = ts - float(row.get("latency_s") or 0.0)
        name = f"labkit.{row.get('event') or 'parent'}"
        self._emit(name, row, trace, _id(call_id, 8), parent, start, ts, links=links, totals=True)

    # ---------------------------------------------------------------- spans out
    def _emit(
        self,
        name: str,
        row: dict[str, Any],
        trace: int,
        span_id: int,
        parent: Any,
        start: float,
        end: float,
        *,
        request_model: str | None = None,
        usage: bool = False,
        totals: bool = False,
        links: tuple[Any, ...] = (),
    ) -> None:
        kind = row.get("kind")
        if kind in ("call", "parent"):
            attrs = self._attributes(row, request_model, usage, totals)
        else:
            attrs = self._child_attributes(row)
        error = row.get("error_type")
        if error or row.get("status") == "error":
            status = self._Status(self._Code.ERROR, str(row.get("error") or error or "")[:1000])
        elif row.get("status") in ("ok", "hit"):
            status = self._Status(self._Code.OK)
        else:
            status = self._Status(self._Code.UNSET)
        span_kind = self._Kind.CLIENT if kind == "attempt" else self._Kind.INTERNAL
        span = self._Span(
            name,
            context=self._Ctx(trace, span_id, False, self._flags),
            parent=parent,
            resource=self.resource,
            attributes=attrs,
            links=links,
            kind=span_kind,
            status=status,
            start_time=int(start * 1e9),
            end_time=int(max(end, start) * 1e9),
            instrumentation_scope=self._scope,
        )
        self.processor.on_end(span)
        self.sent += 1

    def _child_attributes(self, row: dict[str, Any]) -> dict[str, Any]:
        """An attempt, hit or event span: what differs from its call (the call span holds the
        prompt, parameters, parse results and ids). Kept short: encoding costs per attribute."""
        a: dict[str, Any] = {"labkit.kind": row.get("kind"), "labkit.call_id": row["call_id"]}
        model = row.get("model")
        kind = row.get("kind")
        if kind == "event":
            a["labkit.event"] = row.get("event")
            if row.get("meta"):
                a["labkit.detail"] = row["meta"]
            if row.get("breaker_state"):
                a["labkit.breaker_state"] = row["breaker_state"]
            return a
        if model:
            a["gen_ai.operation.name"] = "chat"
            a["gen_ai.request.model"] = model
        if kind == "cache_hit":
            a["labkit.cache_key"] = row.get("cache_key")
            return a
        a["labkit.attempt"] = row.get("attempt")
        if row.get("latency_s") is not None:
            a["labkit.latency_s"] = row["latency_s"]
        if row.get("error_type"):
            a["error.type"] = row["error_type"]
            if row.get("error"):
                a["labkit.error"] = row["error"]
            return a
        a["gen_ai.response.model"] = model
        if row.get("ttft_s") is not None:
            a["gen_ai.response.time_to_first_chunk"] = row["ttft_s"]
        a["labkit.usage.input_tokens"] = row.get("prompt_tokens") or 0
        a["labkit.usage.output_tokens"] = row.get("completion_tokens") or 0
        if self.cfg.content and row.get("response"):
            a["output.value"] = row["response"]
        return a

    def _attributes(
        self, row: dict[str, Any], request_model: str | None, usage: bool, totals: bool
    ) -> dict[str, Any]:
        model = row.get("model")
        kind = row.get("kind")
        a: dict[str, Any] = {}
        if model:
            a["gen_ai.operation.name"] = "chat"
            a["gen_ai.provider.name"] = model.split("/", 1)[0]
            a["gen_ai.request.model"] = request_model or model
            if row.get("status") in ("ok", "hit"):
                a["gen_ai.response.model"] = model
        meta = _json(row.get("meta"))
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("finish_reason"):
            a["gen_ai.response.finish_reasons"] = [str(meta["finish_reason"])]
        params = _json(row.get("params"))
        if isinstance(params, dict):
            for key, attr in _PARAMS.items():
                value = params.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    a[attr] = value
            stop = params.get("stop")
            if stop:
                a["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else stop
        tokens = (row.get("prompt_tokens"), row.get("completion_tokens"))
        if usage and not totals:
            if tokens[0] is not None:
                a["gen_ai.usage.input_tokens"] = tokens[0]
            if tokens[1] is not None:
                a["gen_ai.usage.output_tokens"] = tokens[1]
            if row.get("cached_tokens"):
                a["gen_ai.usage.cache_read.input_tokens"] = row["cached_tokens"]
        elif tokens != (None, None):
            prefix = "labkit.total." if totals else "labkit.usage."
            a[prefix + "input_tokens"] = tokens[0] or 0
            a[prefix + "output_tokens"] = tokens[1] or 0
        if row.get("ttft_s") is not None:
            a["gen_ai.response.time_to_first_chunk"] = row["ttft_s"]
        if row.get("error_type"):
            a["error.type"] = row["error_type"]
        for col in _LABKIT_COLUMNS:
            value = row.get(col)
            if value is not None:
                key = "labkit.total.cost_usd" if totals and col == "cost_usd" else f"labkit.{col}"
                a[key] = value
        a["labkit.kind"] = kind
        if row.get("cache_hit") is not None:
            a["labkit.cache_hit"] = bool(row["cache_hit"])
        if row.get("parse_ok") is not None:
            a["labkit.parse_ok"] = bool(row["parse_ok"])
        repairs = _json(row.get("repairs"))
        if isinstance(repairs, list):
            a["labkit.repairs"] = len(repairs)
            if repairs:
                a["labkit.repair_steps"] = json.dumps(repairs, default=str)
        for field, value in (meta.get("confidences") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                a[f"labkit.confidence.{field}"] = float(value)
        if kind in ("event", "parent") and meta:
            a["labkit.detail"] = json.dumps(meta, default=str)
        if self.cfg.content:
            if row.get("prompt"):
                a["input.value"] = row["prompt"]
                a["input.mime_type"] = "application/json"
            if row.get("response"):
                a["output.value"] = row["response"]
            if row.get("error"):
                a["labkit.error"] = row["error"]
        return a

    # -------------------------------------------------------------------- end
    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send every span queued so far (calls still open stay open)."""
        return bool(self.processor.force_flush(int(timeout_s * 1000)))

    def close(self) -> None:
        """Send the calls still open (ended by an error, or cut short) and every queued span;
        idempotent, never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for call_id in list(self._calls):
                self._end_call(call_id)
        try:
            self.processor.shutdown()
        except Exception:
            _log.exception("labkit otel: shutting the span processor down failed")
