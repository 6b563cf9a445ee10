from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path

import pytest

from labkit.cache import Cache, cache_key
from labkit.types import Completion, Request, Usage


def _req(**kw: object) -> Request:
    base: dict[str, object] = {
        "model": "openai/gpt-4o-mini-2024-07-18",
        "messages": [{"role": "user", "content": "hi"}],
        "params": {"temperature": 0.0},
    }
    base.update(kw)
    return Request(**base)  # type: ignore[arg-type]


def test_key_covers_everything_that_changes_output() -> None:
    k = cache_key(_req())
    assert cache_key(_req()) == k
    assert cache_key(_req(model="openai/gpt-4o-2024-08-06")) != k
    assert cache_key(_req(messages=[{"role": "user", "content": "hi!"}])) != k
    assert cache_key(_req(params={"temperature": 0.7})) != k
    assert cache_key(_req(sample=1)) != k
    assert cache_key(_req(json_schema={"type": "object"})) != k
    assert cache_key(_req(json_mode=True)) != k


def test_key_ignores_transport_and_never_sees_secrets() -> None:
    k = cache_key(_req())
    secret = "sk-proj-SECRETSECRETSECRET123"
    req = _req(transport={"api_key": secret, "timeout": 3, "api_base": "http://127.0.0.1:1"})
    assert cache_key(req) == k
    # Unknown / transport-ish params smuggled into params do not reach the key either.
    assert cache_key(_req(params={"temperature": 0.0, "api_key": secret, "timeout": 9})) == k


def test_values_are_json_text_never_pickle(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    done = Completion(text="hello", model="m/x", usage=Usage(prompt_tokens=3, completion_tokens=1))
    cache.set("k1", done)
    got = cache.get("k1")
    assert got is not None and got.text == "hello" and got.usage.prompt_tokens == 3
    cache.close()
    rows = (
        sqlite3.connect(tmp_path / "c" / "cache.db")
        .execute("SELECT key, mode, value FROM Cache")
        .fetchall()
    )
    assert len(rows) == 1
    key, mode, value = rows[0]
    assert key == "k1" and isinstance(value, str) and value.startswith("{")
    assert mode != 4  # diskcache MODE_PICKLE


def test_corrupt_entry_is_a_logged_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(tmp_path / "c")
    cache._open().set("bad", "{not json")
    import diskcache

    with diskcache.Cache(str(tmp_path / "c")) as plain:  # labkit's own store refuses non-text
        plain.set("wrong", 12345)
    with caplog.at_level(logging.WARNING, logger="labkit.cache"):
        assert cache.get("bad") is None
        assert cache.get("wrong") is None
    assert "treated as a miss" in caplog.text


def test_entries_round_trip_odd_text_non_finite_numbers_and_known_keys(tmp_path: Path) -> None:
    from labkit.redact import add_secret

    secret = "configured-key-" + "q7" * 10
    add_secret(secret)
    cache = Cache(tmp_path / "c")
    cases = {
        "surrogate": Completion(text="half \ud83d of an emoji", model="m"),
        "unicode": Completion(text='é 😀 \u2028 \x00 "q" \\', model="m", raw={"t": "ü"}),
        "non-finite": Completion(
            text="x", model="m", latency_s=float("inf"), raw={"n": float("nan"), "m": -1e-300}
        ),
        "keys": Completion(text=f"echo {secret}", model="m", raw={"k": secret}),
    }
    for name, done in cases.items():
        cache.set(name, done)
        got = cache.get(name)
        assert got is not None, name
        want = done.model_dump(exclude={"raw"})
        have = got.model_dump(exclude={"raw"})
        if name == "keys":
            assert secret not in repr(have) + repr(got.raw), name
            assert got.text == "echo [API_KEY]" and got.raw == {"k": "[API_KEY]"}
            continue
        if name == "non-finite":
            assert math.isinf(got.latency_s) and math.isnan(got.raw["n"])
            assert got.raw["m"] == -1e-300
            continue
        assert have == want and got.raw == done.raw, name
    cache.close()
