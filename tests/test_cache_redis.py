"""The shared cache on a real redis-server (Debian's, installed by `make test`), started by
the test on a free loopback port: same keys and JSON values as diskcache, two processes
sharing answers, TTL expiry, and a Redis that dies mid-grid costing misses, never calls."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port

from labkit.cache import Cache
from labkit.cache_stores import CacheConfig, RedisCache
from labkit.client import Client
from labkit.errors import ConfigError
from labkit.experiments import Experiment
from labkit.models import Registry
from labkit.testing import FakeOpenAIServer
from labkit.types import Completion, Usage

redis = pytest.importorskip("redis", reason="the redis client: pip install 'labkit[redis]'")

MODEL = "openai/gpt-4o-mini-2024-07-18"
KEY = "sk-test-redis-SECRET-0123456789"
REDIS = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)  # fmt: skip


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 (no persistence), stopped by the fixture."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def raw(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS is None:
        pytest.skip("redis-server is not installed (make test installs Debian's redis-server)")
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    monkeypatch.setenv("LABKIT_TEST_KEY", KEY)
    with FakeOpenAIServer(reply=lambda b: f"echo: {b['messages'][-1]['content']}", max_lifetime=120) as server:  # fmt: skip
        yield server


# Capabilities and prices given, so no process here waits for litellm's import.
CAPS = {"context_window": 128000, "max_output_tokens": 16384, "json_mode": True,
        "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07}  # fmt: skip


def _registry(server: FakeOpenAIServer) -> Registry:
    return Registry(
        models={MODEL: {"api_base": server.url, "api_key_env": "LABKIT_TEST_KEY", **CAPS}},
        policy={"retry": {"max_attempts": 1}},
    )


def _done(text: str = "hello") -> Completion:
    return Completion(text=text, model="m/x", usage=Usage(prompt_tokens=3, completion_tokens=1))


def test_same_keys_and_json_values_as_diskcache(redis_server: RedisServer, tmp_path: Path) -> None:
    disk, shared = Cache(tmp_path / "c"), RedisCache(redis_server.url)
    disk.set("k" * 64, _done())
    shared.set("k" * 64, _done())
    raw = redis_server.raw().get("labkit:" + "k" * 64)
    assert raw is not None and raw.decode() == disk._open().get("k" * 64)  # byte for byte
    assert json.loads(raw)["text"] == "hello"
    got = shared.get("k" * 64)
    assert got is not None and got.text == "hello" and got.usage.prompt_tokens == 3
    assert "k" * 64 in shared and len(shared) == 1
    assert shared.clear() == 1 and shared.get("k" * 64) is None
    disk.close()
    shared.close()


def test_a_planted_pickle_is_a_logged_miss_and_never_runs(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, (f"touch {marker}",))

    redis_server.raw().set("labkit:evil", pickle.dumps(Boom()))
    shared = RedisCache(redis_server.url)
    with caplog.at_level(logging.WARNING, logger="labkit.cache"):
        assert shared.get("evil") is None
    assert not marker.exists() and "unreadable" in caplog.text


def test_two_processes_share_answers(
    redis_server: RedisServer, loopback: FakeOpenAIServer, tmp_path: Path
) -> None:
    """The second process pays for nothing the first already asked (counted on the server)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from labkit.client import Client
        from labkit.models import Registry
        reg = Registry(models={{{MODEL!r}: {{"api_base": {loopback.url!r},
                                            "api_key_env": "LABKIT_TEST_KEY", **{CAPS!r}}}}})
        client = Client(registry=reg, cache={redis_server.url!r}, traces=sys.argv[1])
        hits = [client.generate(q, model={MODEL!r}, max_tokens=20).cache_hit
                for q in sys.argv[2:]]
        client.close()
        print(json.dumps(hits))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "LABKIT_TEST_KEY": KEY}

    def run(name: str, *questions: str) -> list[bool]:
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"{name}.db"), *questions],
            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        hits: list[bool] = json.loads(out.stdout.strip().splitlines()[-1])
        return hits

    asked = [f"question {i}" for i in range(5)]
    assert run("first", *asked) == [False] * 5
    assert loopback.count == 5
    assert run("second", *asked, "new one") == [True] * 5 + [False]
    assert loopback.count == 6  # only the new question was paid for
    # keys are hashes under the prefix; no key, URL or prompt in any key or value
    raw = redis_server.raw()
    keys = [k.decode() for k in raw.keys("*")]
    assert len(keys) == 6 and all(k.startswith("labkit:") and len(k) == 7 + 64 for k in keys)
    for k in keys:
        assert KEY not in k and KEY not in raw.get(k).decode()


def test_ttl_expires_entries(redis_server: RedisServer, loopback: FakeOpenAIServer, tmp_path: Path) -> None:  # fmt: skip
    client = Client(registry=_registry(loopback), cache=redis_server.url, cache_ttl=1.0,
                    traces=tmp_path / "t.db")  # fmt: skip
    client.generate("short-lived", model=MODEL, max_tokens=10)
    assert client.generate("short-lived", model=MODEL, max_tokens=10).cache_hit
    (key,) = redis_server.raw().keys("labkit:*")
    assert 0 < redis_server.raw().pttl(key) <= 1000  # Redis itself expires it
    deadline = time.monotonic() + 10
    while redis_server.raw().exists(key) and time.monotonic() < deadline:
        time.sleep(0.1)
    again = client.generate("short-lived", model=MODEL, max_tokens=10)
    assert not again.cache_hit and loopback.count == 2
    client.close()


def test_diskcache_ttl_too(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c", ttl=0.2)
    cache.set("k", _done())
    assert cache.get("k") is not None
    time.sleep(0.4)
    assert cache.get("k") is None
    cache.close()


def test_redis_killed_mid_grid_costs_misses_not_calls(
    redis_server: RedisServer, loopback: FakeOpenAIServer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    loopback.latency = 0.02
    client = Client(registry=_registry(loopback), cache=redis_server.url, traces=tmp_path / "t.db")
    items = [{"id": f"i{i}", "q": f"item {i}"} for i in range(40)]
    warm = Experiment(items[:10], {"p": "Answer: {{q}}"}, [MODEL], client=client, concurrency=2)
    warm.run(progress=False)
    assert loopback.count == 10

    def kill_soon() -> None:
        while loopback.count < 20:
            time.sleep(0.005)
        redis_server.kill()

    killer = threading.Thread(target=kill_soon)
    killer.start()
    exp = Experiment(items, {"p": "Answer: {{q}}"}, [MODEL], client=client, concurrency=2)
    with caplog.at_level(logging.WARNING, logger="labkit.cache"):
        df = exp.run(progress=False).df
    killer.join(10)
    assert redis_server.proc is not None and redis_server.proc.poll() is not None  # it died
    assert len(df) == 40 and df["error"].isna().all()  # every call answered
    assert df["cache_hit"].sum() >= 10  # the warm ones came from Redis before it died
    assert loopback.count == 40  # nothing paid twice, nothing lost
    # one warning for the outage, not one per call; it names the store and says calls go on
    outage = [r for r in caplog.records if "failed on" in r.getMessage()]
    assert 1 <= len(outage) <= 3 and "calls go on uncached" in outage[0].getMessage()
    # while it is down, lookups skip the network (cool-down): no stall per call
    assert client.cache is not None and client.cache.get("anything") is None
    client.close()


def test_dead_redis_from_the_start_never_fails_a_call(
    loopback: FakeOpenAIServer, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    client = Client(registry=_registry(loopback), cache=url, traces=tmp_path / "t.db")
    for i in range(3):
        assert client.generate(f"q{i}", model=MODEL, max_tokens=5).text.startswith("echo")
    assert loopback.count == 3
    store = client.cache
    assert isinstance(store, RedisCache) and store._failures == 1  # then the cool-down
    client.close()


def test_password_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:hunter2-very-secret@127.0.0.1:{free_port()}/0"
    store = RedisCache(url)
    assert "hunter2" not in repr(store)
    with caplog.at_level(logging.WARNING, logger="labkit.cache"):
        assert store.get("x") is None
    assert "hunter2" not in caplog.text and "127.0.0.1" in caplog.text


def test_cache_setting_in_labkit_yaml(redis_server: RedisServer, tmp_path: Path) -> None:
    path = tmp_path / "labkit.yaml"
    path.write_text(f"cache: {{url: '{redis_server.url}', ttl: 60, prefix: 'team:'}}\n")
    client = Client(registry=path, traces=tmp_path / "t.db")
    assert isinstance(client.cache, RedisCache) and client.cache.ttl == 60
    assert client.cache.prefix == "team:"
    client.close()
    path.write_text(f"cache: {redis_server.url}\n")
    client = Client(registry=path, traces=tmp_path / "t.db")
    assert isinstance(client.cache, RedisCache) and client.cache.prefix == "labkit:"
    client.close()
    # an explicit argument wins over the file
    client = Client(registry=path, cache_dir=tmp_path / "c", traces=tmp_path / "t.db")
    assert isinstance(client.cache, Cache)
    client.close()
    path.write_text("cache: {url: 'http://example.com', ttl: 1}\n")
    with pytest.raises(ConfigError, match="not a Redis URL"):
        Client(registry=path, traces=tmp_path / "t.db")
    path.write_text("cache: {url: 'redis://x', tll: 1}\n")
    with pytest.raises(ConfigError, match="tll"):
        Client(registry=path, traces=tmp_path / "t.db")
    assert CacheConfig.parse("redis://h:1/0").url == "redis://h:1/0"
    assert CacheConfig.parse("some/folder").dir == "some/folder"
