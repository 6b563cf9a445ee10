"""The OTLP exporter process: redacted trace rows in on stdin, OpenTelemetry spans out.

`otel.SpanSink` (in the owner's trace writer thread) writes each batch of rows as one line of
compact JSON to this child's stdin; here they become spans with the SDK, batched by its
`BatchSpanProcessor` and posted over OTLP/HTTP. Building and protobuf-encoding spans costs
~0.3 ms each in Python: in the owner it would compete with the grid for the GIL, here it costs
a grid nothing but a pipe write.

Protocol (one JSON value per line): first `{"config": {...}, "headers": {...}}` (the headers
resolved from `headers_env` by the owner, so no secret rides on argv or env), then row batches
(lists) and `{"flush": n}` (answered on stdout by `flushed n <spans sent>` once the SDK has
posted what it holds). At stdin EOF: open calls are ended, everything is posted, exit. The
child dies with its owner (`_child.die_with_parent`).

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

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from ._child import die_with_parent
from .otel import OtelConfig

__all__ = ["SpanBuilder", "main"]

_log = logging.getLogger("labkit.otel")
TICK_S = 0.5
NICE = 10
"""Scheduling priority below the owner's: spans wait (in the pipe, then the SDK's queue)
while every core is busy with the grid, instead of slowing it."""

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


class SpanBuilder:
    """Redacted trace rows in, OTLP spans out through the SDK's batch processor (the tree and
    the attributes are described in the module doc)."""

    def __init__(self, cfg: OtelConfig, headers: dict[str, str] | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        from ._version import __version__

        self.cfg = cfg
        endpoint = cfg.endpoint
        if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        self.exporter = OTLPSpanExporter(
            endpoint=endpoint, headers=headers or None, timeout=cfg.timeout_s
        )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.otel_export")
    parser.add_argument("--parent", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    die_with_parent(args.parent or os.getppid(), watch_stdin=False)
    with contextlib.suppress(OSError, AttributeError):  # on busy cores, the grid comes first
        os.nice(NICE)  # stdin EOF ends the loop below
    stdin, stdout = sys.stdin.buffer, sys.stdout
    first = json.loads(stdin.readline() or "{}")
    builder = SpanBuilder(OtelConfig(**first.get("config", {})), first.get("headers") or None)
    done = threading.Event()

    def tick() -> None:  # ends the calls whose failed attempt saw no retry for grace_s
        while not done.wait(TICK_S):
            builder.export([])

    threading.Thread(target=tick, name="labkit-otel-tick", daemon=True).start()
    for line in stdin:
        try:
            msg = json.loads(line)
            if isinstance(msg, list):
                builder.export(msg)
        except Exception:  # one bad batch costs its spans, not the exporter
            _log.exception("labkit otel exporter: a batch of rows could not become spans")
            continue
        if isinstance(msg, dict) and "flush" in msg:
            builder.flush()
            print(f"flushed {int(msg['flush'])} {builder.sent}", file=stdout, flush=True)
    done.set()
    builder.close()
    print(f"closed {builder.sent}", file=stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
