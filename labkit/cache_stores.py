"""Where the completion cache lives: a diskcache folder (the default) or a shared Redis.

Both stores keep the same thing under the same key: `cache.key_for`'s SHA-256 hex digest (a
hash of the pinned model, messages and output parameters, never a key or a URL) mapped to the
JSON text of `cache.encode_entry`. Nothing read back is ever unpickled: Redis returns bytes,
which are decoded as UTF-8 JSON and validated, so a planted pickle is a corrupt entry.

Why Redis: a team tuning the same prompts pays once for each call. A second machine pointed at
the same Redis gets the first one's answers as cache hits.

A Redis that is down, slow or unreachable must not stall a grid: sockets time out after
`timeout` seconds (0.25 by default on loopback or a LAN), the failure is logged once, and for
`retry_after` seconds every lookup is a miss without touching the network (the call goes on and
pays for itself, as after a corrupt entry). Then the next call tries Redis again.

The password goes in the URL (`redis://:pw@host`) or, better, an environment variable named by
`password_env`; either way it is registered as a secret, so no log line or error shows it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from .cache import Cache, encode_entry, read_entry, unreadable
from .errors import ConfigError
from .redact import add_secret
from .types import Completion

__all__ = ["CacheConfig", "CacheStore", "RedisCache", "cache_store", "open_cache"]

log = logging.getLogger("labkit.cache")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


@runtime_checkable
class CacheStore(Protocol):
    """What the call path needs from a cache: string keys, `Completion` values. A read that
    fails for any reason returns None (a logged miss); a write that fails is logged."""

    def get(self, key: str) -> Completion | None: ...

    def set(self, key: str, completion: Completion) -> None: ...

    def get_texts(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored JSON text of every key present, in as few round trips as the store
        allows (a cached grid resolves its hits this way)."""
        ...

    def decode(self, key: str, blob: Any) -> Completion | None:
        """A text from `get_texts` back to a `Completion`; a corrupt one is a logged miss."""
        ...

    def set_many(self, items: Sequence[tuple[str, Completion | str]]) -> list[Exception | None]:
        """Store several entries at once (a str is JSON text already built); per item, None or
        the error that kept it out."""
        ...

    def delete(self, key: str) -> bool: ...

    def clear(self) -> int: ...

    def close(self) -> None: ...


class CacheConfig(BaseModel):
    """The `cache:` section of `labkit.yaml` (or `Client(cache=CacheConfig(...))`). A plain
    string there is taken as `url` when it starts with redis://, rediss:// or unix://, else as
    `dir`."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    """A Redis URL, e.g. "redis://cache.internal:6379/0". Put no password here in a shared
    file: use `password_env`."""
    dir: str | None = None
    """A diskcache folder (the default store, ".labkit/cache")."""
    ttl: float | None = Field(None, gt=0)
    """Seconds an entry lives; None keeps it until evicted (diskcache: by size; Redis: by its
    own `maxmemory-policy`)."""
    prefix: str = "labkit:"
    """Redis only: put before every key, so several projects can share one database."""
    password_env: str | None = None
    """Redis only: name of the environment variable holding the password."""
    timeout: float = Field(0.25, gt=0)
    """Redis only: connect and read timeout in seconds; a dead Redis costs at most this once."""
    retry_after: float = Field(5.0, ge=0)
    """Redis only: after a failure, lookups are misses without a network round trip for this
    many seconds."""

    @classmethod
    def parse(cls, value: Any, where: str = "cache") -> CacheConfig:
        """From a labkit.yaml value or a `Client(cache=...)` argument."""
        if isinstance(value, CacheConfig):
            return value
        if isinstance(value, str | Path):
            text = str(value)
            if _is_redis(text):
                return cls(url=text)
            return cls(dir=text)
        if isinstance(value, Mapping):
            from .models import _validate

            cfg: CacheConfig = _validate(cls, dict(value), where)
            if cfg.url is not None and not _is_redis(cfg.url):
                raise ConfigError(
                    f"cache url {display_url(cfg.url)!r} is not a Redis URL; use "
                    "redis://host:port/db (or rediss:// for TLS), or `dir:` for a folder",
                    where=where,
                )
            if cfg.url is not None and cfg.dir is not None:
                raise ConfigError("give either `url` (Redis) or `dir` (a folder)", where=where)
            return cfg
        raise ConfigError(
            f"expected a Redis URL, a folder or a mapping, got {type(value).__name__}",
            where=where,
        )


def _is_redis(text: str) -> bool:
    return text.split("://", 1)[0].lower() in _REDIS_SCHEMES and "://" in text


def display_url(url: str) -> str:
    """`url` with any password replaced by ***, for messages and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = parts.username or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def cache_store(value: Any, *, ttl: float | None = None, where: str = "cache") -> CacheStore | None:
    """The store for `Client(cache=...)` or labkit.yaml's `cache:`: None or False is no cache,
    a store is used as it is, anything else is read by `CacheConfig.parse`; `ttl` overrides
    the configured one."""
    if value is None or value is False:
        return None
    if isinstance(value, CacheStore) and not isinstance(value, str | Path | Mapping):
        if ttl is not None and hasattr(value, "ttl"):
            value.ttl = ttl
        return value
    cfg = CacheConfig.parse(value, where)
    if ttl is not None:
        cfg = cfg.model_copy(update={"ttl": ttl})
    return open_cache(cfg)


def open_cache(cfg: CacheConfig, default_dir: str | Path = ".labkit/cache") -> CacheStore:
    """The store `cfg` names: Redis for a URL, else diskcache in `cfg.dir` (or `default_dir`)."""
    if cfg.url is not None:
        return RedisCache(
            cfg.url,
            ttl=cfg.ttl,
            prefix=cfg.prefix,
            password_env=cfg.password_env,
            timeout=cfg.timeout,
            retry_after=cfg.retry_after,
        )
    return Cache(cfg.dir or default_dir, ttl=cfg.ttl)


class RedisCache:
    """A completion cache shared through Redis (same keys and JSON values as `Cache`)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        ttl: float | None = None,
        prefix: str = "labkit:",
        password_env: str | None = None,
        timeout: float = 0.25,
        retry_after: float = 5.0,
    ) -> None:
        if not _is_redis(url):
            raise ConfigError(f"{display_url(url)!r} is not a Redis URL (redis://host:port/db)")
        self.url = url
        self.ttl = ttl
        self.prefix = prefix
        self.timeout = timeout
        self.retry_after = retry_after
        self.password_env = password_env
        add_secret(urlsplit(url).password)
        self._client: Any = None
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._failures = 0
        """Failed Redis operations so far (each a logged miss or a dropped write)."""

    def __repr__(self) -> str:
        return f"RedisCache({display_url(self.url)!r}, ttl={self.ttl}, prefix={self.prefix!r})"

    def _redis(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        import redis
                        from redis.backoff import NoBackoff
                        from redis.retry import Retry
                    except ImportError as exc:
                        raise ConfigError(
                            "a Redis cache needs the redis client: pip install 'labkit[redis]'"
                        ) from exc
                    password = None
                    if self.password_env:
                        password = os.environ.get(self.password_env)
                        add_secret(password)
                    # No retries inside redis-py: its default retries with backoff would make
                    # a dead Redis cost seconds per call; labkit's own cool-down covers it.
                    self._client = redis.Redis.from_url(
                        self.url,
                        password=password,
                        socket_timeout=self.timeout,
                        socket_connect_timeout=self.timeout,
                        retry=Retry(NoBackoff(), 0),
                        retry_on_timeout=False,
                    )
        return self._client

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self._failures += 1
        first = self._available()
        self._down_until = time.monotonic() + self.retry_after
        if first:  # once per outage: a grid of a thousand calls logs one line, not a thousand
            log.warning(
                "labkit cache: Redis at %s failed on %s (%s: %s); calls go on uncached, "
                "retrying Redis in %.3g s",
                display_url(self.url),
                what,
                type(exc).__name__,
                exc,
                self.retry_after,
            )

    def get(self, key: str) -> Completion | None:
        """The stored completion, or None: a miss, a corrupt entry or Redis unreachable (both
        logged); never raises."""
        if not self._available():
            return None
        try:
            blob = self._redis().get(self.prefix + key)
        except Exception as exc:  # connection refused, timeout, auth, OOM: all a miss
            self._failed("read", exc)
            return None
        return read_entry(key, blob)

    def set(self, key: str, completion: Completion) -> None:
        """Store `completion` (expiring after `ttl` s); a failed write is logged, never raised:
        the caller already has its answer."""
        if not self._available():
            return
        blob = encode_entry(completion).encode("utf-8")
        ms = None if self.ttl is None else max(1, round(self.ttl * 1000))
        try:
            self._redis().set(self.prefix + key, blob, px=ms)
        except Exception as exc:
            self._failed("write", exc)

    def get_texts(self, keys: Sequence[str]) -> dict[str, str]:
        """One MGET per 500 keys; Redis unreachable is all misses (logged once)."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        if not self._available():
            return found
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            try:
                values = self._redis().mget([self.prefix + k for k in part])
            except Exception as exc:
                self._failed("read", exc)
                return found
            for key, value in zip(part, values, strict=True):
                if value is None:
                    continue
                try:
                    found[key] = value.decode("utf-8") if isinstance(value, bytes) else value
                except UnicodeDecodeError as exc:
                    unreadable(key, exc)
        return found

    def decode(self, key: str, blob: Any) -> Completion | None:
        return read_entry(key, blob)

    def set_many(self, items: Sequence[tuple[str, Completion | str]]) -> list[Exception | None]:
        """One pipeline for all. A failed write is logged and counted, as `set` does, and not
        reported per item: the callers already have their answers, and a shared cache that is
        down must not fail their calls."""
        errors: list[Exception | None] = [None] * len(items)
        if not self._available() or not items:
            return errors
        ms = None if self.ttl is None else max(1, round(self.ttl * 1000))
        try:
            pipe = self._redis().pipeline(transaction=False)
            for key, value in items:
                blob = value if isinstance(value, str) else encode_entry(value)
                pipe.set(self.prefix + key, blob.encode("utf-8"), px=ms)
            pipe.execute()
        except Exception as exc:
            self._failed("write", exc)
        return errors

    def delete(self, key: str) -> bool:
        return bool(self._redis().delete(self.prefix + key))

    def _keys(self) -> list[Any]:
        return list(self._redis().scan_iter(match=self.prefix + "*", count=1000))

    def clear(self) -> int:
        """Delete every entry under this store's prefix (and nothing else); returns how many."""
        keys = self._keys()
        for i in range(0, len(keys), 500):
            self._redis().unlink(*keys[i : i + 500])
        return len(keys)

    def __len__(self) -> int:
        return len(self._keys())

    def __contains__(self, key: str) -> bool:
        return bool(self._redis().exists(self.prefix + key))

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                log.debug("labkit cache: closing the Redis connection failed", exc_info=True)
            self._client = None
