"""SQLite trace store: one row per attempt, cache hit or policy event, errors included.

Why every attempt: failed replies are exactly the material for tuning a prompt, and retries,
fallbacks and breaker changes explain latency and cost. Prompts and replies are redacted before
the row is built; the store never sees the raw text. A trace database that cannot be written
(read-only, locked) never fails the call: rows wait in memory, a warning says why, and the next
successful write flushes them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .redact import Redactor

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "TraceStore", "new_id"]

COLUMNS: dict[str, str] = {
    "id": "TEXT PRIMARY KEY",
    "ts": "REAL",
    "kind": "TEXT",  # attempt | cache_hit | event | parent
    "call_id": "TEXT",  # every row of one generate() call; Completion.trace_id
    "parent_id": "TEXT",  # call_id of the call this one serves (judge, chunk, refine)
    "run_id": "TEXT",
    "item_id": "TEXT",
    "alias": "TEXT",
    "model": "TEXT",
    "attempt": "INTEGER",
    "status": "TEXT",  # ok | error | hit | event
    "prompt": "TEXT",  # redacted messages, JSON
    "response": "TEXT",  # redacted reply text
    "params": "TEXT",
    "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER",
    "cached_tokens": "INTEGER",
    "cost_usd": "REAL",
    "latency_s": "REAL",
    "ttft_s": "REAL",
    "cache_hit": "INTEGER",
    "cache_key": "TEXT",
    "context_tokens": "INTEGER",
    "context_limit": "INTEGER",
    "error_type": "TEXT",
    "error": "TEXT",
    "event": "TEXT",
    "breaker_state": "TEXT",
    "parse_ok": "INTEGER",
    "repairs": "TEXT",
    "meta": "TEXT",
}
_NAMES = tuple(COLUMNS)
_INSERT = (
    f"INSERT OR REPLACE INTO traces ({', '.join(_NAMES)}) VALUES ({', '.join('?' * len(_NAMES))})"
)
_JSON_COLUMNS = ("prompt", "params", "repairs", "meta")


def new_id() -> str:
    return uuid.uuid4().hex


class TraceStore:
    """Append-only trace table. Thread-safe; one connection per store."""

    def __init__(self, path: str | Path = ".labkit/traces.db", redactor: Redactor | None = None):
        self.path = Path(path)
        self.redact = redactor or Redactor()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Any, ...]] = []
        self._warned = False

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, check_same_thread=False, timeout=0.5, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
            conn.execute(f"CREATE TABLE IF NOT EXISTS traces ({cols})")
            for idx in ("call_id", "run_id", "ts"):
                conn.execute(f"CREATE INDEX IF NOT EXISTS traces_{idx} ON traces({idx})")
            self._conn = conn
        return self._conn

    def record(self, **fields: Any) -> str:
        """Write one row; prompt/response/error are redacted here. Returns the row id."""
        row_id: str = fields.pop("id", None) or new_id()
        fields.setdefault("ts", time.time())
        if "prompt" in fields and fields["prompt"] is not None:
            fields["prompt"] = self.redact.redact_obj(fields["prompt"])
        for key in ("response", "error"):
            if isinstance(fields.get(key), str):
                fields[key] = self.redact(fields[key])
        if isinstance(fields.get("meta"), Mapping):
            fields["meta"] = self.redact.redact_obj(dict(fields["meta"]))
        for key in _JSON_COLUMNS:
            if fields.get(key) is not None and not isinstance(fields[key], str):
                fields[key] = json.dumps(fields[key], default=str, ensure_ascii=False)
        if isinstance(fields.get("cache_hit"), bool):
            fields["cache_hit"] = int(fields["cache_hit"])
        if isinstance(fields.get("parse_ok"), bool):
            fields["parse_ok"] = int(fields["parse_ok"])
        unknown = set(fields) - set(_NAMES)
        if unknown:
            raise TypeError(f"unknown trace column(s): {sorted(unknown)}")
        row = (row_id, *(fields.get(name) for name in _NAMES[1:]))
        with self._lock:
            self._pending.append(row)
            self._flush_locked()
        return row_id

    def _flush_locked(self) -> None:
        try:
            conn = self._connect()
            if len(self._pending) == 1:
                conn.execute(_INSERT, self._pending[0])
            else:
                conn.execute("BEGIN")
                conn.executemany(_INSERT, self._pending)
                conn.execute("COMMIT")
            self._pending.clear()
        except (sqlite3.Error, OSError) as exc:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.rollback()
            if not self._warned:
                warnings.warn(
                    f"labkit: trace database {self.path} is not writable ({exc}); "
                    f"{len(self._pending)} row(s) kept in memory and retried on the next call. "
                    "Fix the path/permissions or pass traces=<another path>.",
                    RuntimeWarning,
                    stacklevel=4,
                )
                self._warned = True
            if isinstance(exc, sqlite3.Error) and self._conn is not None and "lock" not in str(exc):
                self._conn = None
            del self._pending[:-10_000]

    @property
    def pending(self) -> int:
        """Rows waiting in memory because the database could not be written."""
        return len(self._pending)

    def query(
        self,
        *,
        run_id: str | None = None,
        call_id: str | None = None,
        model: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        cache_hit: bool | None = None,
        errors: bool | None = None,
        since: float | None = None,
        limit: int | None = 10_000,
    ) -> pd.DataFrame:
        """Trace rows as a DataFrame, newest first; JSON columns decoded."""
        import pandas as pd

        where, args = [], []
        for col, val in (
            ("run_id", run_id),
            ("call_id", call_id),
            ("model", model),
            ("kind", kind),
            ("status", status),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if cache_hit is not None:
            where.append("cache_hit = ?")
            args.append(int(cache_hit))
        if errors is not None:
            where.append("error_type IS NOT NULL" if errors else "error_type IS NULL")
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        sql = "SELECT * FROM traces"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            if self._pending:
                self._flush_locked()
            try:
                conn = self._connect()
                df = pd.read_sql_query(sql, conn, params=args)
            except (sqlite3.Error, OSError) as exc:
                warnings.warn(f"labkit: cannot read traces from {self.path}: {exc}", stacklevel=2)
                df = pd.DataFrame(columns=list(_NAMES))
        for col in _JSON_COLUMNS:
            df[col] = df[col].map(lambda v: json.loads(v) if isinstance(v, str) else v)
        for col in ("cache_hit", "parse_ok"):
            df[col] = df[col].map(lambda v: None if v is None or v != v else bool(v))
        df["ts"] = pd.to_datetime(df["ts"], unit="s")
        return df

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
