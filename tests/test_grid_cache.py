"""The grid's fast paths (#16) give the same answers as the call-by-call path they replace:
bulk cache reads, cached parse results, group commits and in-session restore skipping."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel

import labkit._parse_cache as parse_cache
import labkit.client as client_mod
from labkit.cache import Cache
from labkit.client import Client
from labkit.experiments import Experiment
from labkit.models import Registry
from labkit.testing import FakeBackend
from labkit.types import Completion, Usage

SCHEMA = {"sentiment": ["positive", "negative"]}
MODELS = ["fake/a", "fake/b"]
PROMPTS = {"terse": "Sentiment: {{review}}", "careful": "Read it first.\n{{review}}"}


def _reply(request: Any) -> str:
    """A reply that depends on the prompt, some of it needing repair (so parses differ)."""
    text = request.messages[-1]["content"]
    if "broken" in text:
        return "Sure! ```json\n{'sentiment': 'negative', 'sentiment_confidence': 0.6,}\n```"
    return json.dumps({"sentiment": "positive", "sentiment_confidence": 0.9})


def _rows(n: int) -> list[dict[str, Any]]:
    words = ["great", "broken", "fine"]
    return [
        {
            "id": f"r{i}",
            # one review carries an e-mail address: traces must redact it on every path
            "review": f"It was {words[i % 3]} (order {i})"
            + (" mail me at ann@example.com" if i == 1 else ""),
            "expected": {"sentiment": "negative" if i % 3 == 1 else "positive"},
        }
        for i in range(n)
    ]


def _client(folder: Path, traces: str = "t.db") -> Client:
    client = Client(registry=Registry(), cache_dir=folder / "cache", traces=folder / traces)
    client.add_backend("fake", FakeBackend(_reply))
    return client


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    """The frame without what differs by construction between two runs (fresh ids)."""
    return df.drop(columns=["trace_id"]).reset_index(drop=True)


def _trace_rows(client: Client, run_id: str) -> pd.DataFrame:
    cols = ["kind", "status", "item_id", "model", "prompt", "response", "parse_ok", "repairs",
            "meta", "cache_key", "cache_hit", "prompt_tokens", "completion_tokens"]  # fmt: skip
    df = client.traces(run_id=run_id, kind="cache_hit")[cols]
    df = df.assign(prompt=df.prompt.map(json.dumps), meta=df.meta.map(json.dumps),
                   repairs=df.repairs.map(json.dumps))  # fmt: skip
    return df.sort_values(["item_id", "model", "prompt"]).reset_index(drop=True)


# ------------------------------------------------------------------------ bulk reads
def test_get_texts_answers_as_get_does_key_by_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import diskcache

    cache = Cache(tmp_path / "c")
    small = Completion(text="short", model="m", usage=Usage(prompt_tokens=2))
    big = Completion(text="x" * 50_000, model="m")  # diskcache keeps it in a file
    cache.set("small", small)
    cache.set("big", big)
    cache._open().set("bad", "{not json")
    cache.close()
    with diskcache.Cache(str(tmp_path / "c")) as plain:  # rows labkit must never unpickle
        plain.set("pickled", pickle.dumps({"boom": 1}))
        plain.set("number", 12345)
    cache = Cache(tmp_path / "c")
    keys = ["small", "big", "bad", "pickled", "number", "absent", "small"]
    with caplog.at_level(logging.WARNING, logger="labkit.cache"):
        texts = cache.get_texts(keys)
        bulk = {k: cache.decode(k, texts.get(k)) for k in keys}
        one_by_one = {k: cache.get(k) for k in keys}
    assert {k: v.model_dump() if v else None for k, v in bulk.items()} == {
        k: v.model_dump() if v else None for k, v in one_by_one.items()
    }
    assert bulk["small"] == small and bulk["big"] is not None and bulk["big"].text == big.text
    assert bulk["bad"] is None and bulk["pickled"] is None and bulk["number"] is None
    assert "treated as a miss" in caplog.text
    cache.close()


def test_set_many_keeps_the_good_entries_when_one_cannot_be_stored(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    good = Completion(text="fine", model="m")
    bad = Completion(text="x", model="m", raw={"obj": object()})  # not JSON: cannot be stored
    errors = cache.set_many([("a", good), ("b", bad), ("c", good), ("p", '{"parsed": 1}')])
    assert errors[0] is None and errors[2] is None and errors[3] is None
    assert errors[1] is not None
    assert cache.get("a") == good and cache.get("c") == good and cache.get("b") is None
    assert cache.get_texts(["p"]) == {"p": '{"parsed": 1}'}
    cache.close()


# ------------------------------------------------------------------ a cached re-run
def test_a_cached_rerun_gives_the_frame_and_trace_rows_of_the_call_by_call_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(12)
    first = _client(tmp_path / "a")
    exp = Experiment(rows, PROMPTS, MODELS, schema=SCHEMA, client=first, concurrency=4)
    fresh = exp.run(progress=False).df
    first.close()

    # Bulk path: a new session (as after a kernel restart) re-runs from the cache.
    bulk_client = _client(tmp_path / "a", "bulk.db")
    parses: list[str] = []
    real_parse = client_mod._parse
    monkeypatch.setattr(client_mod, "_parse", lambda t, s: parses.append(t) or real_parse(t, s))
    bulk_exp = Experiment(rows, PROMPTS, MODELS, schema=SCHEMA, client=bulk_client, concurrency=4)
    bulk = bulk_exp.run(progress=False).df
    assert parses == []  # every parse result came from the cache
    bulk_traces = _trace_rows(bulk_client, bulk_exp.run_id)
    bulk_client.close()

    # The call-by-call path it replaces: no prefetch, every lookup reads its own entry (the
    # parse result is kept in the answer's entry, so this path does not parse either).
    monkeypatch.setattr(Client, "prefetch", lambda self, prepared: 0)
    slow_client = _client(tmp_path / "a", "slow.db")
    slow_exp = Experiment(rows, PROMPTS, MODELS, schema=SCHEMA, client=slow_client, concurrency=4)
    slow = slow_exp.run(progress=False).df
    assert parses == []
    slow_traces = _trace_rows(slow_client, slow_exp.run_id)
    slow_client.close()

    assert bulk["cache_hit"].all() and not fresh["cache_hit"].any()
    pd.testing.assert_frame_equal(_frame(bulk), _frame(slow))
    same = ["output", "parsed", "parse_ok", "passed", "score", "confidence", "confidences",
            "repairs", "prompt_tokens", "completion_tokens", "cost_usd"]  # fmt: skip
    pd.testing.assert_frame_equal(_frame(bulk)[same], _frame(fresh)[same])
    assert bulk["repairs"].map(len).gt(0).any()  # the repaired replies are in the comparison
    pd.testing.assert_frame_equal(bulk_traces, slow_traces)
    assert len(bulk_traces) == len(rows) * 4
    prompts = " ".join(bulk_traces["prompt"])
    assert "ann@example.com" not in prompts and "[EMAIL]" in prompts


def test_a_stored_parse_is_used_only_for_its_schema_and_parser_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(tmp_path)
    args: dict[str, Any] = dict(prompt="It was great", model="fake/a", schema=SCHEMA)
    first = client.generate(**args)
    p = client.prepare(**args)
    assert p.parse_print is not None and client.cache is not None
    stored = json.loads(client.cache.get_texts([p.key])[p.key])  # one entry: answer and parse
    assert stored["parsed"]["print"] == p.parse_print
    assert stored["parsed"]["result"]["value"] == first.value == {"sentiment": "positive"}

    def values() -> tuple[Any, Any]:
        """(bulk look-up's value, a single call's value), both cache hits."""
        q = client.prepare(**args)
        client.prefetch([q])
        got, single = client.lookup(q), client.generate(**args)
        assert got is not None and got.cache_hit and single.cache_hit
        return got.value, single.value

    def plant(record: Any) -> None:
        client.cache.set_many([(p.key, json.dumps({**stored, "parsed": record}))])

    # A planted parse result is what a hit returns: it is really used, by both paths.
    result = stored["parsed"]["result"]
    planted = {**stored["parsed"], "result": {**result, "value": {"sentiment": "negative"}}}
    plant(planted)
    assert values() == ({"sentiment": "negative"},) * 2
    # ... but an entry without one, or with one that is not a parse result, is parsed anew.
    for record in (None, {**planted, "result": {"value": 1, "ok": "maybe"}}, [planted], "x"):
        plant(record)
        assert values() == ({"sentiment": "positive"},) * 2
    # A call without a schema never sees the stored record as its `parsed`.
    plant(planted)
    q = client.prepare(**args)
    q.schema = None
    got = client.lookup(q)
    assert got is not None and got.parsed is None and got.text == first.text
    # After the parser changes, the fingerprint moves: parsed anew.
    monkeypatch.setattr(parse_cache, "PARSE_CACHE_VERSION", parse_cache.PARSE_CACHE_VERSION + 1)
    client._schema_memo.clear()
    assert client.prepare(**args).parse_print != p.parse_print
    assert values() == ({"sentiment": "positive"},) * 2
    # Another schema: another fingerprint.
    assert parse_cache.parse_print({"sentiment": str}) != parse_cache.parse_print(SCHEMA)

    # A pydantic class has validators no fingerprint sees: never cached, always parsed.
    class Review(BaseModel):
        sentiment: str

    assert client.prepare(prompt="x", model="fake/a", schema=Review).parse_print is None
    client.close()


# --------------------------------------------------------------------- group commit
def test_answers_finishing_together_share_a_commit_and_are_on_disk_on_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(tmp_path)
    assert client.cache is not None
    batches: list[int] = []
    real = Cache.set_many

    def spy(self: Cache, items: Any) -> Any:
        batches.append(len(items))
        return real(self, items)

    monkeypatch.setattr(Cache, "set_many", spy)

    async def grid() -> list[Completion]:
        calls = [client.agenerate(f"item {i}", model="fake/a") for i in range(20)]
        return list(await asyncio.gather(*calls))

    answers = client.run(grid())
    assert len(answers) == 20 and sum(batches) == 20 and len(batches) < 20
    for i, done in enumerate(answers):
        hit = client.cache.get(done.cache_key or "")
        assert hit is not None and hit.text == done.text, i
    client.close()


def test_a_call_cancelled_while_its_answer_is_committed_leaves_no_entry(
    tmp_path: Path,
) -> None:
    client = _client(tmp_path)
    assert client.cache is not None
    key = client.prepare("cancel me", model="fake/a").key

    async def cancelled() -> None:
        task = asyncio.ensure_future(client.agenerate("cancel me", model="fake/a"))
        while not client._cache_queue:  # the answer is in, waiting for its commit
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    client.run(cancelled())
    assert client.cache.get(key) is None  # a resumed grid asks again, as for any cancelled call
    done = client.generate("cancel me", model="fake/a")
    assert not done.cache_hit and client.cache.get(key) is not None
    client.close()


# ------------------------------------------------------------- restore rows, once
def test_a_rerun_in_the_same_session_restores_no_attempt_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(tmp_path)
    exp = Experiment(_rows(6), PROMPTS, MODELS, schema=SCHEMA, client=client)
    exp.run(progress=False)
    restored: list[Any] = []
    real = client.tracer.record_if_missing
    monkeypatch.setattr(
        client.tracer, "record_if_missing", lambda **f: restored.append(f) or real(**f)
    )
    again = exp.run(progress=False)
    assert again.df["cache_hit"].all() and restored == []
    attempts = client.traces(run_id=exp.run_id, kind="attempt")
    assert len(attempts) == 24 and attempts["id"].is_unique
    client.close()


def test_set_many_keeps_diskcache_bookkeeping_and_files_right(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    small = Completion(text="small", model="m")
    big = Completion(text="y" * 40_000, model="m")  # kept in a file by diskcache
    assert cache.set_many([("a", small), ("b", big), ("c", small)]) == [None] * 3
    store = cache._open()
    files = sorted(p.name for p in (tmp_path / "c").rglob("*.val"))
    assert len(files) == 1
    # Overwrite: a small value over the file-backed one (its file must go), and an upsert.
    newer = Completion(text="newer", model="m")
    assert cache.set_many([("b", newer), ("a", newer), ("a", small)]) == [None] * 3
    assert not list((tmp_path / "c").rglob("*.val"))
    assert len(cache) == 3 and cache.get("a") == small and cache.get("b") == newer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.check() == []  # diskcache's own consistency check: counts, sizes, files
    assert store.volume() > 0
    cache.close()


def test_get_texts_reads_many_keys_and_odd_text_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch comes back from SQLite as one text of separated keys and values: every text
    must survive that byte for byte, over more keys than one query takes; a value or key that
    holds a separator itself (planted, not written by labkit) must not shift the others; and a
    query SQLite refuses falls back to reading key by key."""
    import labkit.cache as cache_mod

    cache = Cache(tmp_path / "c")
    odd = ['quote " back \\ slash', "line\nbreak\ttab", "\u2028\u2029", "emoji 🙂", "\x1f\x1e\x00"]
    items: list[tuple[str, Completion | str]] = []
    for i in range(1_900):
        items.append((f"k{i}", Completion(text=odd[i % len(odd)] + str(i), model="m")))
    items.append(("p", json.dumps({"text": "\ud800 escaped", "n": 1})))
    assert cache.set_many(items) == [None] * len(items)
    planted = {"k5": "raw \x1f unit", "k905": "\x1e", "k1300": "nul \x00 \x1f\x1e", "k\x1fk": "x"}
    for key, text in planted.items():  # written raw, as another program could
        cache._open().set(key, text)
    keys = [k for k, _ in items] + ["absent", "k\x1fk"]
    texts = cache.get_texts(keys)
    assert len(texts) == len(items) + 1 and "absent" not in texts
    for key in keys:
        assert texts.get(key) == cache._open().get(key), key
    assert {k: texts[k] for k in planted} == planted
    monkeypatch.setattr(cache_mod, "_GET_TEXTS", "SELECT no_such_function({})")
    assert cache.get_texts(keys) == texts
    cache.close()


# ------------------------------------------------------------- a re-run's prepared calls
def _counting_prepare(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = Client.prepare

    def prepare(self: Client, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("model", ""))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Client, "prepare", prepare)
    return calls


def test_a_rerun_reuses_its_prepared_calls_while_nothing_they_came_from_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(tmp_path)
    exp = Experiment(_rows(6), PROMPTS, MODELS, schema=SCHEMA, client=client)
    calls = _counting_prepare(monkeypatch)
    first = exp.run(progress=False).df
    assert len(calls) == 24
    again = exp.run(progress=False).df
    assert len(calls) == 24 and again["cache_hit"].all()  # nothing prepared anew
    assert again["trace_id"].is_unique and set(again["trace_id"]).isdisjoint(first["trace_id"])
    pd.testing.assert_frame_equal(_frame(again).drop(columns="cache_hit"),
                                  _frame(first).drop(columns="cache_hit"))  # fmt: skip

    # Each change re-prepares every call, and the new keys miss where the request changed.
    exp.params["temperature"] = 0.5
    changed = exp.run(progress=False).df
    assert len(calls) == 48 and not changed["cache_hit"].any()
    schema = dict(SCHEMA)
    exp.schema = schema  # an equal schema: the same calls
    exp.run(progress=False)
    assert len(calls) == 48
    schema["sentiment"] = ["positive", "negative", "mixed"]  # edited in place
    edited = exp.run(progress=False).df
    assert len(calls) == 72 and not edited["cache_hit"].any()
    client.registry.register("fake/a", context_window=100_000)  # the registry changed
    exp.run(progress=False)
    assert len(calls) == 96  # the registry drops every resolution on a change
    client.close()


def test_a_rerun_decodes_only_entries_that_changed_since_the_run_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentiment = {"now": "positive"}
    client = Client(registry=Registry(), cache_dir=tmp_path / "cache", traces=tmp_path / "t.db")
    client.add_backend("fake", FakeBackend(lambda r: json.dumps({"sentiment": sentiment["now"]})))
    exp = Experiment(_rows(6), PROMPTS, MODELS, schema=SCHEMA, client=client)
    decoded: list[str] = []
    real = Cache.decode
    monkeypatch.setattr(Cache, "decode", lambda self, k, b: decoded.append(k) or real(self, k, b))
    exp.run(progress=False)
    first = exp.run(progress=False).df
    assert len(decoded) == 24 and first["cache_hit"].all()
    again = exp.run(progress=False).df  # the same entries: what they decoded to, copied
    assert len(decoded) == 24 and again["cache_hit"].all()
    assert set(again["trace_id"]).isdisjoint(first["trace_id"])
    pd.testing.assert_frame_equal(_frame(again), _frame(first))

    sentiment["now"] = "negative"  # every entry rewritten with another answer
    exp.run(progress=False, cache="refresh")
    changed = exp.run(progress=False).df
    assert len(decoded) == 48 and changed["cache_hit"].all()
    assert set(changed["parsed"].map(lambda v: v["sentiment"])) == {"negative"}
    client.cache.clear()  # and gone: a miss, asked anew
    assert not exp.run(progress=False).df["cache_hit"].any()
    client.close()


def test_cells_of_an_ab_alias_are_prepared_anew_on_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(tmp_path)
    client.registry.alias("split", {"fake/a": 0.5, "fake/b": 0.5})
    exp = Experiment(_rows(6), PROMPTS, ["split", "fake/b"], schema=SCHEMA, client=client)
    calls = _counting_prepare(monkeypatch)
    exp.run(progress=False)
    exp.run(progress=False)
    assert calls.count("split") == 24 and calls.count("fake/b") == 12
    client.close()


def test_the_column_wise_frame_equals_the_general_one_and_falls_back_on_odd_rows(
    tmp_path: Path,
) -> None:
    import math
    import random

    import numpy as np

    from labkit.experiments.results import COLUMNS, _typed, _typed_rows, build_frame

    client = _client(tmp_path)
    exp = Experiment(_rows(9), PROMPTS, MODELS, schema=SCHEMA, client=client)
    exp.run(progress=False)
    client.close()
    grid = sorted(exp._rows.items())

    def general(rows: list[tuple[int, dict[str, Any]]]) -> pd.DataFrame:
        ordered = [r for _, r in sorted(rows, key=lambda kv: kv[0])]
        return _typed(pd.DataFrame.from_records(ordered, columns=list(COLUMNS)))

    rng = random.Random(7)
    for _ in range(60):
        rows = [(i, dict(r)) for i, r in rng.sample(grid, rng.randint(1, len(grid)))]
        for _, r in rows:
            x = rng.random()
            if x < 0.25:  # an error row, as the runner writes one
                r.update(error="ProviderError: boom", error_type="ProviderError", passed=False,
                         parsed=None, output=rng.choice([None, ""]), parse_ok=False,
                         score=math.nan)  # fmt: skip
            elif x < 0.4:
                r["parsed"] = rng.choice([None, "text", 3, True, [1, 2], {"a": [None]}])
            elif x < 0.5:
                r.update(ttft_s=math.nan, confidence=math.nan, trace_id=None)
        assert _typed_rows([r for _, r in rows]) is not None
        pd.testing.assert_frame_equal(build_frame(rows), general(rows), check_exact=True)

    odd = [dict(r) for _, r in grid]
    for change in ({"repeat": np.int64(0)}, {"passed": None}, {"extra": 1}, {"score": 1}):
        rows = [(i, {**r, **change}) if i == 0 else (i, r) for i, r in enumerate(odd)]
        assert _typed_rows([r for _, r in rows]) is None
        pd.testing.assert_frame_equal(build_frame(rows), general(rows), check_exact=True)


# ------------------------------------------------------------------ request slots
class _Gauge(FakeBackend):
    """A slow scripted backend that records how many requests were out at once, and whether
    each request left only after every earlier answer was in the cache."""

    def __init__(self, cache: Any) -> None:
        super().__init__("fine", latency=0.02)
        self.cache, self.out, self.peak = cache, 0, 0
        self.answered: list[str] = []
        self.early: list[int] = []  # requests sent while an earlier answer was not yet stored

    async def generate(self, request: Any) -> Completion:
        from labkit.cache import cache_key

        if any(k not in self.cache for k in self.answered):
            self.early.append(len(self.history))
        self.out += 1
        self.peak = max(self.peak, self.out)
        self.latency = 0.02 + (len(self.history) % 7) * 0.003  # answers land in different turns
        try:
            done = await super().generate(request)
        finally:
            self.out -= 1
        self.answered.append(cache_key(request))
        return done


def _gauged(tmp_path: Path) -> tuple[Client, _Gauge]:
    client = Client(registry=Registry(), cache_dir=tmp_path / "cache", traces=tmp_path / "t.db")
    assert client.cache is not None
    gauge = _Gauge(client.cache)
    client.add_backend("fake", gauge)
    return client, gauge


def test_concurrency_caps_requests_in_flight_and_answers_share_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, gauge = _gauged(tmp_path)
    commits: list[int] = []
    real = Cache.set_many
    monkeypatch.setattr(
        Cache, "set_many", lambda self, items: commits.append(1) or real(self, items)
    )
    items = [{"id": f"i{i}", "q": f"question {i}"} for i in range(96)]
    exp = Experiment(items, {"p": "Q: {{q}}"}, ["fake/a"], client=client, concurrency=16)
    stored: list[bool] = []
    exp.on_progress.append(lambda s: stored.append(len(client.cache or []) >= s.done))
    res = exp.run(progress=False)
    assert res.df["error"].isna().all() and len(gauge.history) == 96
    assert gauge.peak == 16  # the cap is reached and never passed
    assert len(commits) <= 96 // 2  # answers finishing within the window share a commit
    assert stored and all(stored)  # a row is published only once its answer is on disk
    again = exp.run(progress=False)
    assert again.df["cache_hit"].all() and len(gauge.history) == 96
    client.close()


def test_a_sequential_grid_stores_each_answer_before_the_next_request(tmp_path: Path) -> None:
    client, gauge = _gauged(tmp_path)
    items = [{"id": f"i{i}", "q": f"question {i}"} for i in range(12)]
    Experiment(items, {"p": "Q: {{q}}"}, ["fake/a"], client=client, concurrency=1).run(
        progress=False
    )
    assert len(gauge.history) == 12 and gauge.peak == 1 and gauge.early == []
    client.close()


def test_progress_is_live_while_a_run_without_listeners_runs_and_fixed_after(
    tmp_path: Path,
) -> None:
    import threading
    import time

    client = Client(registry=Registry(), cache_dir=tmp_path / "cache", traces=tmp_path / "t.db")
    client.add_backend("fake", FakeBackend("fine", latency=0.01))
    items = [{"id": f"i{i}", "q": f"question {i}"} for i in range(40)]
    exp = Experiment(items, {"p": "Q: {{q}}"}, ["fake/a"], client=client, concurrency=2)
    assert exp.on_progress == []  # nobody listens: no snapshot is published per cell
    run = threading.Thread(target=exp.run, kwargs={"progress": False})
    run.start()
    seen = []
    while run.is_alive():
        seen.append(exp.progress)
        time.sleep(0.005)
    run.join()
    midway = [s for s in seen if 0 < s.done < s.total]
    assert midway and all(s.total == 40 and s.errors == 0 for s in midway)
    assert [s.done for s in seen] == sorted(s.done for s in seen)
    end = exp.progress
    assert end.done == 40 and end.cache_hits == 0 and end.elapsed_s > 0
    time.sleep(0.02)
    assert exp.progress == end  # a finished run's progress no longer moves
    again = exp.run(progress=False)
    assert len(again.df) == 40 and exp.progress.cache_hits == 40
    client.close()


def test_a_parse_result_is_stored_only_if_it_comes_back_identical() -> None:
    from labkit.structured import parse

    def record(text: str, **change: Any) -> str | None:
        done = Completion(text=text, model="m")
        parsed = parse(text, SCHEMA)
        done.parsed = parsed.model_copy(update=change) if change else parsed
        return parse_cache.parse_record(done, "fp")

    def read(stored: str) -> Any:  # as the entry's `parsed: Any` field reads it
        return Completion.model_validate_json(f'{{"text":"","model":"m","parsed":{stored}}}').parsed

    reply = '{"sentiment": "positive", "sentiment_confidence": 0.9}'
    stored = record(reply)
    assert stored is not None
    assert parse_cache.stored_parse(read(stored), "fp") == parse(reply, SCHEMA)
    assert parse_cache.stored_parse(read(stored), "another") is None  # another schema
    assert record(reply, confidences={"sentiment": math.nan}) is None  # NaN != NaN
    assert record(reply, value={"sentiment": "pos\ud800"}) is None  # UTF-8 cannot hold it
    assert record(reply, value={"sentiment": ("a", "b")}) is None  # a tuple comes back a list
    assert record(reply, confidences={"sentiment": math.inf}) is None
    assert record(reply, value={1: "positive"}) is None  # a key JSON would make a string
    assert record(reply, value={"sentiment": {"a"}}) is None  # not JSON at all
    odd = record(reply, value={"sentiment": 'é "q" \\ \u2028 🙂'})
    assert odd is not None
    assert parse_cache.stored_parse(read(odd), "fp").value == {"sentiment": 'é "q" \\ \u2028 🙂'}
    # Whatever is stored comes back equal: replies the parser repairs, nested and odd values.
    replies = [
        reply,
        '```json\n{"sentiment": "negative", "sentiment_confidence": 0.4,}\n```',
        "{'sentiment': 'positive'}",
        'Sure! {"sentiment": "POSITIVE", "sentiment_confidence": "0.7"} Hope that helps.',
        '{"sentiment": "positive", "extra": [1, -0.0, 1e300, 12345678901234567890, null, true]}',
        '{"sentiment": "neutral", "sentiment_confidence": 1.5}',
        '{"sentiment": ',
        "no JSON here",
    ]
    stored_count = 0
    for text in replies:
        done = Completion(text=text, model="m", parsed=parse(text, SCHEMA))
        kept = parse_cache.parse_record(done, "fp")
        if kept is not None:
            stored_count += 1
            assert parse_cache.stored_parse(read(kept), "fp") == done.parsed, text
    assert stored_count == len(replies)  # none of these needed refusing


def test_evaluators_see_the_prompt_of_the_run_after_the_prompts_change(tmp_path: Path) -> None:
    from labkit.evaluation.checks import EvalContext, Evaluator, Score

    class Seen(Evaluator):
        name = "seen"

        def __init__(self) -> None:
            self.prompts: list[str | None] = []

        def evaluate(self, ctx: EvalContext) -> Score:
            self.prompts.append(ctx.prompt)
            return self.score(1.0, True)

    client = _client(tmp_path)
    seen = Seen()
    exp = Experiment(_rows(3), {"p": "Rate: {{review}}"}, ["fake/a"], client=client,
                     evaluators=[seen])  # fmt: skip
    exp.run(progress=False)
    exp.run(progress=False)  # re-run: the same rendered prompts
    assert seen.prompts[:3] == seen.prompts[3:] == [f"Rate: {r['review']}" for r in _rows(3)]
    exp.prompts = {"p": "Judge: {{review}}"}
    exp.run(progress=False)
    assert seen.prompts[6:] == [f"Judge: {r['review']}" for r in _rows(3)]
    client.close()
