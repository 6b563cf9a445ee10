"""Trace export over OTLP/HTTP, read back from a real Arize Phoenix started on loopback.

Phoenix runs from its own venv (`make phoenix` builds `.venv-phoenix`; LABKIT_PHOENIX_PYTHON
points elsewhere) as a subprocess bound to 127.0.0.1 on free ports, writing to a temp folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import free_port, wait_http

from labkit.chunking import map_chunks
from labkit.client import Client
from labkit.errors import LabkitError
from labkit.evaluation import LLMJudge
from labkit.experiments import Experiment
from labkit.models import Registry
from labkit.otel import OtelConfig, SpanSink
from labkit.testing import FakeOpenAIServer, Fault

pytest.importorskip("opentelemetry.sdk", reason="the OpenTelemetry SDK: pip install 'labkit[otel]'")

ROOT = Path(__file__).parents[1]
MODEL = "openai/gpt-4o-mini-2024-07-18"
DEAD = "openai/gpt-4o-2024-08-06"  # nothing listens at its api_base
EMAIL = "jane.doe@example.com"
PLANTED_KEY = "sk-proj-AAAABBBBCCCCDDDDEEEE1234"
TEST_KEY = "sk-test-otel-not-a-real-key-0987"
CAPS = {"context_window": 128000, "max_output_tokens": 16384, "json_mode": True,
        "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07}  # fmt: skip


def _phoenix_python() -> str | None:
    for candidate in (os.environ.get("LABKIT_PHOENIX_PYTHON"), ROOT / ".venv-phoenix/bin/python"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Phoenix server on 127.0.0.1; yields its base URL."""
    python = _phoenix_python()
    if python is None:
        pytest.skip("Arize Phoenix is not installed: `make phoenix` builds .venv-phoenix")
    workdir = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = (workdir / "phoenix.log").open("wb")
    proc = subprocess.Popen(
        [python, str(ROOT / "tests/phoenix_loopback.py")], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # a cold import of Phoenix takes a while on 2 cores
        wait_http(
            f"{url}/healthz", proc, workdir / "phoenix.log", name="Phoenix", timeout=240, poll=0.5
        )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _spans(url: str, project: str, want: int, timeout: float = 60) -> list[dict[str, Any]]:
    """Every span of `project`, polling until at least `want` arrived (Phoenix inserts in
    batches)."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans, cursor = [], ""
        try:
            while True:
                page = _get(f"{url}/v1/projects/{project}/spans?limit=1000{cursor}")
                spans += page["data"]
                if not page.get("next_cursor"):
                    break
                cursor = f"&cursor={page['next_cursor']}"
        except urllib.error.HTTPError as exc:  # the project exists once its first span landed
            if exc.code != 404:
                raise
        if len(spans) >= want:
            break
        time.sleep(0.5)
    return spans


def _reply(body: dict[str, Any]) -> str:
    text = json.dumps(body["messages"])
    if "verdict" in text:  # the judge
        return json.dumps({"score": 4, "verdict": "pass", "reasons": ["fine"]})
    review = body["messages"][-1]["content"].split("\n")[0]
    return json.dumps({"sentiment": "positive", "sentiment_confidence": 0.8, "echo": review})


@pytest.mark.slow
def test_grid_spans_in_phoenix(phoenix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("LABKIT_TEST_KEY", TEST_KEY)
    project = f"labkit-{uuid.uuid4().hex[:8]}"
    items = [
        {"id": f"r{i}", "review": f"Great, write to {EMAIL} with key {PLANTED_KEY} (#{i})"}
        for i in range(3)
    ]
    with FakeOpenAIServer(reply=_reply, faults=[Fault(500)], max_lifetime=120) as server:
        registry = Registry(
            models={
                MODEL: {"api_base": server.url, "api_key_env": "LABKIT_TEST_KEY", **CAPS},
                DEAD: {"api_base": f"http://127.0.0.1:{free_port()}/v1", **CAPS},
            },
            policy={"retry": {"max_attempts": 2, "base_delay": 0.001}},
        )
        client = Client(
            registry=registry,
            cache_dir=tmp_path / "cache",
            traces=tmp_path / "traces.db",
            otel=OtelConfig(endpoint=phoenix, project=project),
        )
        exp = Experiment(
            items,
            {"p": "{{review}}\nSentiment?"},
            [MODEL],
            schema={"sentiment": ["positive", "negative"]},
            evaluators=[LLMJudge("Is the label right?", model=MODEL)],
            client=client,
            concurrency=1,
        )
        df = exp.run(progress=False).df
        assert df["error"].isna().all() and server.count == 3 + 1 + 3  # a retried 500
        again = exp.run(progress=False).df  # all cache hits, judge calls included
        assert again["cache_hit"].all() and server.count == 7
        with pytest.raises(LabkitError):  # a call that fails for good: both attempts
            client.generate("hello", model=DEAD, max_tokens=5)
        long_text = " ".join(f"w{i}" for i in range(300))
        chunked = map_chunks(long_text, template="Summarise: {{document}}", model=MODEL,
                             client=client, chunk_tokens=100, max_tokens=20)  # fmt: skip
        assert chunked.ok and len(chunked.chunks) > 1
        rows = client.traces(limit=None)  # SQLite keeps its rows beside the export
        client.close()

    n_chunks = len(chunked.chunks)
    spans = _spans(phoenix, project, want=len(rows) + 13 + n_chunks)
    by_id = {s["context"]["span_id"]: s for s in spans}
    every_call = {s["attributes"]["labkit.call_id"]: s for s in spans
                  if s["attributes"].get("labkit.kind") == "call"}  # fmt: skip
    # chunks: children of the chunked call's span, written after them, in one trace
    (parent,) = [s for s in spans if s["attributes"].get("labkit.call_id") == chunked.parent_id]
    assert parent["attributes"]["labkit.kind"] == "parent" and parent["parent_id"] is None
    chunk_calls = [c for c in every_call.values()
                   if c["attributes"].get("labkit.parent_id") == chunked.parent_id]  # fmt: skip
    assert len(chunk_calls) == n_chunks
    for chunk in chunk_calls:
        assert chunk["parent_id"] == parent["context"]["span_id"]
        assert chunk["context"]["trace_id"] == parent["context"]["trace_id"]
        del every_call[chunk["attributes"]["labkit.call_id"]]
    assert len(every_call) == 13  # (3 grid cells + 3 judge calls) x 2 runs + the dead one
    (dead,) = [c for c in every_call.values() if c["status_code"] == "ERROR"]
    assert dead["attributes"]["gen_ai.request.model"] == DEAD
    assert len([s for s in spans if s["parent_id"] == dead["context"]["span_id"]]) >= 2
    hits = [s for s in spans if s["attributes"].get("labkit.kind") == "cache_hit"]
    assert len(hits) == 6 and all(by_id[h["parent_id"]]["attributes"]["labkit.cache_hit"] for h in hits)  # fmt: skip
    calls = {k: c for k, c in every_call.items() if not c["attributes"]["labkit.cache_hit"]}
    calls = {k: c for k, c in calls.items() if c is not dead}
    assert len(calls) == 6  # 3 grid cells + 3 judge calls
    for call in calls.values():
        a = call["attributes"]
        assert call["name"] == f"chat {MODEL}" and a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == MODEL == a["gen_ai.response.model"]
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert a["labkit.cost_usd"] > 0 and a["labkit.cache_hit"] is False
        assert a["labkit.parse_ok"] is True and "labkit.ttft_s" in a
    # every attempt, event and hit hangs under its call, in the call's trace
    children = [s for s in spans if s["attributes"].get("labkit.kind") in ("attempt", "event")
                and s["attributes"]["labkit.call_id"] in calls]  # fmt: skip
    assert len(children) == len(rows[rows["kind"].isin(["attempt", "event"]) & rows["call_id"].isin(list(calls))])  # fmt: skip
    for child in children:
        call = calls[child["attributes"]["labkit.call_id"]]
        assert child["parent_id"] == call["context"]["span_id"]
        assert child["context"]["trace_id"] == call["context"]["trace_id"]
    failed = [s for s in children if s["status_code"] == "ERROR"]
    assert len(failed) == 1 and failed[0]["attributes"]["error.type"] == "ProviderUnavailable"
    assert any(s["attributes"].get("labkit.event") == "retry" for s in children)
    # judge calls are children of the call they judged
    grid_calls = set(df["trace_id"])
    judged = [c for c in calls.values() if c["attributes"].get("labkit.parent_id")]
    assert len(judged) == 3
    for judge in judged:
        parent = by_id[judge["parent_id"]]
        assert parent["attributes"]["labkit.call_id"] in grid_calls
        assert parent["context"]["trace_id"] == judge["context"]["trace_id"]
    # confidences and the run's own span
    cell = calls[next(iter(grid_calls))]["attributes"]
    assert cell["labkit.confidence.sentiment"] == 0.8 and cell["labkit.run_id"] == exp.run_id
    assert any(s["name"] == "labkit.experiment" for s in spans)
    # one redaction path: what Phoenix holds is what SQLite holds, no e-mail, no key
    blob = json.dumps(spans)
    assert EMAIL not in blob and PLANTED_KEY not in blob and TEST_KEY not in blob
    assert "[EMAIL]" in blob and "[API_KEY]" in blob
    sqlite = {(r.call_id, r.attempt): r for r in rows[rows["kind"] == "attempt"].itertuples()}
    for child in children:
        a = child["attributes"]
        if a["labkit.kind"] == "attempt" and child["status_code"] == "OK":
            row = sqlite[(a["labkit.call_id"], a["labkit.attempt"])]
            assert a["output.value"] == row.response  # the same redacted text
            call = calls[a["labkit.call_id"]]["attributes"]
            assert json.loads(call["input.value"]) == row.prompt


def test_import_stays_light_and_env_turns_export_on(tmp_path: Path) -> None:
    code = (
        "import sys, labkit\n"
        "from labkit.client import Client\n"
        "c = Client(traces=sys.argv[1], cache_dir=None)\n"
        "print(any(m.startswith('opentelemetry') for m in sys.modules), len(c.tracer.sinks))\n"
        "c.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)

    def run(**extra: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "t.db")],
            env={**env, **extra}, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run() == "False 0"
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: export fails quietly
    # export on, and still no OpenTelemetry module here: spans are built in the exporter process
    assert run(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint) == "False 1"
    assert run(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SDK_DISABLED="true") == "False 0"


def test_otel_setting_in_labkit_yaml(tmp_path: Path) -> None:
    path = tmp_path / "labkit.yaml"
    path.write_text("otel: {endpoint: 'http://127.0.0.1:9', project: team, content: false}\n")
    client = Client(registry=path, cache_dir=None, traces=tmp_path / "t.db")
    (sink,) = client.tracer.sinks
    assert isinstance(sink, SpanSink) and sink.cfg.project == "team" and not sink.cfg.content
    client.close()
    off = Client(registry=path, cache_dir=None, traces=tmp_path / "t.db", otel=False)
    assert off.tracer.sinks == []
    off.close()
    path.write_text("otel: {endpiont: 'http://127.0.0.1:9'}\n")
    from labkit.errors import ConfigError

    with pytest.raises(ConfigError, match="endpiont"):
        Client(registry=path, cache_dir=None, traces=tmp_path / "t.db")


def _row(kind: str, call_id: str, row_id: str, **kw: Any) -> dict[str, Any]:
    return {"id": row_id, "ts": 1000.0, "kind": kind, "call_id": call_id, "model": MODEL, **kw}


def test_span_tree_from_rows_in_any_order(tmp_path: Path) -> None:
    """Children written before their parent row (chunks, eval loops) and a parent nested in
    another call: one trace where the ids allow it, a link where they cannot."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from labkit.otel_export import SpanBuilder  # what the exporter process runs

    sink = SpanBuilder(OtelConfig(endpoint=f"http://127.0.0.1:{free_port()}"))
    memory = InMemorySpanExporter()
    sink.processor.shutdown()
    sink.processor = SimpleSpanProcessor(memory)  # the real SDK, kept in memory for the test
    ok = {"status": "ok", "latency_s": 0.5, "prompt_tokens": 7, "completion_tokens": 3}
    # a root call R, then a loop L under R whose attempt call A arrives before L's own row,
    # then a chunked parent C (no parent) whose chunk K arrives first
    sink.export([_row("attempt", "R", "r1", attempt=1, **ok)])
    sink.export([_row("attempt", "A", "a1", attempt=1, parent_id="L", **ok)])
    sink.export([_row("parent", "L", "l1", parent_id="R", status="ok", event="eval_loop")])
    sink.export([_row("attempt", "K", "k1", attempt=1, parent_id="C", **ok)])
    sink.export([_row("parent", "C", "c1", status="ok", event="chunked", latency_s=1.0)])
    # a failed call: error attempt, retry event, error attempt, then the chain runs out
    err = {"status": "error", "error_type": "ProviderUnavailable", "error": "down"}
    sink.export([
        _row("attempt", "E", "e1", attempt=1, **err),
        _row("event", "E", "e2", status="event", event="retry", meta='{"delay": 0.1}'),
        _row("attempt", "E", "e3", attempt=2, **err),
        _row("event", "E", "e4", status="event", event="fallback", meta='{"to": null}'),
    ])  # fmt: skip
    sink.close()
    spans = {s.name + ":" + str(s.attributes.get("labkit.call_id")): s for s in memory.get_finished_spans()}  # fmt: skip
    call = {k.split(":")[1]: s for k, s in spans.items() if k.startswith("chat ")}
    parents = {k.split(":")[1]: s for k, s in spans.items() if k.startswith("labkit.")}
    assert set(call) == {"R", "A", "K", "E"} and set(parents) >= {"L", "C"}
    assert call["K"].parent.span_id == parents["C"].context.span_id  # child first, still linked
    assert call["K"].context.trace_id == parents["C"].context.trace_id
    assert call["A"].parent.span_id == parents["L"].context.span_id
    loop = parents["L"]  # its child went out first under its own trace: a link up to R
    assert loop.parent is None and loop.links[0].context.span_id == call["R"].context.span_id
    assert call["E"].status.status_code.name == "ERROR"
    assert call["E"].attributes["error.type"] == "ProviderUnavailable"
    assert call["R"].attributes["gen_ai.usage.input_tokens"] == 7
    assert "gen_ai.usage.input_tokens" not in spans["attempt 1 " + MODEL + ":R"].attributes
