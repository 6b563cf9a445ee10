"""The SQL side of `labkit.monitor`: sources, time windows and aggregation in SQLite.

Any source (a trace database, a Client, a traces frame, a results frame) becomes a SQLite
connection with a `traces` table of the trace schema (frames are loaded into memory; a
database is opened read-only). Every metric is one GROUP BY over (window, groups): counts and
sums for the rates, and histograms for the distributions (confidences at 0.001, positive
quantities in 1%-wide log bins), so memory grows with windows x groups x bins, never with
the number of calls.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..artifact import versions as artifact_versions
from ..errors import InputError
from ..experiments._frame import _missing as missing
from ..tracing import COLUMNS

if TYPE_CHECKING:
    import pandas as pd

WINDOWS = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
_MONDAY = 4 * 86400.0  # 1970-01-05 00:00 UTC, so weekly windows start on Mondays
_UNITS = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(s|min|m|h|d|w)\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_][\w\- ]*$")

Baseline = Literal["first", "previous"] | tuple[Any, Any]

# rate name -> (numerator, denominator, +1 if up is good / -1 if up is bad)
RATES: dict[str, tuple[str, str, int]] = {
    "error_rate": ("errors", "calls", -1),
    "parse_rate": ("parsed", "parse_n", +1),
    "repair_rate": ("repaired", "parsed", -1),
    "success_rate": ("successes", "success_n", +1),
}
_LOG_BIN = 100.0  # log bins per unit of ln: 1% wide
_ZERO_BIN = -(10**6)  # the bin of values <= 0


@dataclass(frozen=True)
class _Dist:
    name: str
    expr: str
    scale: Literal["unit", "log"]
    good: int  # +1 up is good, -1 up is bad, 0 neither

    def bin_sql(self) -> str:
        if self.scale == "unit":
            return "CAST(round(min(max(v, 0.0), 1.0) * 1000) AS INTEGER)"
        return (
            f"CASE WHEN v <= 0 THEN {_ZERO_BIN} ELSE CAST(round(ln(v) * {_LOG_BIN}) AS INTEGER) END"
        )

    def values(self, bins: np.ndarray) -> np.ndarray:
        if self.scale == "unit":
            return bins / 1000.0
        return np.where(bins == _ZERO_BIN, 0.0, np.exp(bins / _LOG_BIN))


_OK = "status != 'error'"
_MEAN_CONF = (
    "COALESCE((SELECT avg(value) FROM json_each(meta, '$.confidences') "
    "WHERE type IN ('real', 'integer')), "
    "CASE WHEN response LIKE '%_confidence%' AND json_valid(response) THEN "
    "(SELECT avg(value) FROM json_each(response) WHERE key LIKE '%_confidence' "
    "AND type IN ('real', 'integer')) END)"
)
BASE_DISTS = (
    _Dist("latency_s", f"CASE WHEN {_OK} THEN latency_s END", "log", -1),
    _Dist("ttft_s", f"CASE WHEN {_OK} THEN ttft_s END", "log", -1),
    _Dist("completion_tokens", f"CASE WHEN {_OK} THEN completion_tokens END", "log", 0),
    _Dist("confidence", f"CASE WHEN {_OK} THEN {_MEAN_CONF} END", "unit", +1),
)


def _field_dist(name: str) -> _Dist:
    expr = (
        f"COALESCE(json_extract(meta, '$.confidences.\"{name}\"'), CASE WHEN response LIKE "
        f"'%{name}_confidence%' AND json_valid(response) THEN "
        f"json_extract(response, '$.\"{name}_confidence\"') END)"
    )
    return _Dist(f"confidence.{name}", expr, "unit", +1)


# ----------------------------------------------------------------------------- parameters


def parse_duration(text: str | float) -> float:
    """'hour' / 'day' / 'week', '15min', '6h', '7d', '2w' or seconds -> seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text <= 0:
            raise InputError(f"a duration must be positive, got {text}")
        return float(text)
    if isinstance(text, str):
        if text in WINDOWS:
            return WINDOWS[text]
        m = _DURATION.match(text)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise InputError(
        f"cannot read the duration {text!r}; use 'hour', 'day', 'week', a number of seconds or "
        "a number with a unit: '30min', '6h', '7d', '2w'"
    )


def parse_time(value: Any, *, now: float | None = None) -> float | None:
    """A point in time as epoch seconds: None, epoch number, datetime, ISO text or '7d' ago."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    if isinstance(value, str):
        if _DURATION.match(value) or value in WINDOWS:
            return (
                now if now is not None else dt.datetime.now(dt.UTC).timestamp()
            ) - parse_duration(value)
        with contextlib.suppress(ValueError):
            return parse_time(dt.datetime.fromisoformat(value))
    if hasattr(value, "to_pydatetime"):
        return parse_time(value.to_pydatetime())
    raise InputError(
        f"cannot read the time {value!r}; use a datetime, an ISO date ('2026-11-01' or "
        "'2026-11-01T12:00'), epoch seconds, or a duration back from now ('7d', '12h')"
    )


def _ident(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"{what} {name!r} is not a plain name; use letters, digits, '_', '-' or spaces"
        )
    return name


# ----------------------------------------------------------------------------- sources


@contextlib.contextmanager
def _open(source: Any, time_col: str | None) -> Iterator[tuple[sqlite3.Connection, bool]]:
    """A connection with a `traces` table for any source; yields (conn, ordinal_time)."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        conn, ordinal = _from_frame(source, time_col), False
        if "kind" not in source.columns and _time_column(source, time_col) is None:
            ordinal = True
    else:
        path = _store_path(source)
        if not path.exists():
            raise InputError(
                f"no trace database at {path}; pass the path your Client writes to "
                "(Client(traces=...), default .labkit/traces.db), a Client, or a traces frame"
            )
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        ordinal = False
        has = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'traces'"
        ).fetchone()
        if not has:
            conn.close()
            raise InputError(f"{path} has no `traces` table; is it a labkit trace database?")
    try:
        try:
            conn.execute("SELECT ln(2.0)").fetchone()
        except sqlite3.OperationalError:  # SQLite built without its math functions
            conn.create_function("ln", 1, math.log, deterministic=True)
        yield conn, ordinal
    finally:
        conn.close()


def _store_path(source: Any) -> Path:
    if isinstance(source, str | Path):
        return Path(source)
    tracer = getattr(source, "tracer", source)  # a Client, or a TraceStore itself
    if hasattr(tracer, "flush") and hasattr(tracer, "path"):
        tracer.flush()
        return Path(tracer.path)
    raise InputError(
        f"cannot monitor a {type(source).__name__}; pass a trace database path, a "
        "labkit.Client, a traces frame (labkit.traces()) or a results frame (results.df)"
    )


def _time_column(df: pd.DataFrame, time_col: str | None) -> str | None:
    if time_col is not None:
        if time_col not in df.columns:
            raise InputError(
                f"the frame has no time column {time_col!r}; columns: {list(df.columns)}"
            )
        return time_col
    return next((c for c in ("ts", "time", "timestamp", "created_at") if c in df.columns), None)


def _from_frame(df: pd.DataFrame, time_col: str | None) -> sqlite3.Connection:
    """Load a traces frame or a results frame into an in-memory `traces` table."""
    import pandas as pd

    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute(f"CREATE TABLE traces ({', '.join(f'{k} {v}' for k, v in COLUMNS.items())})")
    n = len(df)
    tcol = _time_column(df, time_col)
    if tcol is not None:
        ts = pd.to_datetime(df[tcol], utc=True)
        secs = ((ts - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(float)
    elif "run_id" in df.columns:  # a results frame without times: one window per run
        secs = pd.factorize(df["run_id"])[0].astype(float)
    else:
        raise InputError(
            "the frame has no time column (ts, time, timestamp, created_at) and no run_id; "
            "pass time='<column>' naming the column with each row's time"
        )

    def col(name: str, default: Any = None) -> list[Any]:
        if name not in df.columns:
            return [default] * n
        return [None if _missing(v) else v for v in df[name].tolist()]

    def js(values: list[Any]) -> list[str | None]:
        return [
            None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
            for v in values
        ]

    if "kind" in df.columns:  # a traces frame (labkit.traces())
        cols: dict[str, list[Any]] = {
            name: col(name)
            for name in COLUMNS
            if name not in ("ts", "repairs", "meta", "prompt", "params")
        }
        cols["repairs"] = js(col("repairs"))
        cols["meta"] = js(col("meta"))
        for name in ("cache_hit", "parse_ok"):
            cols[name] = [None if v is None else int(bool(v)) for v in cols[name]]
    else:  # a results frame (results.df): one attempt per row
        err = col("error_type")
        msg = col("error")
        model = col("model_id") if "model_id" in df.columns else col("model")
        conf, passed, prompt = col("confidences"), col("passed"), col("prompt")
        meta = [
            {
                "confidences": c if isinstance(c, Mapping) else {},
                **({"passed": bool(p)} if p is not None else {}),
                **({"prompt_version": str(v)} if v is not None else {}),
            }
            for c, p, v in zip(conf, passed, prompt, strict=True)
        ]
        parse_ok = col("parse_ok")
        cols = {
            "id": [str(i) for i in range(n)],
            "kind": ["attempt"] * n,
            "call_id": col("trace_id"),
            "run_id": col("run_id"),
            "alias": col("model"),
            "model": model,
            "status": [
                "error" if e is not None or m is not None else "ok"
                for e, m in zip(err, msg, strict=True)
            ],
            "parse_ok": [
                None if e is not None or m is not None or p is None else int(bool(p))
                for p, e, m in zip(parse_ok, err, msg, strict=True)
            ],
            "repairs": js(col("repairs")),
            "meta": js(meta),
            **{
                k: col(k)
                for k in (
                    "prompt_tokens",
                    "completion_tokens",
                    "cached_tokens",
                    "cost_usd",
                    "latency_s",
                    "ttft_s",
                    "error_type",
                )
            },
            "cache_hit": [None if v is None else int(bool(v)) for v in col("cache_hit")],
        }
    cols["ts"] = [None if math.isnan(v) else float(v) for v in secs]
    names = list(cols)
    conn.executemany(
        f"INSERT INTO traces ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        zip(*(cols[k] for k in names), strict=True),
    )
    conn.execute("CREATE INDEX traces_ts ON traces(ts)")
    return conn


def _missing(v: Any) -> bool:
    return (isinstance(v, float | np.floating) and math.isnan(v)) or (
        not isinstance(v, list | dict | tuple | np.ndarray) and missing(v)
    )


# ----------------------------------------------------------------------------- aggregation


@dataclass
class _Query:
    """What to aggregate: rows (WHERE), window expression, groups, which distributions."""

    where: str
    args: list[Any]
    wexpr: str
    by: list[str]
    dists: list[_Dist]
    join: str = ""
    succ: str = "json_extract(meta, '$.passed')"

    @property
    def gexprs(self) -> list[str]:
        return [c if c in _columns() else f"json_extract(meta, '$.\"{c}\"')" for c in self.by]

    def inner(self, *extra: str) -> str:
        groups = [f"{g} AS g{i}" for i, g in enumerate(self.gexprs)]
        cols = ", ".join([f"{self.wexpr} AS w", *groups, *extra])
        return f"SELECT {cols} FROM traces t {self.join} WHERE {self.where}"

    @property
    def keys(self) -> str:
        return ", ".join(["w", *(f"g{i}" for i in range(len(self.by)))])


def _columns() -> frozenset[str]:
    return frozenset(COLUMNS)


@dataclass
class _Agg:
    scalars: pd.DataFrame  # indexed by (w, *groups)
    hists: dict[str, dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]]]


_SCALARS = """
    COUNT(*) AS calls,
    TOTAL(status = 'error') AS errors,
    TOTAL(parse_ok IS NOT NULL) AS parse_n,
    TOTAL(parse_ok = 1) AS parsed,
    TOTAL(parse_ok = 1 AND repairs IS NOT NULL AND repairs NOT IN ('[]', 'null', '')) AS repaired,
    TOTAL(succ IS NOT NULL) AS success_n,
    TOTAL(succ = 1) AS successes,
    TOTAL(cache_hit = 1) AS cache_hits,
    TOTAL(prompt_tokens) AS prompt_tokens,
    TOTAL(completion_tokens) AS completion_tokens,
    TOTAL(cached_tokens) AS cached_tokens,
    TOTAL(cost_usd) AS cost_usd,
    AVG(CASE WHEN status != 'error' THEN latency_s END) AS latency_mean,
    AVG(CASE WHEN status != 'error' THEN ttft_s END) AS ttft_mean,
    MIN(ts) AS first_ts,
    MAX(ts) AS last_ts
"""


def _collect(conn: sqlite3.Connection, q: _Query) -> _Agg:
    """One GROUP BY for the counts and sums, one per distribution for its histogram."""
    import pandas as pd

    cols = "status, parse_ok, repairs, cache_hit, prompt_tokens, completion_tokens, "
    cols += f"cached_tokens, cost_usd, latency_s, ttft_s, ts, {q.succ} AS succ"
    sql = f"SELECT {q.keys}, {_SCALARS} FROM ({q.inner(cols)}) GROUP BY {q.keys}"
    scalars = pd.read_sql_query(sql, conn, params=q.args)
    scalars = scalars.set_index(q.keys.split(", "))
    hists: dict[str, dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]]] = {}
    nk = len(q.by) + 1
    for d in q.dists:
        sql = (
            f"SELECT {q.keys}, {d.bin_sql()} AS b, COUNT(*) AS c FROM ({q.inner(f'{d.expr} AS v')}) "
            f"WHERE v IS NOT NULL GROUP BY {q.keys}, b ORDER BY {q.keys}, b"
        )
        rows = conn.execute(sql, q.args).fetchall()
        per: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
        if rows:
            arr = np.array([r[nk:] for r in rows], dtype=np.int64)
            keys = [tuple(r[:nk]) for r in rows]
            start = 0
            for i in range(1, len(rows) + 1):
                if i == len(rows) or keys[i] != keys[start]:
                    per[keys[start]] = (arr[start:i, 0], arr[start:i, 1])
                    start = i
        hists[d.name] = per
    return _Agg(scalars, hists)


def _fields(conn: sqlite3.Connection, where: str, args: list[Any], sample: int = 5000) -> list[str]:
    """Confidence field names seen in the oldest and the newest `sample` rows (a schema may
    gain a field over time): from meta.confidences, else from the replies."""
    names: set[str] = set()
    for order in ("ASC", "DESC"):
        rows = conn.execute(
            f"SELECT DISTINCT j.key FROM (SELECT meta FROM traces t WHERE {where} AND meta LIKE "
            f"'%confidences%' ORDER BY ts {order} LIMIT {sample}) s, "
            "json_each(s.meta, '$.confidences') j",
            args,
        ).fetchall()
        names.update(r[0] for r in rows)
        if names:
            continue
        rows = conn.execute(
            f"SELECT DISTINCT j.key FROM (SELECT response FROM traces t WHERE {where} AND "
            f"response LIKE '%_confidence%' AND json_valid(response) ORDER BY ts {order} "
            f"LIMIT {sample}) s, json_each(s.response) j WHERE j.key LIKE '%_confidence'",
            args,
        ).fetchall()
        names.update(r[0][: -len("_confidence")] for r in rows)
    return sorted(n for n in names if isinstance(n, str) and _NAME.match(n))


def _rows_where(cache_hits: bool, t0: float | None, t1: float | None) -> tuple[str, list[Any]]:
    kinds = "('attempt', 'cache_hit')" if cache_hits else "('attempt')"
    where, args = [f"kind IN {kinds}", "ts IS NOT NULL"], []
    if t0 is not None:
        where.append("ts >= ?")
        args.append(t0)
    if t1 is not None:
        where.append("ts < ?")
        args.append(t1)
    return " AND ".join(where), args


def _outcomes(conn: sqlite3.Connection, outcomes: Any) -> tuple[str, str]:
    """A temporary table of labels joined on call id; returns (join, success expression)."""
    plain = "json_extract(meta, '$.passed')"
    if outcomes is None:
        return "", plain
    items = outcomes.items() if hasattr(outcomes, "items") else None
    if items is None:
        raise InputError("outcomes must map trace ids (Completion.trace_id) to True/False")
    conn.execute("CREATE TEMP TABLE labkit_outcomes (call_id TEXT PRIMARY KEY, passed INTEGER)")
    conn.executemany(
        "INSERT OR REPLACE INTO labkit_outcomes VALUES (?, ?)",
        ((str(k), None if _missing(v) else int(bool(v))) for k, v in items),
    )
    join = "LEFT JOIN labkit_outcomes o ON o.call_id = t.call_id AND t.status != 'error'"
    return join, f"COALESCE(o.passed, {plain})"


def _switches(
    conn: sqlite3.Connection, where: str, args: list[Any], config: str | Path | None
) -> pd.DataFrame:
    """When a new model first answered for an alias; and the config's saved versions."""
    import pandas as pd

    rows = conn.execute(
        f"SELECT alias, model, MIN(ts) FROM traces t WHERE {where} AND alias IS NOT NULL AND "
        "model IS NOT NULL AND alias != model GROUP BY alias, model ORDER BY alias, 3",
        args,
    ).fetchall()
    out: list[dict[str, Any]] = []
    last: dict[str, str] = {}
    for alias, model, ts in rows:
        if alias in last:
            out.append({"time": pd.to_datetime(ts, unit="s"), "label": f"{alias}: {model}",
                        "from_model": last[alias], "to_model": model})  # fmt: skip
        last[alias] = model
    if config is not None:
        versions = artifact_versions(config)
        for prev, cur in itertools.pairwise(versions):
            out.append({"time": pd.to_datetime(parse_time(cur.created_at), unit="s"),
                        "label": f"v{cur.version} {cur.action}", "from_model": prev.model,
                        "to_model": cur.model})  # fmt: skip
    return pd.DataFrame(out, columns=["time", "label", "from_model", "to_model"])
