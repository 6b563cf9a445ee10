"""SQLite trace store: one row per attempt, cache hit or policy event, errors included.

Why every attempt: failed replies are exactly the material for tuning a prompt, and retries,
fallbacks and breaker changes explain latency and cost. Prompts and replies are redacted before
the row is built; the store never sees the raw text. A trace database that cannot be written
(read-only, locked) never fails the call: rows wait in memory, a warning says why, and the next
successful write flushes them.

Rows are written in batches: a commit per row would cost more than a whole cache hit. A row
waits at most `flush_interval` seconds (a background thread flushes), error rows wake that
thread at once, and reading, closing or leaving the process flushes everything.

Writing never blocks the caller: `record` only queues (the first row of a store opens the
database in the caller's thread, without writing, so a bad path warns there), and only the
background thread waits for SQLite's write lock. Another process holding that lock delays the
rows, never the calls. The writer never dies on a row: text SQLite cannot store (a lone
surrogate from a model) is stored backslash-escaped with a note in `meta["escaped"]`, and a
row that still cannot be written is set aside in `rejected` with a warning while every other
row lands. The database and its -wal/-shm files are owner-only (0600).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._files import private_dir, private_file
from .redact import Redactor, secrets_generation
from .types import mend_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "TraceSink", "TraceStore", "new_id"]

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
_INSERT_MISSING = _INSERT.replace("OR REPLACE", "OR IGNORE")
_RECORDABLE = frozenset((*_NAMES, "_if_missing"))
_ENCODE = json.JSONEncoder(default=str, ensure_ascii=False).encode
_JSON_COLUMNS = ("prompt", "params", "repairs", "meta")
_log = logging.getLogger("labkit.tracing")
# What one row can cause (a value SQLite cannot bind or store); anything else is the database's
# (locked, read-only, missing, corrupt): the batch then waits in memory for the next round.
_ROW_ERRORS = (
    ValueError,
    TypeError,
    OverflowError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
)


SETTLE_GAP = 0.05
"""The background writer waits for a pause this long in the rows coming in..."""
SETTLE_MAX = 1.0
"""... or this long at most (error rows are written at once); queries flush first."""

# Ids need uniqueness, not secrecy: a private PRNG seeded from the OS once per process is ~20x
# cheaper than a getrandom() syscall per id on a cache hit. The time prefix makes ids sort by
# creation, so the indexed id and call_id columns grow at their right edge instead of taking
# random B-tree inserts (a fifth cheaper per row, more as the database grows).
_IDS = random.Random(os.urandom(32))


class TraceSink(Protocol):
    """Something else that wants the rows (an OpenTelemetry exporter): called in the writer
    thread with the redacted rows of each batch (column -> stored value, JSON columns as text),
    and with [] on idle rounds; `close` after the last flush."""

    def export(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


def _statement(fields: Mapping[str, Any]) -> str:
    return _INSERT_MISSING if "_if_missing" in fields else _INSERT


def new_id() -> str:
    return f"{time.time_ns():016x}{_IDS.getrandbits(64):016x}"


class TraceStore:
    """Append-only trace table. Thread-safe; one connection per store."""

    def __init__(
        self,
        path: str | Path = ".labkit/traces.db",
        redactor: Redactor | None = None,
        *,
        flush_interval: float = 0.2,
    ):
        self.path = Path(path)
        self.redact = redactor or Redactor()
        self.flush_interval = flush_interval
        self._lock = threading.Lock()  # guards the queue
        self._write_lock = threading.Lock()  # guards the connection
        self._conn: sqlite3.Connection | None = None
        self._pending: list[dict[str, Any]] = []
        self._prompts: dict[tuple[Any, ...], str] = {}
        self._prompts_gen = secrets_generation()
        self._restored: set[str] = set()
        self.rejected: list[dict[str, Any]] = []
        """Rows that could not be written even escaped (the newest 1,000), with `_error`."""
        self._inflight = 0  # rows taken by a flush and not yet committed (or put back)
        self._warned = False
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False
        self.sinks: list[TraceSink] = []
        """Also given every redacted row once, in the writer thread (e.g. `otel.SpanSink`)."""

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.parent.exists():
                private_dir(self.path.parent)
            if str(self.path) != ":memory:":
                private_file(self.path)
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

    def record_if_missing(self, **fields: Any) -> str | None:
        """Queue a row that is written only if no row with its id exists (a resumed grid
        restoring an attempt row lost in a crash); once per id and store, and never for an
        attempt row this store recorded itself (a grid re-run in the same session)."""
        row_id = fields.get("id")
        if not row_id or row_id in self._restored:
            return None
        self._note_written(row_id)
        return self.record(**fields, _if_missing=True)

    def _note_written(self, row_id: str) -> None:
        if len(self._restored) >= 100_000:
            self._restored.clear()
        self._restored.add(row_id)

    def knows(self, row_id: str) -> bool:
        """Whether this store already recorded (or restored) the attempt row `row_id`."""
        return row_id in self._restored

    def record(self, **fields: Any) -> str:
        """Queue one row; returns its id. Redaction and encoding happen when the row is written
        (off the caller's hot path), always before anything touches the disk."""
        if not fields.keys() <= _RECORDABLE:
            unknown = fields.keys() - _RECORDABLE
            raise TypeError(f"unknown trace column(s): {sorted(unknown)}")
        given = fields.get("id")
        row_id: str = given or new_id()
        fields["id"] = row_id
        if given and fields.get("kind") == "attempt" and "_if_missing" not in fields:
            self._note_written(row_id)  # an answer's attempt row: a re-run needs no restore
        fields.setdefault("ts", time.time())
        if self.flush_interval <= 0:
            with self._lock:
                self._pending.append(fields)
            self.flush()
            return row_id
        if self._conn is None and not self._warned:
            self._open_here()
        with self._lock:
            self._pending.append(fields)
            if self._flusher is None:
                self._start_flusher()
        # Errors and rows that arrive while the database is failing wake the writer at once.
        if fields.get("error_type") is not None or self._warned:
            self._wake.set()
        return row_id

    def _open_here(self) -> None:
        """Open the database in the caller's thread (no write, so no wait for the write lock):
        an unusable path warns where the user can see it. The writer thread retries later."""
        if not self._write_lock.acquire(blocking=False):
            return  # the writer is opening it right now
        try:
            if self._conn is None:
                self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._warned = True
            self._warn(exc, len(self._pending) + 1)
        finally:
            self._write_lock.release()

    def _row(self, fields: dict[str, Any]) -> tuple[Any, ...]:
        """Redact and encode one queued row (idempotent: a retried flush sees finished rows)."""
        if fields.get("_done"):
            done: tuple[Any, ...] = fields["_done"]
            return done
        redact = self.redact
        if fields.get("id") is None:
            raise TypeError("a trace row needs an id")
        prompt = fields.get("prompt")
        if isinstance(prompt, str):  # stored as JSON too, so queries decode every row alike
            fields["prompt"] = _ENCODE(redact(prompt))
        elif prompt is not None:
            fields["prompt"] = self._prompt_json(prompt)
        for key in ("response", "error"):
            if isinstance(fields.get(key), str):
                fields[key] = redact(fields[key])
        if isinstance(fields.get("meta"), Mapping):
            fields["meta"] = redact.redact_obj(dict(fields["meta"]))
        for key in _JSON_COLUMNS:
            value = fields.get(key)
            if value is not None and not isinstance(value, str):  # most rows' repairs are []
                fields[key] = "[]" if type(value) is list and not value else _ENCODE(value)
        for key in ("cache_hit", "parse_ok"):
            if isinstance(fields.get(key), bool):
                fields[key] = int(fields[key])
        escaped = []
        row = tuple(map(fields.get, _NAMES))
        try:  # CPython knows which texts are ASCII; only the others can hold what UTF-8 cannot
            for v in row:
                if type(v) is str and not v.isascii():
                    v.encode()
        except UnicodeEncodeError:
            for key in _NAMES:
                value = fields.get(key)
                if isinstance(value, str) and (safe := mend_text(value)) is not value:
                    fields[key] = safe
                    escaped.append(key)
        if escaped:  # say so: the stored text is not what the model wrote, byte for byte
            meta = json.loads(fields["meta"]) if isinstance(fields.get("meta"), str) else {}
            meta = meta if isinstance(meta, dict) else {"meta": meta}
            meta["escaped"] = escaped
            note = json.dumps(meta, default=str)  # ASCII: always storable
            fields["meta"] = note
            row = tuple(map(fields.get, _NAMES))
        fields["_done"] = row
        return row

    def _prompt_json(self, prompt: Any) -> str:
        """Redacted prompt as JSON, memoised for plain role/content messages: cache hits and
        grids (models x repeats) write the same prompt many times."""
        key: tuple[Any, ...] | None = None
        if self._prompts_gen != secrets_generation():  # a key became known: redact anew
            self._prompts.clear()
            self._prompts_gen = secrets_generation()
        if isinstance(prompt, list) and all(
            type(m) is dict and m.keys() <= {"role", "content"} and type(m.get("content")) is str
            for m in prompt
        ):
            key = tuple((m.get("role"), m["content"]) for m in prompt)
            done = self._prompts.get(key)
            if done is not None:
                return done
        text: str = _ENCODE(self.redact.redact_obj(prompt))
        if key is not None:
            if len(self._prompts) >= 4096:
                self._prompts.clear()
            self._prompts[key] = text
        return text

    def flush(self, timeout: float | None = None) -> bool:
        """Write every waiting row now; False when `timeout` seconds passed first (the rows
        stay queued). Holds the write lock from taking the rows to the commit, so a flush (and
        so a query) also waits for rows the background thread is writing at that moment: what
        was recorded before is always readable after."""
        if not self._write_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            with self._lock:
                batch, self._pending = self._pending, []
                self._inflight = len(batch)
            try:
                if batch:
                    self._write(batch)
                elif self.sinks:
                    self._send([])  # lets a sink close what waited too long
            finally:
                with self._lock:
                    self._inflight = 0
        finally:
            self._write_lock.release()
        return True

    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._flush_loop, name="labkit-traces", daemon=True)
        self._flusher.start()
        atexit.register(self.flush)

    def _flush_loop(self) -> None:
        while not self._closed:
            if not self._wake.wait(self.flush_interval):
                self._settle()
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the writer must outlive any bug: rows keep coming
                _log.exception("labkit traces: flush failed; retrying on the next round")

    def _settle(self) -> None:
        """Wait while rows keep coming, until they pause for `SETTLE_GAP` (or `SETTLE_MAX` has
        passed, or a row asks for a write now). The writer encodes rows holding the GIL: during
        a grid re-run from the cache (thousands of rows a second) the grid's loop waited behind
        it for a tenth of the run; the rows are written as the run ends instead."""
        deadline = time.monotonic() + SETTLE_MAX
        seen = len(self._pending)
        while not self._closed and time.monotonic() < deadline:
            if self._wake.wait(SETTLE_GAP) or len(self._pending) == seen:
                return
            seen = len(self._pending)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Write `batch` (the caller holds the write lock); on failure keep it in memory."""
        rows: list[tuple[Any, ...]] = []
        kept: list[dict[str, Any]] = []
        for f in batch:
            try:
                rows.append(self._row(f))
                kept.append(f)
            except Exception as exc:
                self._reject([(f, exc)])
        if self.sinks:
            self._send(self._unsent(kept, rows))
        try:
            conn = self._connect()
            try:
                if len(rows) == 1:
                    conn.execute(_statement(kept[0]), rows[0])
                elif rows:
                    conn.execute("BEGIN")
                    if any("_if_missing" in f for f in kept):
                        for f, row in zip(kept, rows, strict=True):
                            conn.execute(_statement(f), row)
                    else:
                        conn.executemany(_INSERT, rows)
                    conn.execute("COMMIT")
            except _ROW_ERRORS:  # a row SQLite refuses: write the rest one by one
                if conn.in_transaction:
                    conn.rollback()
                self._one_by_one(conn, kept, rows)
            self._warned = False
        except (sqlite3.Error, OSError) as exc:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.rollback()
            if isinstance(exc, sqlite3.Error) and self._conn is not None and "lock" not in str(exc):
                self._conn = None
            with self._lock:
                self._pending[:0] = kept
                del self._pending[:-10_000]
                waiting = len(self._pending)
            if not self._warned:
                self._warned = True
                self._warn(exc, waiting)

    @staticmethod
    def _unsent(batch: list[dict[str, Any]], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """The redacted rows sinks have not seen (a batch the database refused is written again
        later, but sent once). Restored rows (`record_if_missing`) are not sent: a resumed grid
        re-records every answer it reuses, and a sink cannot tell which ones were lost."""
        out = []
        for f, row in zip(batch, rows, strict=True):
            if "_sent" not in f and "_if_missing" not in f:
                f["_sent"] = True
                out.append(dict(zip(_NAMES, row, strict=True)))
        return out

    def _send(self, rows: list[dict[str, Any]]) -> None:
        for sink in self.sinks:
            try:
                sink.export(rows)
            except Exception:  # a sink must never cost a row or the writer
                _log.exception("labkit traces: sink %r failed; its rows are dropped", sink)

    def _one_by_one(
        self, conn: sqlite3.Connection, batch: list[dict[str, Any]], rows: list[tuple[Any, ...]]
    ) -> None:
        bad: list[tuple[dict[str, Any], BaseException]] = []
        for f, row in zip(batch, rows, strict=True):
            try:
                conn.execute(_statement(f), row)
            except _ROW_ERRORS as exc:
                bad.append((f, exc))
        self._reject(bad)

    def _reject(self, bad: list[tuple[dict[str, Any], BaseException]]) -> None:
        if not bad:
            return
        for f, exc in bad:
            f.pop("_done", None)
            f["_error"] = f"{type(exc).__name__}: {exc}"
        self.rejected.extend(f for f, _ in bad)
        del self.rejected[:-1000]
        warnings.warn(
            f"labkit: {len(bad)} trace row(s) could not be written to {self.path} "
            f"({bad[0][1].__class__.__name__}: {bad[0][1]}) and were set aside in "
            "TraceStore.rejected; every other row was written.",
            RuntimeWarning,
            stacklevel=2,
        )

    def _warn(self, exc: BaseException, waiting: int) -> None:
        warnings.warn(
            f"labkit: trace database {self.path} is not writable ({exc}); "
            f"{waiting} row(s) kept in memory and retried on the next call. "
            "Fix the path/permissions or pass traces=<another path>.",
            RuntimeWarning,
            stacklevel=5,
        )

    @property
    def pending(self) -> int:
        """Rows not yet in the database: waiting in memory (batched, or kept because the
        database could not be written) or being written right now."""
        with self._lock:
            return len(self._pending) + self._inflight

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

        where: list[str] = []
        args: list[Any] = []
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
        self.flush()
        with self._write_lock:
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

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued (waiting at most `timeout` s for a lock another process holds;
        rows still queued then are dropped with a warning), then close. Never raises."""
        self._closed = True
        self._wake.set()
        try:
            written = self.flush(timeout)
        except Exception:
            _log.exception("labkit traces: the last flush failed")
            written = False
        if not written or self._pending:
            warnings.warn(
                f"labkit: {len(self._pending)} trace row(s) could not be written to "
                f"{self.path} before closing",
                RuntimeWarning,
                stacklevel=2,
            )
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                _log.exception("labkit traces: closing sink %r failed", sink)
        if self._write_lock.acquire(timeout=-1 if timeout is None else timeout):
            try:
                if self._conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.close()
                    self._conn = None
            finally:
                self._write_lock.release()
