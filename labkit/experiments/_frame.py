"""Helpers shared by `labkit.experiments.stats` and `labkit.experiments.calibration`: column checks and vectorised
group arithmetic over the results frame (the contract in the `labkit.experiments.stats` docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd


def _missing(value: Any) -> bool:
    """None, NaN (any float type), pd.NA and NaT; never raises on odd values (arrays, NA)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def _check(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Fail early with the contract's column names; an empty frame may lack columns."""
    missing = [c for c in columns if c not in df.columns]
    if not missing:
        return df
    if len(df) == 0:
        return df.reindex(columns=[*df.columns, *missing])
    raise ValueError(
        f"results frame lacks column(s) {missing}; the contract is in the labkit.experiments.stats docstring"
    )


def _no_duplicates(df: pd.DataFrame, by: str) -> None:
    """Refuse two rows for one (item, variant, repeat): averaging them would hide a bad join.

    The variant column identifies a row even when grouping by something coarser (``model``
    spans several prompts); without one, the grouping column does. Raises
    `labkit.errors.InputError` naming up to five of the duplicated keys.
    """
    unit = "variant" if "variant" in df.columns else by
    keys = [c for c in ("item_id", unit, "repeat") if c in df.columns]
    if len(df) == 0 or "item_id" not in keys or unit not in keys:
        return
    dup = df.duplicated(keys, keep=False)
    if not dup.any():
        return
    from ..errors import InputError

    seen = df.loc[dup, keys].drop_duplicates()
    names = ", ".join(str(tuple(r)) for r in seen.head(5).itertuples(index=False))
    more = f" and {len(seen) - 5} more" if len(seen) > 5 else ""
    raise InputError(
        f"{int(dup.sum())} rows share an ({', '.join(keys)}) key with another row: {names}{more}. "
        "Each item should have one row per group and repeat; drop the duplicates "
        f"(df.drop_duplicates({keys!r})) or give the repeats distinct 'repeat' numbers"
    )


def _keys(df: pd.DataFrame, by: str) -> pd.Index:
    """Group keys in a stable, meaningful order: categories, else first appearance."""
    col = df[by]
    if isinstance(col.dtype, pd.CategoricalDtype):
        return pd.Index(col.cat.categories, name=by)
    return pd.Index(pd.unique(col.dropna()), name=by)


def _as_float(s: pd.Series) -> pd.Series:
    """Bool/number/None column -> float64 with NaN for missing (also for pandas' NA dtypes)."""
    return pd.to_numeric(s, errors="coerce").astype("float64")


def _errored(df: pd.DataFrame) -> pd.Series:
    """Rows that ended in an error; a frame without an ``error`` column has none."""
    if "error" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["error"].notna()


def _ints(s: pd.Series, keys: pd.Index) -> np.ndarray:
    """Per-group counts aligned to `keys` (absent group -> 0)."""
    return s.reindex(keys, fill_value=0).round().astype("int64").to_numpy()


def _floats(s: pd.Series, keys: pd.Index) -> np.ndarray:
    """Per-group values aligned to `keys` (absent group -> NaN)."""
    return s.reindex(keys).to_numpy(dtype=float)


def _ratio(num: Any, den: Any) -> np.ndarray:
    """Elementwise ratio that is NaN (not inf, not a warning) where the denominator is 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _field_values(col: pd.Series, name: str) -> pd.Series:
    """Pull one key out of a column of dicts (missing dict or key -> NaN)."""
    vals = [d.get(name) if isinstance(d, dict) else None for d in col]
    return _as_float(pd.Series(vals, index=col.index, dtype=object))


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return NormalDist().inv_cdf(1 - alpha / 2)


def _wilson(k: np.ndarray, n: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    z = _z(alpha)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    safe_n = np.where(n > 0, n, 1.0)
    p = k / safe_n
    denom = 1 + z * z / safe_n
    center = (p + z * z / (2 * safe_n)) / denom
    half = z * np.sqrt(p * (1 - p) / safe_n + z * z / (4 * safe_n * safe_n)) / denom
    low = np.where(n > 0, np.clip(center - half, 0.0, 1.0), np.nan)
    high = np.where(n > 0, np.clip(center + half, 0.0, 1.0), np.nan)
    return low, high


def _binary(*values: np.ndarray) -> bool:
    """Every value 0 or 1: one pass/fail per item, where the exact and score methods apply."""
    return all(bool(np.isin(v, (0.0, 1.0)).all()) for v in values)


def _item_matrix(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """items x groups matrix of per-item success (mean over repeats); NaN = not answered."""
    df = _check(df, [by, "item_id", "passed"])
    _no_duplicates(df, by)
    keys = _keys(df, by)
    y = _as_float(df["passed"])
    ok = y.notna()
    m = y[ok].groupby([df.loc[ok, "item_id"], df.loc[ok, by]], observed=True).mean()
    mat = m.unstack(by) if len(m) else pd.DataFrame(index=pd.Index([], name="item_id"))
    return mat.reindex(columns=keys)
