"""Completion cache on diskcache, with JSON values (never pickle) and explicit keys.

The key hashes exactly what changes the output: the pinned model id, the messages, the
output-affecting parameters (`types.OUTPUT_PARAMS`), the JSON schema and JSON mode, and the
sample index. Left out on purpose: timeouts, retry settings, concurrency, api_base and API keys
(transport, not content), run/item ids and the alias (two aliases that resolve to the same
pinned model share answers).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .types import OUTPUT_PARAMS, Completion, Message, Request

__all__ = ["KEY_VERSION", "Cache", "cache_key", "key_for"]

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
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """Persistent completion store. String keys and JSON string values, so diskcache stores
    them as plain SQLite text and never unpickles anything read from disk."""

    def __init__(self, directory: str | Path = ".labkit/cache", size_limit: int = 2**31) -> None:
        self.directory = Path(directory)
        self.size_limit = size_limit
        self._store: Any = None

    def _open(self) -> Any:
        if self._store is None:
            import diskcache

            self._store = diskcache.Cache(str(self.directory), size_limit=self.size_limit)
        return self._store

    def get(self, key: str) -> Completion | None:
        """The stored completion, or None. A corrupt entry is a logged miss, never a crash."""
        blob = self._open().get(key)
        if blob is None:
            return None
        try:
            if not isinstance(blob, str):
                raise TypeError(f"expected a JSON string, found {type(blob).__name__}")
            return Completion.model_validate_json(blob)
        except Exception as exc:
            log.warning(
                "labkit cache: entry %s… is unreadable (%s); treated as a miss", key[:12], exc
            )
            return None

    def set(self, key: str, completion: Completion) -> None:
        self._open().set(key, json.dumps(completion.to_cache(), ensure_ascii=False))

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
