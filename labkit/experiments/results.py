"""The results of a grid run: one tidy DataFrame (`Results.df`) and the run's definition (`meta`).

The frame's columns are the contract in the `labkit.experiments.stats` docstring (one row per item x prompt
x model x repeat), so every statistic, chart, report and export is a function of it. Files keep
it whole: Parquet with `meta` in the file's metadata, or CSV with `meta` beside it; dict and list
columns are stored as JSON text, never pickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import private_file
from ..errors import InputError
from ._frame import _missing
from .export import Winner, choose_winner, export_config

if TYPE_CHECKING:
    import pandas as pd

    from .calibration import CalibrationResult
    from .runner import Experiment
    from .stats import PairedResult

__all__ = ["COLUMNS", "JSON_COLUMNS", "Results", "best_variant"]

COLUMNS: tuple[str, ...] = (
    "run_id",
    "item_id",
    "prompt",
    "model",
    "model_id",
    "variant",
    "repeat",
    "output",
    "parsed",
    "parse_ok",
    "passed",
    "score",
    "scores",
    "reasons",
    "confidence",
    "confidences",
    "field_correct",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_s",
    "ttft_s",
    "cache_hit",
    "repairs",
    "error",
    "error_type",
    "trace_id",
)
"""The results frame's columns, in order (see the `labkit.experiments.stats` docstring for their meaning)."""
JSON_COLUMNS: tuple[str, ...] = (
    "parsed", "scores", "reasons", "confidences", "field_correct", "repairs",
)  # fmt: skip
"""Columns holding dicts/lists; stored as JSON text in CSV and Parquet files."""
_INT_COLUMNS = ("repeat", "prompt_tokens", "completion_tokens", "cached_tokens")
_FLOAT_COLUMNS = ("score", "confidence", "cost_usd", "latency_s", "ttft_s")
_STR_COLUMNS = ("run_id", "item_id", "prompt", "model", "model_id", "variant")
_TEXT_COLUMNS = ("output", "error", "error_type", "trace_id")


class Results:
    """The tidy results frame of a run (`df`), its definition (`meta`), and what to do with it."""

    def __init__(
        self,
        df: pd.DataFrame,
        meta: Mapping[str, Any] | None = None,
        experiment: Experiment | None = None,
    ) -> None:
        self.df = df
        self.meta: dict[str, Any] = dict(meta or {})
        self.experiment = experiment
        self._modes: tuple[tuple[int, int], Any] | None = None

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        errors = int(self.df["error"].notna().sum()) if "error" in self.df else 0
        planned = self.meta.get("planned", len(self))
        return (
            f"Results(run_id={self.meta.get('run_id')!r}, rows={len(self)}/{planned}, "
            f"errors={errors}, variants={self.variants})"
        )

    @property
    def variants(self) -> list[str]:
        import pandas as pd

        return [str(v) for v in pd.unique(self.df["variant"])] if len(self.df) else []

    # ------------------------------------------------------------------ statistics
    def summary(self, by: str = "variant") -> pd.DataFrame:
        """One row per group: success rate over items with its interval (``n_items`` and
        ``n_rows`` apart; with repeats the interval counts items, see
        `labkit.experiments.stats.success_rates`), errors, mean score, parse rate, cost (total, per item,
        per success), latency percentiles, and each group against the best-rated one:
        ``p_vs_best`` (paired score test) and ``p_holm_vs_best`` (Holm-adjusted over those
        comparisons). The rate intervals are per group, not adjusted for multiplicity."""
        import pandas as pd

        from . import stats

        df = self.df
        out = stats.success_rates(df, by)
        extra = pd.DataFrame({by: out[by]})
        if len(df):
            g = df.groupby(by, sort=False, observed=True)
            extra["score_mean"] = extra[by].map(g["score"].mean())
            extra["parse_rate"] = extra[by].map(g["parse_ok"].mean())
            extra["cache_hits"] = extra[by].map(g["cache_hit"].sum()).fillna(0).astype("int64")
        else:
            extra = extra.assign(score_mean=[], parse_rate=[], cache_hits=[])
        cost = stats.cost_summary(df, by)[[by, "total_cost", "cost_per_item", "cost_per_success"]]
        lat = stats.latency_summary(df, by, percentiles=(50, 95))
        lat = lat[[by, "latency_n", "latency_p50", "latency_p95", "ttft_p50"]]
        for part in (extra, cost, lat):
            out = out.merge(part, on=by, how="left")
        if by == "variant" and len(df):  # the rate a constant answer gets, and who answered
            modes = self.failure_modes().table.set_index("variant")
            at = out.columns.get_loc("ci_high") + 1
            out.insert(at, "baseline", out[by].map(modes["baseline"]).astype(float))
            out["answered_by"] = out[by].map(modes["answered_by"])
            out["warnings"] = out[by].map(modes["warnings"].map(len)).fillna(0).astype("int64")
        return out.merge(_vs_best(df, out, by), on=by, how="left")

    def compare(
        self, a: str, b: str, by: str = "variant", *, fallbacks: str = "exclude"
    ) -> PairedResult:
        """Paired comparison of two groups on the items both answered (score interval and the
        test it inverts; ``significant`` iff the interval excludes 0). Unadjusted: with more
        than two groups a note says so; `labkit.experiments.stats.pairwise_comparisons` adjusts (Holm).

        When `a` and `b` ask for different models, answers a fallback model gave are left out
        (``fallbacks="exclude"``, a note counts them): they score the fallback, not the model
        compared. ``fallbacks="include"`` keeps them, with a note naming who answered.
        """
        from dataclasses import replace

        from . import stats
        from .diagnostics import own_answers

        if fallbacks not in ("exclude", "include"):
            raise ValueError(f"fallbacks={fallbacks!r}: use 'exclude' or 'include'")
        sub, left_out = own_answers(self.df, [a, b], by) if by in self.df else (self.df, 0)
        if fallbacks == "include":
            sub = self.df
        r = stats.paired_comparison(sub, a, b, by=by)
        notes = list(r.notes)
        if left_out:
            who = _answered_by(self.df, [a, b], by)
            notes.append(
                f"{left_out} answers given by a fallback model were "
                + ("kept" if fallbacks == "include" else "left out")
                + f" (answered by: {who}); "
                + (
                    "they score the fallback, not the model compared"
                    if fallbacks == "include"
                    else "compare(..., fallbacks='include') keeps them"
                )
            )
        groups = self.df[by].nunique() if by in self.df else 0
        if groups > 2:
            notes.append(
                f"one of {groups * (groups - 1) // 2} possible pairs of {groups} groups: p and "
                "interval are not adjusted; pairwise_comparisons gives Holm-adjusted ones"
            )
        return replace(r, notes=tuple(notes)) if notes != list(r.notes) else r

    def calibration(self, field: str | None = None, by: str = "variant") -> CalibrationResult:
        """Self-reported confidence vs correctness (row-level, or one field's)."""
        from . import calibration as calib

        return calib.calibration(self.df, field=field, by=by)

    def charts(self, by: str = "variant") -> dict[str, Any]:
        """Every chart of the report, keyed by name (plotly Figures)."""
        from . import plots

        baselines = None
        if by == "variant" and len(self.df):
            modes = self.failure_modes().table
            baselines = dict(zip(modes["variant"], modes["baseline"], strict=True))
        return plots.all_charts(self.df, by=by, baselines=baselines)

    def best(
        self,
        metric: str = "success_rate",
        constraints: Mapping[str, Any] | None = None,
        *,
        allow_degenerate: bool = False,
    ) -> Any:
        """The winning variant (an `export.Winner`) on `metric` among those meeting
        `constraints`; degenerate variants only with `allow_degenerate` (see
        `export.choose_winner`)."""
        return choose_winner(
            self, metric=metric, constraints=constraints, allow_degenerate=allow_degenerate
        )

    def judged_by(self, evaluator: str = "human") -> Results:
        """The same run scored by one evaluator: `passed` is ``scores[evaluator] >= 0.5`` and
        rows it did not score are left out of the rates (e.g. the matrix's thumbs, "human")."""
        import pandas as pd

        df = self.df.copy()
        got = [s.get(evaluator) if isinstance(s, dict) else None for s in df["scores"]]
        value = pd.to_numeric(pd.Series(got, index=df.index, dtype=object), errors="coerce")
        df["passed"] = (value >= 0.5).astype("boolean").mask(value.isna())
        df["score"] = value
        return Results(df[value.notna()].reset_index(drop=True), self.meta, self.experiment)

    def failure_modes(self) -> Any:
        """Baselines, per-label accuracy, confusion, collapse / parrot / fallback warnings
        (a `labkit.experiments.diagnostics.FailureModes`)."""
        from .diagnostics import failure_modes

        key = (id(self.df), len(self.df))  # computed once per frame: summary, charts, best
        if self._modes is None or self._modes[0] != key:
            self._modes = (key, failure_modes(self))
        return self._modes[1]

    def export_config(self, path: str | Path, variant: str | None = None, **kw: Any) -> Any:
        """Write the (best, or named) variant as a deployable config; see `export.py`."""
        return export_config(self, path, variant=variant, **kw)

    # ------------------------------------------------------------------ files
    def to_parquet(self, path: str | Path) -> Path:
        """Write the frame (dict/list columns as JSON text) with `meta` in the file's metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = Path(path)
        private_file(target)  # owner-only: it holds prompts' outputs
        table = pa.Table.from_pandas(_encoded(self.df), preserve_index=False)
        metadata = dict(table.schema.metadata or {})
        metadata[b"labkit"] = json.dumps(self.meta, default=str, ensure_ascii=False).encode()
        pq.write_table(table.replace_schema_metadata(metadata), target)
        return target

    def to_csv(self, path: str | Path) -> Path:
        """Write the frame as CSV (dict/list columns as JSON text) and `meta` next to it as
        `<path>.meta.json`."""
        target = Path(path)
        private_file(target)  # owner-only: it holds prompts' outputs
        private_file(_meta_path(target))
        _encoded(self.df).to_csv(target, index=False)
        _meta_path(target).write_text(
            json.dumps(self.meta, default=str, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        return target

    @classmethod
    def read(cls, path: str | Path) -> Results:
        """Read a file written by `to_parquet` or `to_csv`."""
        import pandas as pd

        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no results file at {source}")
        meta: dict[str, Any] = {}
        if source.suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(source)
            raw = (table.schema.metadata or {}).get(b"labkit")
            meta = json.loads(raw) if raw else {}
            df = table.to_pandas()
        elif source.suffix == ".csv":
            dtypes = {c: str for c in _STR_COLUMNS + _TEXT_COLUMNS + JSON_COLUMNS}
            df = pd.read_csv(source, dtype=dtypes, keep_default_na=False, na_values=[""])
            side = _meta_path(source)
            if side.is_file():
                meta = json.loads(side.read_text(encoding="utf-8"))
        else:
            raise ValueError(f"unsupported results file {source.suffix!r}; use .parquet or .csv")
        for col in JSON_COLUMNS:
            if col in df:
                df[col] = [_loads(v) for v in df[col]]
        return cls(_typed(df), meta)

    # ------------------------------------------------------------------ notebook
    def _repr_html_(self) -> str:
        import html

        head = html.escape(repr(self))
        if not len(self.df):
            return f"<p><code>{head}</code></p>"
        s = self.summary()
        table = s[[c for c in _SHOWN if c in s]].copy()
        table["rate"] = [
            "n/a" if math.isnan(r) else f"{r:.1%} [{lo:.0%}, {hi:.0%}]"
            for r, lo, hi in zip(s["rate"], s["ci_low"], s["ci_high"], strict=True)
        ]
        modes = self.failure_modes()
        warned = "".join(
            f"<li><b>{html.escape(str(r['variant']))}</b>: {html.escape(w)}</li>"
            for r in modes.table.to_dict("records")
            for w in r["warnings"]
        )
        return (
            f"<p><code>{head}</code></p>"
            + table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–")
            + (
                f"<ul class='labkit-failure-modes' style='color:#8a6d3b'>{warned}</ul>"
                if warned
                else ""
            )
        )


_SHOWN = (
    "variant", "n", "rate", "baseline", "errors", "score_mean", "total_cost", "latency_p50",
    "answered_by",
)  # fmt: skip


def _answered_by(df: pd.DataFrame, groups: Sequence[str], by: str) -> str:
    """ "group: model (count), …" over the answered rows of `groups`."""
    rows = df[df[by].isin(list(groups)) & df["error"].isna()]
    parts = []
    for g, sub in rows.groupby(by, sort=False):
        counts = sub["model_id"].dropna().astype(str).value_counts()
        parts.append(f"{g}: " + ", ".join(f"{m} ({c})" for m, c in counts.items()))
    return "; ".join(parts)


def _vs_best(df: pd.DataFrame, table: pd.DataFrame, by: str) -> pd.DataFrame:
    """``p_vs_best`` and ``p_holm_vs_best`` per group (NaN for the best-rated one itself)."""
    import pandas as pd

    from . import stats

    out = pd.DataFrame({by: table[by], "p_vs_best": math.nan, "p_holm_vs_best": math.nan})
    rates = table["rate"].to_numpy(dtype=float)
    if len(table) < 2 or not (rates == rates).any():
        return out
    best = table[by].iloc[int(pd.Series(rates).idxmax())]
    pairs = stats.pairwise_comparisons(df, by, baseline=best)
    out["p_vs_best"] = out[by].map(dict(zip(pairs["a"], pairs["p"], strict=True)))
    out["p_holm_vs_best"] = out[by].map(dict(zip(pairs["a"], pairs["p_holm"], strict=True)))
    return out


# ---------------------------------------------------------------------------- frames
def build_frame(rows: Sequence[tuple[int, dict[str, Any]]]) -> pd.DataFrame:
    """Rows (keyed by plan index) -> the typed results frame, in plan order."""
    import pandas as pd

    ordered = [row for _, row in sorted(rows, key=lambda kv: kv[0])]
    fast = _typed_rows(ordered)
    if fast is not None:
        return fast
    df = pd.DataFrame.from_records(ordered, columns=list(COLUMNS))
    return _typed(df)


def _typed_rows(rows: list[dict[str, Any]]) -> pd.DataFrame | None:
    """`_typed(DataFrame.from_records(rows))` built column by column, for rows that already
    hold the contract's types (a grid's rows do): a type check per column instead of per-value
    conversions, a third of a 2,000-row cached re-run's frame time. None when any row has
    another key or a value of another type; the general path then decides."""
    import numpy as np
    import pandas as pd

    names = set(COLUMNS)
    if not rows or any(row.keys() != names for row in rows):
        return None
    # Transposed in C: the rows' values in column order, then zipped into columns.
    cols = dict(
        zip(COLUMNS, map(list, zip(*map(itemgetter(*COLUMNS), rows), strict=True)), strict=True)
    )
    data: dict[str, Any] = {}
    for c, values in cols.items():
        kinds = set(map(type, values))
        if c in _INT_COLUMNS:
            if kinds != {int}:
                return None
            data[c] = np.array(values, dtype="int64")
        elif c in _FLOAT_COLUMNS:
            if kinds != {float}:
                return None
            data[c] = np.array(values, dtype="float64")
        elif c in ("parse_ok", "cache_hit", "passed"):
            if kinds != {bool}:
                return None
            data[c] = np.array(values, dtype=bool)
        elif c in _STR_COLUMNS or c in _TEXT_COLUMNS:
            if not kinds <= {str, type(None)} or (c in _STR_COLUMNS and kinds != {str}):
                return None
            # Text (and None) infers the same dtype as the mapping below, four times faster.
            data[c] = pd.Series(values)
        elif c == "repairs":
            if kinds != {list}:
                return None
            data[c] = values  # the rows' own lists, as the dict columns keep the rows' dicts
        elif c == "parsed":
            if float in kinds or not kinds <= {dict, list, str, int, bool, type(None)}:
                return None
            data[c] = pd.Series(_objects(values)).map(_same)
        else:  # the dict columns
            if kinds != {dict}:
                return None
            data[c] = values
    return pd.DataFrame(data, columns=list(COLUMNS))


def _same(value: Any) -> Any:
    """Identity, mapped over object columns: `Series.map` infers the dtype (text columns
    become pandas' string dtype) exactly as the general path's mapping does."""
    return value


def _objects(values: list[Any]) -> Any:
    """`values` as a 1-d object array: list values stay elements, never a second axis."""
    import numpy as np

    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Contract dtypes: ints, floats (NaN for missing), bools, object for text and JSON."""
    import pandas as pd

    df = df.reindex(columns=[*COLUMNS, *[c for c in df.columns if c not in COLUMNS]])
    for col in _INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    for col in _FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("parse_ok", "cache_hit"):
        df[col] = pd.Series([bool(_truthy(v)) for v in df[col]], index=df.index, dtype=bool)
    passed = [_truthy(v) for v in df["passed"]]
    complete = all(v is not None for v in passed)
    df["passed"] = pd.Series(passed, index=df.index, dtype=bool if complete else "boolean")
    for col in _STR_COLUMNS:
        df[col] = df[col].astype(object).map(lambda v: None if _missing(v) else str(v))
    for col in _TEXT_COLUMNS:
        df[col] = df[col].astype(object).map(lambda v: None if _missing(v) else v)
    for col in ("scores", "reasons", "confidences", "field_correct"):
        df[col] = [v if isinstance(v, dict) else {} for v in df[col]]
    df["repairs"] = [list(v) if isinstance(v, list | tuple) else [] for v in df["repairs"]]
    df["parsed"] = df["parsed"].astype(object).map(lambda v: None if _missing(v) else v)
    return df.reset_index(drop=True)


def _truthy(value: Any) -> bool | None:
    if _missing(value):
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _encoded(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in JSON_COLUMNS:
        if col in out:
            out[col] = [
                None if v is None else json.dumps(v, ensure_ascii=False, default=str)
                for v in out[col]
            ]
    return out


def _loads(value: Any) -> Any:
    if _missing(value) or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def best_variant(
    results: Results | pd.DataFrame,
    metric: str = "success_rate",
    constraints: Mapping[str, Any] | None = None,
    *,
    allow_degenerate: bool = False,
) -> Winner:
    """`Results.best` for a Results or a bare results frame (see `export.choose_winner`)."""
    import pandas as pd

    if not isinstance(results, Results):
        df = getattr(results, "df", results)
        if not isinstance(df, pd.DataFrame):
            raise InputError(
                f"expected a Results or a results DataFrame, got {type(results).__name__}"
            )
        results = Results(df)
    return results.best(metric, constraints, allow_degenerate=allow_degenerate)
