"""The OTLP exporter process: close() flushes, a killed exporter costs spans (one warning, a
count), never a call or a SQLite row, and the exporter dies with its owner.

The collector here is a loopback OTLP/HTTP receiver decoding the protobuf requests with the
OpenTelemetry proto package (the Phoenix round trip is in test_otel.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from labkit.client import Client
from labkit.experiments import Experiment
from labkit.models import Registry
from labkit.otel import SpanSink
from labkit.testing import FakeBackend, FakeOpenAIServer

pytest.importorskip("opentelemetry.sdk", reason="the OpenTelemetry SDK: pip install 'labkit[otel]'")

ROOT = Path(__file__).parents[1]
MODEL = "openai/gpt-4o-mini-2024-07-18"
CAPS = {"context_window": 128000, "max_output_tokens": 16384, "json_mode": True,
        "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07}  # fmt: skip


class Collector:
    """Span names received, by call id."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.spans]


@pytest.fixture
def collector() -> Iterator[tuple[str, Collector]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    got = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            req = ExportTraceServiceRequest.FromString(body)
            with got.lock:
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            attrs = {a.key: a.value.string_value for a in span.attributes}
                            got.spans.append((span.name, attrs.get("labkit.call_id", "")))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie not yet reaped is gone too
        return f.read().split(")")[-1].split()[0] == "Z"


def test_close_flushes_every_span(collector: tuple[str, Collector], tmp_path: Path) -> None:
    url, got = collector
    client = Client(registry=Registry(), cache_dir=None, traces=tmp_path / "t.db", otel=url)
    client.add_backend("fake", FakeBackend("an answer"))
    ids = [client.generate(f"question {i}", model="fake/x").trace_id for i in range(25)]
    (sink,) = client.tracer.sinks
    assert isinstance(sink, SpanSink)
    client.close()  # no flush first: close alone must post everything
    assert sink.pid is not None and _gone(sink.pid)
    names = got.names()
    assert names.count("chat fake/x") == 25 and names.count("attempt 1 fake/x") == 25
    assert {call for _, call in got.spans} == set(ids)
    assert sink.spans == 50 and sink.sent == 25 and sink.dropped == 0  # a row: 2 spans
    assert os.stat(sink.log_path).st_mode & 0o077 == 0  # the exporter's log: owner-only


def test_exporter_killed_mid_grid(
    collector: tuple[str, Collector], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grid finishes, every row is in SQLite, one warning, the lost rows counted."""
    url, _ = collector
    holder: dict[str, Any] = {"n": 0}
    lock = threading.Lock()

    def reply(body: dict[str, Any]) -> str:
        with lock:
            holder["n"] += 1
            n = holder["n"]
        if n == 30:  # mid-grid: wait for the exporter to exist, then kill it
            sink = holder["sink"]
            deadline = time.monotonic() + 20
            while sink.pid is None and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(sink.pid, signal.SIGKILL)
            holder["killed"] = sink.pid
        return json.dumps({"label": "positive"})

    items = [{"id": f"r{i}", "text": f"review {i}"} for i in range(40)]
    with FakeOpenAIServer(reply=reply) as server:
        monkeypatch.setenv("LABKIT_TEST_KEY", "sk-test-not-a-real-key-0000")
        registry = Registry(
            models={MODEL: {"api_base": server.url, "api_key_env": "LABKIT_TEST_KEY", **CAPS}}
        )
        client = Client(registry=registry, cache_dir=None, traces=tmp_path / "t.db", otel=url)
        (sink,) = client.tracer.sinks
        holder["sink"] = sink
        exp = Experiment(
            items,
            {"a": "{{text}}\nLabel?", "b": "Label this: {{text}}"},
            [MODEL],
            schema={"label": ["positive", "negative"]},
            client=client,
            concurrency=4,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = exp.run(progress=False).df
            for _ in range(3):  # more rows after the kill reach a dead exporter
                client.generate("one more", model=MODEL, max_tokens=5)
            rows = client.traces(limit=None)
            client.close()
    assert "killed" in holder and _gone(holder["killed"])
    assert len(df) == 80 and df["error"].isna().all()
    attempts = rows[rows["kind"] == "attempt"]
    assert len(attempts) == 83 and set(df["trace_id"]) <= set(attempts["call_id"])
    ours = [w for w in caught if "OpenTelemetry export" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "SIGKILL" in str(ours[0].message) and str(sink.log_path) in str(ours[0].message)
    assert sink.dropped > 0


OWNER = """
import sys, time
from labkit.client import Client
from labkit.models import Registry
from labkit.testing import FakeBackend
c = Client(registry=Registry(), cache_dir=None, traces=sys.argv[1], otel=sys.argv[2])
c.add_backend("fake", FakeBackend("ok"))
c.generate("hello", model="fake/x")
c.tracer.flush()
sink = c.tracer.sinks[0]
while sink.pid is None:
    time.sleep(0.05)
print(sink.pid, flush=True)
time.sleep(600)
"""


def test_exporter_dies_with_its_owner(collector: tuple[str, Collector], tmp_path: Path) -> None:
    url, _ = collector
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "t.db"), url],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert not _gone(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"labkit.otel_export" in argv and not any(b"sk-" in a for a in argv)
    finally:
        owner.kill()  # SIGKILL: no atexit, no close; the kernel (or the pipe's EOF) ends it
        owner.wait(10)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)
