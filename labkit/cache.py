"""Completion cache on diskcache, with JSON values (never pickle) and explicit keys.

The key hashes exactly what changes the output: the pinned model id, the messages, the
output-affecting parameters (`types.OUTPUT_PARAMS`), the JSON schema and JSON mode, and the
sample index. Left out on purpose: timeouts, retry settings, concurrency, api_base and API keys
(transport, not content), run/item ids and the alias (two aliases that resolve to the same
pinned model share answers).

Nothing read from the cache is ever unpickled: diskcache is opened with `_JSONOnlyDisk`, which
stores strings only and refuses, on read, any row diskcache would unpickle (a planted pickle is
a corrupt entry: a logged miss, its code never runs) or any file path outside the cache folder.
The folder is created owner-only (0700) and its files 0600: they hold prompts and replies.
Replies are stored verbatim (that is what a cache replays) except API keys, which the call
path scrubs before storing; other PII in prompts and replies stays in this owner-only store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._files import private_dir, private_file
from .redact import scrub_secrets
from .types import OUTPUT_PARAMS, Completion, Message, Request

__all__ = ["KEY_VERSION", "Cache", "cache_key", "decode_entry", "encode_entry", "key_for"]

log = logging.getLogger("labkit.cache")
KEY_VERSION = 1


def cache_key(request: Request) -> str:
    return key_for(
        request.model,
        request.messages,
        request.params,
        request.json_schema,
        request.json_mode,
        request.sample,
    )


def key_for(
    model: str,
    messages: list[Message],
    params: Mapping[str, Any],
    json_schema: Mapping[str, Any] | None,
    json_mode: bool,
    sample: int,
) -> str:
    """The key from its parts (the hot path builds no Request for it)."""
    payload = {
        "v": KEY_VERSION,
        "model": model,
        "messages": messages,
        "params": {k: v for k, v in params.items() if k in OUTPUT_PARAMS},
        "schema": json_schema,
        "json_mode": json_mode,
        "sample": sample,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: a prompt with a lone surrogate still gets a key (same bytes as before for
    # every other text).
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


_MODE_RAW = 1  # diskcache.core.MODE_RAW: a value kept inline in its row
# Keys bound per query: under SQLite's oldest variable limit (999), so a grid's chunk of 256
# calls (answers and parse results) is one query.
_KEYS_PER_QUERY = 900
# An inline text row as `diskcache.Cache.set(key, value, expire=ttl)` writes it (no tag, size 0,
# MODE_RAW); the update path fires diskcache's size trigger, the insert path its count trigger.
_UPSERT = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size,"
    " mode, filename, value) VALUES (?, 1, ?, ?, ?, 0, NULL, 0, 1, NULL, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " expire_time = excluded.expire_time, access_time = excluded.access_time, access_count = 0,"
    " tag = NULL, size = 0, mode = 1, filename = NULL, value = excluded.value"
)


# One result row for a whole batch of keys: fetching row by row lets go of the GIL at every
# row, and each time taking it back behind a busy thread (the trace writer) can cost a switch
# interval. The row is the count and the keys and values joined by the unit separator (JSON
# text never holds a raw control character; a value that does changes the count, and that
# batch is read key by key). Inline text rows come with their value; any other row (a value
# in a file, a value that is not text) with the record separator, and then goes through
# diskcache and `_JSONOnlyDisk`. 4,000 keys: 18 ms, against 43 ms with `json_group_array`,
# which escaped every value and had Python parse it all back.
_GET_TEXTS = (
    f"SELECT count(*), group_concat(key || char(31) || CASE WHEN mode = {_MODE_RAW} AND"
    " filename IS NULL AND typeof(value) = 'text' THEN value ELSE char(30) END, char(31))"
    " FROM Cache WHERE raw = 1 AND key IN ({}) AND (expire_time IS NULL OR expire_time > ?)"
)


def encode_entry(completion: Completion, parsed: str | None = None) -> str:
    """The JSON text every cache store keeps for `completion` (diskcache and Redis alike), with
    API keys scrubbed (as the call path already did for fresh replies: a hit must match them).
    Written by pydantic (a quarter of the time of `json.dumps` over `model_dump`'s dict, which
    was the largest part of a grid call's cache write). `parsed` is JSON text kept as the
    entry's `parsed` field (the call path's parse record, see `_parse_cache`); a completion's
    own `parsed` is per call and never stored."""
    text = completion.to_cache()
    if parsed is not None:
        text = f'{text[:-1]},"parsed":{parsed}}}'
    return scrub_secrets(text, pairs=False)


def decode_entry(blob: Any) -> Completion:
    """A stored entry back to a `Completion`: JSON text (or its UTF-8 bytes) only; anything
    else raises, and the store treats it as a corrupt entry."""
    if isinstance(blob, bytes):
        blob = blob.decode("utf-8")
    if not isinstance(blob, str):
        raise TypeError(f"expected a JSON string, found {type(blob).__name__}")
    try:
        return Completion.model_validate_json(blob)
    except ValueError:  # lone surrogates are stored \u-escaped; only json reads them
        return Completion.model_validate(json.loads(blob))


def unreadable(key: str, exc: BaseException) -> None:
    """Log an entry a store could not read (corrupt, or the store unreachable): a miss."""
    log.warning("labkit cache: entry %s… is unreadable (%s); treated as a miss", key[:12], exc)


def read_entry(key: str, blob: Any) -> Completion | None:
    """`decode_entry` for a store's read path: None stays a miss, a corrupt entry is a logged
    miss, never an exception."""
    if blob is None:
        return None
    try:
        return decode_entry(blob)
    except Exception as exc:
        unreadable(key, exc)
        return None


class CorruptEntry(Exception):
    """A cache row labkit will not read (pickled, not text, or pointing outside the folder)."""


def _safe_disk() -> type[Any]:
    """diskcache's `Disk` narrowed to JSON text (built lazily: diskcache loads on first use)."""
    import diskcache

    class _JSONOnlyDisk(diskcache.Disk):
        def put(self, key: Any) -> Any:
            if not isinstance(key, str):
                raise TypeError("labkit's cache keys are strings")
            return super().put(key)

        def get(self, key: Any, raw: bool) -> Any:
            if not raw:
                raise CorruptEntry("a pickled key")
            return super().get(key, raw)

        def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
            if not isinstance(value, str) or read:
                raise TypeError("labkit's cache stores JSON text only")
            return super().store(value, read, key)

        def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
            if mode not in (diskcache.core.MODE_RAW, diskcache.core.MODE_TEXT):
                raise CorruptEntry(f"storage mode {mode} (only JSON text is read; pickle never)")
            if filename is not None:
                self._inside(filename)
            return super().fetch(mode, filename, value, read)

        def remove(self, file_path: Any) -> None:
            self._inside(file_path)
            super().remove(file_path)

        def _write(self, full_path: str, iterator: Any, mode: str, encoding: Any = None) -> Any:
            size = super()._write(full_path, iterator, mode, encoding)
            os.chmod(full_path, 0o600)
            return size

        def _inside(self, filename: Any) -> None:
            root = os.path.realpath(self._directory)
            full = os.path.realpath(os.path.join(root, str(filename)))
            if os.path.commonpath([root, full]) != root:
                raise CorruptEntry("a value file outside the cache folder")

    return _JSONOnlyDisk


class Cache:
    """Persistent completion store. String keys and JSON string values, so diskcache stores
    them as plain SQLite text and never unpickles anything read from disk."""

    def __init__(
        self,
        directory: str | Path = ".labkit/cache",
        size_limit: int = 2**31,
        ttl: float | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.size_limit = size_limit
        self.ttl = ttl
        """Seconds an entry lives (None: until evicted by size)."""
        self._store: Any = None
        # Characters written since the size was last checked; starting at the limit makes the
        # first write check, so a store opened over its limit is culled at once.
        self._unchecked = size_limit

    def _open(self) -> Any:
        if self._store is None:
            import diskcache

            private_dir(self.directory)
            for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
                if name == "cache.db" or (self.directory / name).exists():
                    private_file(self.directory / name)
            self._store = diskcache.Cache(
                str(self.directory), size_limit=self.size_limit, disk=_safe_disk()
            )
        return self._store

    def get(self, key: str) -> Completion | None:
        """The stored completion, or None. A corrupt entry is a logged miss, never a crash."""
        try:
            blob = self._open().get(key)
        except Exception as exc:
            unreadable(key, exc)
            return None
        return self.decode(key, blob)

    def decode(self, key: str, blob: Any) -> Completion | None:
        """The completion stored as `blob` (from `get_texts`); a corrupt one is a logged miss."""
        return read_entry(key, blob)

    def get_texts(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored JSON text of every key present, in one SQLite query per 900 keys instead
        of one round trip each (a cached grid resolves its hits this way). Only rows diskcache
        keeps inline as text are read directly; any other row (a large value in a file, or a
        row that is not text) goes through `diskcache.get` and `_JSONOnlyDisk`, so the same
        refusals apply. Same answers as `get` key by key."""
        store = self._open()
        found: dict[str, str] = {}
        others: list[str] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _KEYS_PER_QUERY):
            part = unique[start : start + _KEYS_PER_QUERY]
            try:
                ((count, blob),) = store._sql(
                    _GET_TEXTS.format(",".join("?" * len(part))), (*part, time.time())
                ).fetchall()
                fields = blob.split("\x1f") if count else []
                if len(fields) != 2 * count:
                    raise ValueError("a separator inside a key or value")
            except Exception:  # that, or an unexpected schema: key by key
                others.extend(part)
                continue
            for key, value in zip(fields[::2], fields[1::2], strict=True):
                if value != "\x1e":
                    found[key] = value
                else:
                    others.append(key)
        for key in others:
            try:
                value = store.get(key)
            except Exception as exc:
                unreadable(key, exc)
                continue
            if value is not None:
                found[key] = value
        return found

    def set(self, key: str, completion: Completion) -> None:
        self._open().set(key, encode_entry(completion), expire=self.ttl)

    def set_many(self, items: Sequence[tuple[str, Completion | str]]) -> list[Exception | None]:
        """Store several completions in one SQLite transaction; per item, None or the error
        that kept it out. One commit costs more than the rows it carries, so the call path
        groups the answers that finish together (each caller still waits for the commit: a
        paid answer is on disk before its call returns). A failing batch is retried item by
        item, so one bad entry never costs the others theirs."""
        store = self._open()
        errors: list[Exception | None] = [None] * len(items)
        blobs: list[str | None] = []
        for i, (_, value) in enumerate(items):
            try:  # a str is an entry the call path encoded already (`encode_entry`)
                blobs.append(value if isinstance(value, str) else encode_entry(value))
            except Exception as exc:
                blobs.append(None)
                errors[i] = exc
        try:
            with store.transact():
                self._write_rows(store, [(k, b) for (k, _), b in zip(items, blobs, strict=True)])
            # What diskcache's own `set` does after each write, once per 1/64 of the limit
            # written: the size query cost a fifth of a grid's small commits.
            self._unchecked += sum(len(b) for b in blobs if b is not None)
            if self._unchecked * 64 >= store.size_limit:
                self._unchecked = 0
                if store.volume() > store.size_limit:
                    store.cull()
            return errors
        except Exception:
            pass
        for i, ((key, _), blob) in enumerate(zip(items, blobs, strict=True)):
            if blob is not None:
                try:
                    store.set(key, blob, expire=self.ttl)
                except Exception as exc:
                    errors[i] = exc
        return errors

    def _write_rows(self, store: Any, rows: list[tuple[str, str | None]]) -> None:
        """Write text values inside the caller's transaction: short ones (kept inline, as
        diskcache keeps them) with one upsert statement for all, the rest, and any key whose
        old value lives in a file (it must be removed), through `diskcache.set`. diskcache's
        triggers keep its count and size; its per-`set` statements (look-up, insert, cull
        check) were most of a grid call's cache cost."""
        inline = [(k, b) for k, b in rows if b is not None and len(b) < store.disk_min_file_size]
        filed: set[str] = set()
        for start in range(0, len(inline), _KEYS_PER_QUERY):
            part = [k for k, _ in inline[start : start + _KEYS_PER_QUERY]]
            filed.update(
                r[0]
                for r in store._sql(
                    "SELECT key FROM Cache WHERE raw = 1 AND filename IS NOT NULL AND key IN "
                    f"({','.join('?' * len(part))})",
                    part,
                ).fetchall()
            )
        now = time.time()
        expire = None if self.ttl is None else now + self.ttl
        fresh = [(k, now, expire, now, b) for k, b in inline if k not in filed]
        store._con.executemany(_UPSERT, fresh)
        done = {k for k, _ in inline if k not in filed}
        for key, blob in rows:
            if blob is not None and key not in done:
                store.set(key, blob, expire=self.ttl)

    def delete(self, key: str) -> bool:
        return bool(self._open().delete(key))

    def clear(self) -> int:
        return int(self._open().clear())

    def __len__(self) -> int:
        return len(self._open())

    def __contains__(self, key: str) -> bool:
        return key in self._open()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
