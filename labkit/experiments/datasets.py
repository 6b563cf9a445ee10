"""Labelled datasets: the rows a grid of prompts x models runs over, and the labels it is scored on.

A `Dataset` is a thin wrapper over a pandas DataFrame with one row per item:

- `id` (str, unique) names the item in results, traces and exported configs;
- every other column except `expected` is an input a prompt template can use (`{{review}}`);
- `expected` holds the ground truth as a dict per row (`{"sentiment": "positive"}`), or None
  for an unlabelled row.

`load_dataset` accepts a bundled name (`"loan_triage"`), a `.jsonl` / `.json` / `.csv` file,
a DataFrame or a list of dicts, and always normalises to that shape:

- CSV files carry labels as `expected.<field>` columns (collected into the dict; empty cells
  become None), or as one `expected` column holding a JSON object per row; CSV cells load as
  strings (use JSONL to keep numbers, lists and nulls typed);
- without an id column, ids are generated from row order as `row-0001`, `row-0002`, ... (so
  they are stable only while the row order is); `Dataset.generated_ids` says when that happened;
- problems are reported all at once, as a `DatasetError` whose `.problems` lists each one.

Bundled datasets live in the repository's `datasets/` folder (each with a card,
`datasets/<name>.md`); set `LABKIT_DATASETS` to a folder to use another set.
"""

from __future__ import annotations

import difflib
import hashlib
import html
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DatasetError
from ..prompts import template_variables
from ..redact import map_strings
from ..types import mend_text
from ._frame import _missing

__all__ = ["DATASETS_ENV", "Dataset", "datasets_dir", "list_datasets", "load_dataset"]

DATASETS_ENV = "LABKIT_DATASETS"
"""Environment variable naming a folder of datasets that replaces the bundled `datasets/`."""

_SUFFIXES = (".jsonl", ".json", ".csv")
_EXPECTED = "expected"
_PREFIX = "expected."
_SHOW = 10  # how many offending ids/lines an error message spells out


class Dataset:
    """Rows to run over plus their ground truth. Build one with `load_dataset`.

    Treat `df` as read-only; `sample` and `head` return new datasets.
    """

    df: pd.DataFrame
    """One row per item: `id`, the input columns, then `expected` (dict or None)."""
    name: str
    """Bundled name, file stem, or the `name=` given to `load_dataset`."""
    path: str | None
    """The file it was read from, if any."""
    generated_ids: bool
    """True when the source had no id column and ids were made from row order."""

    def __init__(
        self, df: pd.DataFrame, *, name: str, path: str | None = None, generated_ids: bool = False
    ) -> None:
        self.df = df
        self.name = name
        self.path = path
        self.generated_ids = generated_ids

    # ------------------------------------------------------------------ shape
    def __len__(self) -> int:
        return len(self.df)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, rows={len(self)}, inputs={self.input_columns}, "
            f"expected={self.expected_fields})"
        )

    @property
    def input_columns(self) -> list[str]:
        """Columns a template can use: everything except `id` and `expected`."""
        return [str(c) for c in self.df.columns if c not in ("id", _EXPECTED)]

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in self.df["id"]]

    @property
    def expected_fields(self) -> list[str]:
        """Ground-truth field names, in the order they first appear."""
        seen: dict[str, None] = {}
        for value in self.df[_EXPECTED]:
            if isinstance(value, Mapping):
                seen.update(dict.fromkeys(str(k) for k in value))
        return list(seen)

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the rows in order: ids, inputs and labels, not the name or path.

        The same content gives the same fingerprint however it was loaded (key order and
        numpy/pandas scalar types do not matter); any changed value, row or order changes it.
        """
        digest = hashlib.sha256()
        for record in self.records():
            line = json.dumps(
                record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
            )
            digest.update(line.encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()

    # ------------------------------------------------------------------ access
    def records(self) -> list[dict[str, Any]]:
        """One plain dict per row (missing values as None), `expected` as a dict or None."""
        columns = [str(c) for c in self.df.columns]
        return [
            {c: _plain(v) for c, v in zip(columns, row, strict=True)}
            for row in self.df.itertuples(index=False, name=None)
        ]

    def expected(self, item_id: str) -> dict[str, Any]:
        """The ground-truth dict of one item (a copy)."""
        positions = np.flatnonzero(self.df["id"].to_numpy(dtype=object) == str(item_id))
        if len(positions) == 0:
            close = _suggest(str(item_id), self.ids, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise DatasetError(f"no item with id {item_id!r}.{hint}", path=self._where)
        value = self.df[_EXPECTED].iloc[int(positions[0])]
        if not isinstance(value, Mapping):
            raise DatasetError(
                f"item {item_id!r} has no expected labels. Add them, or call "
                "validate_for(templates, require_labels=True) before a scored run to find every "
                "such row.",
                path=self._where,
            )
        return {str(k): _plain(v) for k, v in value.items()}

    def label_counts(self, field: str) -> pd.Series:
        """How often each value of one expected field occurs (None counted as a value)."""
        if field not in self.expected_fields:
            raise DatasetError(
                f"no expected field {field!r}; fields are {self.expected_fields}", path=self._where
            )
        values = [
            _label(v.get(field)) if isinstance(v, Mapping) else None for v in self.df[_EXPECTED]
        ]
        return pd.Series(values, dtype=object, name=field).value_counts(dropna=False)

    # ------------------------------------------------------------------ checks
    def validate_for(
        self, templates: Iterable[str] | Mapping[str, str], *, require_labels: bool = False
    ) -> None:
        """Check the dataset can feed these templates, before any model is called.

        Raises DatasetError listing every `{{variable}}` that has no column (with the
        template(s) that need it), every needed column with empty cells, and, when
        `require_labels`, every row without expected labels. `templates` may be a mapping of
        variant name -> template, so the message names the variant.
        """
        if isinstance(templates, str):  # one template, not an iterable of characters
            templates = [templates]
        named = (
            list(templates.items())
            if isinstance(templates, Mapping)
            else [(f"template #{i}", t) for i, t in enumerate(templates, 1)]
        )
        needed: dict[str, list[str]] = {}
        for label, template in named:
            for var in sorted(template_variables(template)):
                needed.setdefault(var, []).append(f"{label} ({_preview(template, 40)!r})")
        columns = [str(c) for c in self.df.columns]
        problems: list[str] = []
        for var, users in needed.items():
            if var not in columns:
                close = _suggest(var, self.input_columns, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    f"template variable {var!r} has no column (needed by {', '.join(users)}){hint}"
                )
                continue
            empty = [i for i, v in zip(self.ids, self.df[var], strict=True) if _missing(v)]
            if empty:
                problems.append(
                    f"column {var!r} is empty in {len(empty)} row(s): {_some(empty)} "
                    f"(needed by {', '.join(users)})"
                )
        if require_labels:
            unlabelled = [
                i
                for i, v in zip(self.ids, self.df[_EXPECTED], strict=True)
                if not isinstance(v, Mapping) or not v
            ]
            if unlabelled:
                problems.append(
                    f"{len(unlabelled)} row(s) have no expected labels: {_some(unlabelled)}"
                )
        if problems:
            raise DatasetError(
                f"dataset {self.name!r} cannot be used as asked ({len(problems)} problem(s)):\n- "
                + "\n- ".join(problems)
                + f"\nColumns available: {', '.join(self.input_columns) or '(none)'}.",
                path=self._where,
                problems=problems,
            )

    # ------------------------------------------------------------------ subsets
    def sample(self, n: int, seed: int = 0) -> Dataset:
        """`n` rows chosen at random with `seed`, kept in their original order."""
        if not 0 < n <= len(self):
            raise DatasetError(
                f"cannot sample {n} row(s) from {len(self)}; pass 1 <= n <= {len(self)}",
                path=self._where,
            )
        picked = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return self._subset(picked, f"{self.name}-sample{n}-seed{seed}")

    def head(self, n: int = 5) -> Dataset:
        """The first `n` rows."""
        return self._subset(np.arange(min(max(n, 0), len(self))), f"{self.name}-head{n}")

    def _subset(self, positions: np.ndarray, name: str) -> Dataset:
        df = self.df.iloc[positions].reset_index(drop=True)
        return Dataset(df, name=name, path=self.path, generated_ids=self.generated_ids)

    # ------------------------------------------------------------------ output
    def save(self, path: str | Path) -> Path:
        """Write `.jsonl` (one object per row) or `.csv` (labels as `expected.<field>` columns).

        CSV stores lists and dicts in input columns as JSON text; they load back as strings.
        """
        target = Path(path)
        if target.suffix == ".jsonl":
            with target.open("w", encoding="utf-8") as fh:
                for record in self.records():
                    fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        elif target.suffix == ".csv":
            flat = self.df.drop(columns=[_EXPECTED]).map(_csv_cell)
            for field in self.expected_fields:
                flat[_PREFIX + field] = [
                    _csv_cell(v.get(field)) if isinstance(v, Mapping) else None
                    for v in self.df[_EXPECTED]
                ]
            flat.to_csv(target, index=False)
        else:
            raise DatasetError(
                f"cannot save as {target.suffix or 'a file without suffix'}; use .jsonl or .csv",
                path=str(target),
            )
        return target

    def _repr_html_(self) -> str:
        parts = [
            f"<b>{html.escape(self.name)}</b> &mdash; {len(self)} rows",
            f"inputs: {html.escape(', '.join(self.input_columns) or '(none)')}",
            f"expected: {html.escape(', '.join(self.expected_fields) or '(unlabelled)')}",
            f"fingerprint <code>{self.fingerprint[:12]}</code>",
        ]
        if self.generated_ids:
            parts.append("ids generated from row order")
        lines = [" &middot; ".join(parts)]
        for field in self.expected_fields:
            counts = self.label_counts(field)
            if len(counts) <= 8:
                dist = ", ".join(f"{html.escape(str(k))} {v}" for k, v in counts.items())
                lines.append(f"{html.escape(field)}: {dist}")
        preview = self.df.head(5).map(lambda v: _preview(_csv_cell(v), 80))
        table = preview.to_html(index=False, escape=True, border=0)
        body = "".join(f"<p style='margin:2px 0'>{line}</p>" for line in lines)
        more = (
            f"<p style='margin:2px 0'>&hellip; {len(self) - 5} more rows</p>"
            if len(self) > 5
            else ""
        )
        return f"<div class='labkit-dataset'>{body}{table}{more}</div>"

    @property
    def _where(self) -> str:
        return self.path or self.name


# ---------------------------------------------------------------------- loading
def datasets_dir() -> Path:
    """Where bundled datasets are looked up: `$LABKIT_DATASETS`, else the repo's `datasets/`."""
    override = os.environ.get(DATASETS_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "datasets"


def list_datasets() -> list[str]:
    """Names `load_dataset` accepts as bundled datasets, e.g. ['loan_triage', ...]."""
    folder = datasets_dir()
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.is_file() and p.suffix in _SUFFIXES})


def load_dataset(
    source: str | Path | pd.DataFrame | list[dict[str, Any]] | Dataset,
    *,
    name: str | None = None,
    id_column: str = "id",
) -> Dataset:
    """Load a bundled dataset by name, a .jsonl/.json/.csv file, a DataFrame or a list of dicts.

    `id_column` names the column holding item ids (copied into `id`); without it ids are made
    from row order (`row-0001`, ...). Raises DatasetError for an unknown name, an unreadable
    file, an empty dataset, missing or duplicate ids, or malformed labels.
    """
    if isinstance(source, Dataset):
        return source
    if isinstance(source, pd.DataFrame):
        return _build(source.copy(), name or "dataframe", None, id_column)
    if isinstance(source, list):
        bad = [i for i, row in enumerate(source) if not isinstance(row, Mapping)]
        if bad:
            raise DatasetError(
                f"rows must be dicts; item(s) {_some([str(i) for i in bad])} are not",
                problems=[f"item {i}: {type(source[i]).__name__}" for i in bad],
            )
        return _build(_frame(source), name or "records", None, id_column)
    if isinstance(source, Path | str):
        path = _resolve(source)
        return _build(_read(path), name or path.stem, str(path), id_column)
    raise DatasetError(
        f"cannot load a dataset from {type(source).__name__}; pass a bundled name "
        f"({', '.join(list_datasets()) or 'none found'}), a .jsonl/.json/.csv path, a "
        "pandas DataFrame or a list of dicts"
    )


def _resolve(source: str | Path) -> Path:
    if isinstance(source, Path) or source.endswith(_SUFFIXES) or os.sep in source or "/" in source:
        path = Path(source).expanduser()
        if path.suffix not in _SUFFIXES:
            raise DatasetError(
                f"unsupported file type {path.suffix or '(none)'}; use .jsonl, .json or .csv",
                path=str(path),
            )
        if not path.is_file():
            raise DatasetError("file not found; check the path", path=str(path))
        return path
    folder = datasets_dir()
    for suffix in _SUFFIXES:
        candidate = folder / f"{source}{suffix}"
        if candidate.is_file():
            return candidate
    names = list_datasets()
    close = _suggest(source, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    known = ", ".join(names) if names else f"none found in {folder} (set {DATASETS_ENV})"
    raise DatasetError(
        f"unknown dataset {source!r}.{hint} Bundled datasets: {known}. "
        "To load a file, pass a path ending in .jsonl, .json or .csv."
    )


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        text = _decode(path)  # the same UTF-8 check, with byte offset, for every file type
        try:
            return pd.read_csv(
                io.StringIO(text), dtype=object, keep_default_na=False, na_values=[""]
            )
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DatasetError(
                f"not a readable CSV file ({exc}); save it as UTF-8 CSV with a header row",
                path=str(path),
            ) from exc
    text = _decode(path)
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. A .json "
                'dataset is one list of objects, e.g. [{"id": "a1", "text": "...", '
                '"expected": {...}}]',
                path=str(path),
            ) from exc
        if isinstance(data, Mapping) and isinstance(data.get("rows"), list):
            data = data["rows"]
        if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
            raise DatasetError(
                'expected a JSON list of objects (or {"rows": [...]})', path=str(path)
            )
        return _frame(data)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(value, dict):
            problems.append(f"line {number}: a JSON {type(value).__name__}, not an object")
            continue
        rows.append(value)
    if problems:
        raise DatasetError(
            f"{len(problems)} line(s) are not JSON objects ({'; '.join(problems[:_SHOW])}"
            f"{'; ...' if len(problems) > _SHOW else ''}). Each line must "
            'hold exactly one object, e.g. {"id": "a1", "text": "...", "expected": {...}}; fix '
            "or delete those lines (a trailing comma or a record split over lines is the usual "
            "cause).",
            path=str(path),
            problems=problems,
        )
    return _frame(rows)


def _decode(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 are a DatasetError naming the byte offset
    and line, so the user can find them (a raw UnicodeDecodeError names neither the file nor
    the fix)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"(line {line}) cannot be decoded ({exc.reason}). Save the file as UTF-8 (e.g. "
            "iconv -f latin1 -t utf-8), or fix that line",
            path=str(path),
            problems=[f"line {line}: byte offset {exc.start}: not UTF-8"],
        ) from None


def _frame(rows: list[Any]) -> pd.DataFrame:
    """A DataFrame of object columns, so dict and list cells survive untouched."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return pd.DataFrame(
        {c: pd.Series([row.get(c) for row in rows], dtype=object) for c in columns},
        index=pd.RangeIndex(len(rows)),
    )


def _build(df: pd.DataFrame, name: str, path: str | None, id_column: str) -> Dataset:
    where = path or name
    if len(df) == 0:
        raise DatasetError(
            "dataset is empty: it has no rows. Add at least one row "
            '(e.g. {"id": "a1", "text": "...", "expected": {...}}).',
            path=where,
        )
    df = df.reset_index(drop=True)
    df.columns = [str(c) for c in df.columns]
    expected = _collect_expected(df, where)
    df = df.drop(columns=[c for c in df.columns if c == _EXPECTED or c.startswith(_PREFIX)])

    generated = id_column not in df.columns
    if generated:
        if "id" in df.columns:
            raise DatasetError(
                f"id_column={id_column!r} is not a column, but an 'id' column exists; "
                "pass id_column='id' or rename the column",
                path=where,
            )
        width = max(4, len(str(len(df))))
        ids = [f"row-{i:0{width}d}" for i in range(1, len(df) + 1)]
    else:
        if id_column != "id" and "id" in df.columns:
            raise DatasetError(
                f"both {id_column!r} and 'id' columns exist; drop or rename 'id'", path=where
            )
        raw = [_id_text(v) for v in df[id_column]]
        blank = [str(i + 1) for i, v in enumerate(raw) if v is None]
        if blank:
            raise DatasetError(
                f"{len(blank)} row(s) have no {id_column!r}: row(s) {_some(blank)} (1-based). "
                "Give every row an id, or drop the column to have ids generated from row order.",
                path=where,
                problems=[f"row {r}: missing id" for r in blank],
            )
        ids = [str(v) for v in raw]
    counts = pd.Series(ids, dtype=object).value_counts()
    dupes = [str(i) for i, c in counts.items() if c > 1]
    if dupes:
        raise DatasetError(
            f"{len(dupes)} id(s) appear more than once: {_some(dupes)}. Ids must be unique; "
            "rename or remove the repeated rows.",
            path=where,
            problems=[f"id {d!r} appears {counts[d]} times" for d in dupes],
        )
    inputs = [c for c in df.columns if c != "id"]
    out = pd.DataFrame({"id": pd.Series(ids, dtype=object)})
    for column in inputs:  # object columns, lone surrogates escaped (Arrow strings refuse them)
        values = [map_strings(v, mend_text) for v in df[column].to_numpy(dtype=object)]
        out[column] = pd.Series(values, dtype=object, index=out.index)
    out[_EXPECTED] = pd.Series([map_strings(v, mend_text) for v in expected], dtype=object)
    return Dataset(out, name=name, path=path, generated_ids=generated)


def _collect_expected(df: pd.DataFrame, where: str) -> list[dict[str, Any] | None]:
    prefixed = [c for c in df.columns if c.startswith(_PREFIX)]
    if prefixed and _EXPECTED in df.columns:
        raise DatasetError(
            f"has both an 'expected' column and {', '.join(prefixed)}; keep one form",
            path=where,
        )
    if prefixed:
        out: list[dict[str, Any] | None] = []
        for row in df[prefixed].itertuples(index=False, name=None):
            labels = {c[len(_PREFIX) :]: _plain(v) for c, v in zip(prefixed, row, strict=True)}
            out.append(labels if any(v is not None for v in labels.values()) else None)
        return out
    if _EXPECTED not in df.columns:
        return [None] * len(df)
    result: list[dict[str, Any] | None] = []
    problems: list[str] = []
    for number, value in enumerate(df[_EXPECTED], 1):
        if _missing(value) or value == "":
            result.append(None)
        elif isinstance(value, Mapping):
            result.append({str(k): _plain(v) for k, v in value.items()})
        elif isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                problems.append(f"row {number}: 'expected' is not JSON ({exc.msg})")
                result.append(None)
                continue
            if isinstance(parsed, dict):
                result.append(parsed)
            else:
                problems.append(f"row {number}: 'expected' is a {type(parsed).__name__}")
                result.append(None)
        else:
            problems.append(f"row {number}: 'expected' is a {type(value).__name__}")
            result.append(None)
    if problems:
        raise DatasetError(
            f"{len(problems)} row(s) have an 'expected' value that is not an object "
            f"({'; '.join(problems[:_SHOW])}). 'expected' must be a JSON object of "
            "ground-truth fields, e.g. "
            '{"label": "positive"}, or empty for an unlabelled row.',
            path=where,
            problems=problems,
        )
    return result


# ---------------------------------------------------------------------- helpers
def _plain(value: Any) -> Any:
    """Plain Python for JSON and comparisons: numpy scalars unwrapped, NaN/NA -> None."""
    if _missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        return None if _missing(value) else value
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _label(value: Any) -> Any:
    value = _plain(value)
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def _id_text(value: Any) -> str | None:
    value = _plain(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _csv_cell(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def _preview(text: Any, limit: int) -> str:
    flat = "" if text is None else " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _suggest(word: str, choices: list[str], n: int) -> list[str]:
    """Close matches, ignoring case."""
    by_lower = {c.lower(): c for c in choices}
    return [by_lower[m] for m in difflib.get_close_matches(word.lower(), list(by_lower), n=n)]


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def run_records(results: Any) -> list[dict[str, Any]]:
    """Dataset rows of the run: from the experiment, else reloaded and fingerprint-checked."""
    experiment = getattr(results, "experiment", None)
    if experiment is not None:
        return list(experiment.dataset.records())
    info = (getattr(results, "meta", None) or {}).get("dataset") or {}
    source = info.get("path") or (info.get("name") if info.get("name") in list_datasets() else None)
    if not source:
        raise ConfigError(
            "these results were read from a file and their dataset was not a file labkit can "
            "reload (it came from a DataFrame or a list); export from the Results the "
            "Experiment returned, or run on a .jsonl/.csv dataset",
            where="export_config",
        )

    ds = load_dataset(source)
    if info.get("fingerprint") and ds.fingerprint != info["fingerprint"]:
        raise ConfigError(
            f"dataset {source!r} has changed since the run (fingerprint differs); the suite and "
            "evidence would not match. Export from the Results of a fresh run",
            where="export_config",
        )
    return list(ds.records())
