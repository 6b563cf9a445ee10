from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from labkit.redact import Redactor
from labkit.tracing import TraceStore, new_id


def test_rows_are_redacted_before_they_are_written(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    store.record(
        kind="attempt",
        call_id="c1",
        model="m",
        status="ok",
        prompt=[{"role": "user", "content": "I am bob@example.com, card 4111 1111 1111 1111"}],
        response="Reply to bob@example.com",
        error=None,
        prompt_tokens=5,
    )
    store.flush()  # rows are written by the background thread
    raw = (
        sqlite3.connect(tmp_path / "t.db").execute("SELECT prompt, response FROM traces").fetchone()
    )
    assert "bob@example.com" not in raw[0] and "4111" not in raw[0]
    assert raw[1] == "Reply to [EMAIL]"
    df = store.query(call_id="c1")
    assert len(df) == 1
    assert df.iloc[0]["prompt"][0]["content"] == "I am [EMAIL], card [CARD]"
    assert df.iloc[0]["prompt_tokens"] == 5


def test_custom_redactor_and_filters(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", Redactor([r"ACME-\d+"]))
    store.record(kind="attempt", call_id="a", model="m1", status="ok", response="ACME-77")
    store.record(
        kind="attempt", call_id="b", model="m2", status="error", error_type="RateLimited", error="x"
    )
    assert store.query(model="m1").iloc[0]["response"] == "[REDACTED]"
    errs = store.query(errors=True)
    assert list(errs["call_id"]) == ["b"]
    assert len(store.query(errors=False)) == 1


def test_unknown_column_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown trace column"):
        TraceStore(tmp_path / "t.db").record(kind="attempt", colour="red")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered by the locked case")
def test_unwritable_directory_keeps_rows_in_memory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    store = TraceStore(ro / "sub" / "t.db")
    with pytest.warns(RuntimeWarning, match="not writable"):
        store.record(kind="attempt", model="m", status="ok")
    assert store.pending == 1


def test_locked_database_warns_and_flushes_later(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = TraceStore(path)
    store.record(kind="attempt", model="m", status="ok")
    store.flush()  # rows are written by the background thread; this one before the lock
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    store.record(kind="attempt", model="m", status="ok", response="kept")  # batched
    with pytest.warns(RuntimeWarning, match="not writable"):
        store.flush()
    assert store.pending == 1
    locker.execute("ROLLBACK")
    locker.close()
    store.record(kind="attempt", model="m", status="ok")
    store.flush()
    assert store.pending == 0
    assert len(store.query()) == 3


def test_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    store = TraceStore(tmp_path / "dir.db")
    with pytest.warns(RuntimeWarning):
        store.record(kind="attempt", model="m", status="ok")
    assert store.pending == 1


def test_batched_rows_are_flushed_by_the_background_thread(tmp_path: Path) -> None:
    import time

    store = TraceStore(tmp_path / "t.db", flush_interval=0.05)
    for i in range(20):
        store.record(kind="attempt", model="m", status="ok", attempt=i)
    deadline = time.time() + 5
    while store.pending and time.time() < deadline:
        time.sleep(0.01)
    assert store.pending == 0
    rows = sqlite3.connect(tmp_path / "t.db").execute("SELECT count(*) FROM traces").fetchone()
    assert rows == (20,)


def test_the_writer_waits_for_a_burst_of_rows_to_pause_but_not_for_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid answering from the cache records thousands of rows a second; the writer holds
    the GIL while it encodes them, so it writes them when the burst pauses. An error row is
    written at once; a query always sees every row recorded before it."""
    import threading
    import time

    import labkit.tracing as tracing

    monkeypatch.setattr(tracing, "SETTLE_GAP", 0.3)  # wide margins for a loaded machine
    monkeypatch.setattr(tracing, "SETTLE_MAX", 30.0)
    store = TraceStore(tmp_path / "t.db", flush_interval=0.05)
    db = sqlite3.connect(tmp_path / "t.db")

    def stored() -> int:
        try:
            return int(db.execute("SELECT count(*) FROM traces").fetchone()[0])
        except sqlite3.OperationalError:  # the writer has not created the table yet
            return 0

    stop = threading.Event()

    def burst() -> None:
        while not stop.is_set():
            store.record(kind="cache_hit", model="m", status="hit")
            time.sleep(0.01)

    feeder = threading.Thread(target=burst)
    feeder.start()
    try:
        time.sleep(1.0)
        assert stored() == 0 and store.pending > 50  # still coming: nothing written yet
        store.record(kind="attempt", model="m", status="error", error_type="RateLimited")
        deadline = time.monotonic() + 10
        while stored() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stored() > 50  # the error row took the queue with it, mid-burst
    finally:
        stop.set()
        feeder.join()
    deadline = time.monotonic() + 10
    while store.pending and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.pending == 0  # the burst paused: written without anyone asking
    written = stored()
    store.record(kind="cache_hit", model="m", status="hit")
    assert len(store.query(limit=None)) == written + 1  # a query flushes first
    store.close()


def test_prompts_are_redacted_in_every_shape(tmp_path: Path) -> None:
    """Message lists (memoised or not) and plain-string prompts all reach the disk redacted."""
    store = TraceStore(tmp_path / "t.db")
    secret = "mail bob@example.com or call +1 415 555 0100"
    prompts: list[Any] = [
        [{"role": "user", "content": secret}],
        [{"role": "user", "content": secret}],  # the memoised path
        [{"role": "user", "content": [{"type": "text", "text": secret}]}],
        secret,
    ]
    for prompt in prompts:
        store.record(kind="attempt", call_id=new_id(), prompt=prompt)
    store.flush()
    stored = store.query()["prompt"].tolist()
    assert len(stored) == 4 and sum(isinstance(v, str) for v in stored) == 1
    for value in stored:
        text = json.dumps(value)
        assert "bob@example.com" not in text and "555 0100" not in text
        assert "[EMAIL]" in text and "[PHONE]" in text
    store.close()
