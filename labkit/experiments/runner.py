"""Grid runs: dataset rows x prompt variants x models (x repeats), through the one call path.

Why it is shaped like this:

- Every cell is one `Client.agenerate` call, so caching, retries, per-model rate limits,
  breakers, tracing and parsing are the call path's business; the runner adds only an overall
  `concurrency` cap, evaluation, progress, and turning every failure into a row.
- Resuming *is* the cache: the call path stores every finished call, so running the same
  experiment again with ``cache="use"`` replays finished cells for free and pays only for the
  rest. Nothing else needs to be checkpointed, and a kernel restart loses nothing either.
- A failing call is an error row (``passed=False``), never an exception that ends the grid.
  `stop()` lets the calls in flight finish and skips the rest; Ctrl-C or cancelling the future
  stops at once. Either way `Experiment.results` holds every row finished so far.
- Everything that can be checked before the first call is (dataset shape and labels, template
  variables, model names, parameters), so a typo fails in a second, not after an hour.

The result is one tidy DataFrame (columns: the contract in the `labkit.experiments.stats` docstring),
wrapped in `Results` for the summary, comparisons, charts, export and persistence.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import hashlib
import itertools
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._gc import relaxed_gc
from .._slots import request_slots
from .._version import __version__
from ..client import TRANSPORT_PARAMS, _check_cache_mode, default_client
from ..errors import DatasetError, InputError
from ..evaluation import ExactMatch, FieldMatch, combine, run_cell
from ..prompts import render, template_variables
from ..redact import scrub_secrets
from ..structured import to_json_schema
from ..trace_rows import trace_row
from ..types import OUTPUT_PARAMS, check_params, mend_text
from .datasets import load_dataset
from .progress import ProgressBar, ProgressState, make_bar
from .results import Results, build_frame

if TYPE_CHECKING:
    import pandas as pd

    from ..client import CacheMode, Client
    from ..evaluation import Evaluator, Score
    from ..types import Completion
    from .datasets import Dataset

__all__ = ["Experiment"]

_log = logging.getLogger(__name__)

_SECRET_PARAMS = frozenset({"api_key", "extra_headers"})
_UNSCORED = "interrupted before evaluation finished; run again to score it (the reply is cached)"
_ALREADY_RUNNING = "this experiment is already running; wait for it, or call stop() first"
_NAN = float("nan")
_CHUNK = 256  # cells prepared and looked up in the cache together


def variant_name(prompt: str, model: str) -> str:
    """The unit of comparison: ``f"{prompt} · {model}"``."""
    return f"{prompt} · {model}"


@dataclass(frozen=True, slots=True)
class _Cell:
    index: int
    """Position in plan order (item, prompt, model, repeat): the row's place in the frame."""
    item: int
    prompt: str
    model: str
    repeat: int


# ---------------------------------------------------------------------------- experiment
@dataclass(slots=True)
class _Tally:
    """A run's running counts, which `progress` reads while it runs."""

    started: float
    errors: int = 0
    hits: int = 0
    spent: float = 0.0


class Experiment:
    """A grid of prompt variants x models over a dataset, `repeats` samples per cell.

    `dataset` is a `Dataset`, a bundled name, a file path, a DataFrame or a list of dicts;
    `prompts` a {name: template} mapping or a list of templates (named p1, p2, ...) using
    `{{column}}` placeholders; `models` aliases or 'provider/model' ids. `schema` asks for JSON
    and parses it; `evaluators` score each reply (default: `FieldMatch()` when the dataset has
    labels and a schema is given, else `ExactMatch()` when an "answer" label exists, else none:
    then `passed` = parsed and no error). `params` are generation parameters for every call
    (temperature, max_tokens, ...); `concurrency` caps requests in flight over the whole grid
    (the call path also limits each model; a finished call's parse, storage and scoring hold
    no slot). Construction checks everything it can and raises before any call is made.
    """

    def __init__(
        self,
        dataset: Dataset | str | Path | pd.DataFrame | list[dict[str, Any]],
        prompts: Mapping[str, str] | Sequence[str] | str,
        models: Sequence[str] | str,
        *,
        schema: Any = None,
        evaluators: Sequence[Evaluator] | None = None,
        system: str | None = None,
        params: Mapping[str, Any] | None = None,
        repeats: int = 1,
        concurrency: int = 8,
        client: Client | None = None,
        name: str | None = None,
        confidence: bool = True,
    ) -> None:
        self.client: Client = client if client is not None else default_client()
        self.dataset: Dataset = load_dataset(dataset)  # empty / duplicate ids raise here
        self.prompts: dict[str, str] = _named_prompts(prompts)
        self.models: list[str] = _model_list(models)
        self.schema = schema
        self.system = mend_text(system) if isinstance(system, str) else system
        self.params: dict[str, Any] = dict(params or {})
        if not isinstance(repeats, int) or repeats < 1:
            raise InputError(f"repeats must be an int >= 1, got {repeats!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise InputError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.repeats = repeats
        self.concurrency = concurrency
        self.confidence = confidence
        self.name = name or self.dataset.name
        self._check_params()
        self._check_templates()
        self._resolve_models()
        self.evaluators: list[Evaluator] = self._pick_evaluators(evaluators)
        self._check_labels()
        self._records = self.dataset.records()
        self._total = len(self._records) * len(self.prompts) * len(self.models) * repeats
        self._ids = [str(r["id"]) for r in self._records]
        self._inputs = [{k: v for k, v in r.items() if k != "expected"} for r in self._records]
        self.json_schema = _json_schema(schema)
        self._fingerprint = self.dataset.fingerprint
        self.run_id: str = self._make_run_id()
        self.on_progress: list[Callable[[ProgressState], None]] = []
        self._rows: dict[int, dict[str, Any]] = {}
        self._prepared: dict[int, Any] = {}  # cell index -> its call, prepared by an earlier run
        self._prepared_for: tuple[Any, ...] | None = None
        self._shown: dict[tuple[str, int], str] = {}  # (prompt, item) -> what evaluators see
        self._stop = threading.Event()
        self._active = False
        self._state = ProgressState(0, self.total, 0, 0.0, 0, 0.0)
        self._tally = _Tally(0.0)
        self._status = "not started"

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        unknown = set(self.params) - OUTPUT_PARAMS - TRANSPORT_PARAMS
        if unknown:
            raise InputError(
                f"unknown generation parameter(s) {sorted(unknown)} in params=; supported: "
                f"{sorted(OUTPUT_PARAMS | TRANSPORT_PARAMS)}"
            )
        check_params(self.params)

    def _check_templates(self) -> None:
        templates = dict(self.prompts)
        if self.system is not None:
            templates["system"] = self.system
        for label, template in templates.items():
            if "expected" in {v.split(".")[0] for v in template_variables(template)}:
                raise InputError(
                    f"prompt {label!r} uses {{{{expected...}}}}: the labels are what the model is "
                    "scored against, so a prompt must not show them. Use input columns only: "
                    f"{', '.join(self.dataset.input_columns)}"
                )
        self.dataset.validate_for(templates)

    def _resolve_models(self) -> None:
        """Resolve every model before anything runs: an unknown name fails in a second."""
        registry = self.client.registry
        for model in self.models:
            registry.resolve(model, profile=self.client.profile)
            registry.check_known(model, profile=self.client.profile)

    def _pick_evaluators(self, given: Sequence[Evaluator] | None) -> list[Evaluator]:
        if given is not None:
            return list(given)

        fields = self.dataset.expected_fields
        if fields and self.schema is not None:
            return [FieldMatch()]
        if "answer" in fields:
            return [ExactMatch()]
        return []

    def _check_labels(self) -> None:
        """Evaluators that read ground truth need it on every row; say which rows lack it."""
        needy = [ev for ev in self.evaluators if _needs_labels(ev, self.dataset.input_columns)]
        if not needy:
            return
        try:
            self.dataset.validate_for({}, require_labels=True)
        except DatasetError as exc:
            names = ", ".join(getattr(ev, "name", type(ev).__name__) for ev in needy)
            raise DatasetError(
                f"{exc}\nThe evaluator(s) {names} compare against these labels. Label the rows, "
                "drop them (e.g. load_dataset(df[df.expected.notna()])), or pass "
                "evaluators=[...] that need no labels (evaluators=[] runs unscored).",
                problems=exc.problems,
            ) from None

    def _make_run_id(self) -> str:
        payload = {
            "dataset": self._fingerprint,
            "prompts": list(self.prompts.items()),
            "models": self.models,
            "schema": self.json_schema,
            "params": _output_params(self.params),
            "repeats": self.repeats,
            "system": self.system,
            "confidence": self.confidence if self.schema is not None else None,
        }
        blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
        return "run-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ plan
    @property
    def total(self) -> int:
        """Cells in the grid: items x prompts x models x repeats."""
        return self._total

    def _cells(self) -> Iterator[_Cell]:
        """Cells in execution order: repeat-major, then item, then prompt x model, so a run
        stopped half-way has every variant answered on the same items (paired statistics)."""
        names = list(self.prompts)
        n_p, n_m, n_r = len(names), len(self.models), self.repeats
        for r in range(n_r):
            for i in range(len(self._records)):
                for p, prompt in enumerate(names):
                    for m, model in enumerate(self.models):
                        index = ((i * n_p + p) * n_m + m) * n_r + r
                        yield _Cell(index, i, prompt, model, r)

    def preview(self) -> pd.DataFrame:
        """The planned calls in frame order (item, prompt, model, repeat), without running."""
        import pandas as pd

        rows = [
            {
                "item_id": self._ids[c.item],
                "prompt": c.prompt,
                "model": c.model,
                "variant": variant_name(c.prompt, c.model),
                "repeat": c.repeat,
                "text": render(self.prompts[c.prompt], self._inputs[c.item]),
            }
            for c in sorted(self._cells(), key=lambda c: c.index)
        ]
        return pd.DataFrame(
            rows, columns=["item_id", "prompt", "model", "variant", "repeat", "text"]
        )

    # ------------------------------------------------------------------ running
    def run(self, *, progress: bool = True, cache: CacheMode = "use") -> Results:
        """Run the grid and wait (works in scripts and in Jupyter: the calls run on the client's
        own loop). Ctrl-C stops it; `results` keeps the rows finished, and running again resumes
        from the cache."""
        coro = self._begin(progress, cache)
        try:
            results: Results = self.client.run(coro)
        except KeyboardInterrupt:
            self._interrupted_hint()
            raise
        self._warn_dead_models()
        return results

    async def arun(self, *, progress: bool = True, cache: CacheMode = "use") -> Results:
        """`run` for async code: awaits the grid, which runs on the client's loop."""
        fut = self.client.submit(self._begin(progress, cache))
        try:
            results: Results = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        self._warn_dead_models()
        return results

    def start(
        self, *, progress: bool = True, cache: CacheMode = "use"
    ) -> concurrent.futures.Future[Results]:
        """Start the grid without waiting (notebook buttons): a Future of the `Results`.
        `fut.cancel()` stops at once, `stop()` gracefully; `results` has the rows so far. No
        warning is raised for a model that failed every call (it would come from another
        thread): check `results.df.error`, as the builder widget does."""
        fut: concurrent.futures.Future[Results] = self.client.submit(self._begin(progress, cache))
        return fut

    def stop(self) -> None:
        """Graceful stop: calls in flight finish, cells not started are skipped; the run then
        returns a partial `Results`. Safe to call from any thread (a widget callback)."""
        self._stop.set()

    @property
    def results(self) -> Results:
        """The rows finished so far, also during a run and after an interruption."""
        rows = self._rows.copy()  # atomic under the GIL while the loop thread appends
        return Results(build_frame(list(rows.items())), self._meta(), self)

    @property
    def progress(self) -> ProgressState:
        """The progress of the run: as of now while it runs, as it ended after."""
        return self._snapshot() if self._active else self._state

    def _snapshot(self) -> ProgressState:
        t = self._tally
        return ProgressState(
            done=len(self._rows),
            total=self.total,
            errors=t.errors,
            cost_usd=t.spent,
            cache_hits=t.hits,
            elapsed_s=time.monotonic() - t.started,
        )

    def _begin(self, progress: bool, cache: CacheMode) -> Any:
        """Set up a run in the caller's thread (the bar must be displayed in the caller's
        notebook cell; a stop() made right after start() must not be lost); return the
        coroutine to run on the client's loop."""
        _check_cache_mode(cache)
        if self._active:
            raise RuntimeError(_ALREADY_RUNNING)
        self._stop.clear()
        bar = make_bar(self.total, self.name, on_stop=self.stop) if progress else None
        return self._execute(cache, bar)

    async def _execute(self, cache: CacheMode, bar: ProgressBar | None) -> Results:
        # The flag is owned by the loop thread (one thread: no race); a coroutine that never
        # started (its future cancelled first) never set it, so it cannot stay stuck.
        if self._active:
            if bar is not None:
                bar.close(self._state, "not started: already running")
            raise RuntimeError(_ALREADY_RUNNING)
        self._rows, tally = {}, _Tally(time.monotonic())
        self._tally = tally  # before `progress` reads it as the live count
        self._active = True
        self._check_prepared()
        self._status = "running"
        cells = self._cells()
        status = "failed"

        def publish() -> None:
            self._state = self._snapshot()
            if bar is not None:
                try:
                    bar.update(self._state)
                except Exception:  # a broken display must not end the run
                    _log.exception("progress bar update failed")
            for callback in list(self.on_progress):
                try:
                    callback(self._state)
                except Exception:
                    _log.exception("on_progress callback %r failed; the run carries on", callback)

        ready: collections.deque[tuple[_Cell, Any]] = collections.deque()

        async def worker() -> None:
            while not self._stop.is_set():
                if not ready and not self._prefetch(cells, ready, cache):
                    return
                cell, prepared = ready.popleft()
                row = await self._run_cell(cell, cache, prepared)
                self._rows[cell.index] = row
                tally.errors += row["error"] is not None
                tally.hits += bool(row["cache_hit"])
                cost = row["cost_usd"]
                tally.spent += cost if isinstance(cost, float) and not math.isnan(cost) else 0.0
                if bar is not None or self.on_progress:  # `progress` reads the tally itself
                    publish()

        with relaxed_gc():  # until the frame is built: 2,000 rows are many young objects
            try:
                publish()
                # `concurrency` caps requests in flight; twice as many workers let the next
                # request leave while a finished call is parsed, stored and scored (`_slots`).
                # A sequential grid stays strictly one call after another.
                workers = self.concurrency if self.concurrency == 1 else 2 * self.concurrency
                with request_slots(self.concurrency):
                    await asyncio.gather(*(worker() for _ in range(min(workers, self.total))))
                status = "stopped" if len(self._rows) < self.total else "done"
            except asyncio.CancelledError:
                status = "interrupted"
                raise
            finally:
                self._status = status
                publish()
                if bar is not None:
                    try:
                        bar.close(self._state, self._status_text(status))
                    except Exception:
                        _log.exception("progress bar close failed")
                self._record_run(status)
                self._active = False
            return self.results

    def _prefetch(
        self, cells: Iterator[_Cell], ready: collections.deque[tuple[_Cell, Any]], cache: CacheMode
    ) -> bool:
        """Queue the next cells, prepared, with their cache entries fetched in one query (a
        cached grid pays one SQLite round trip per chunk, not one per cell). A cell whose
        arguments fail to prepare is queued with that error, which becomes its error row."""
        chunk = list(itertools.islice(cells, _CHUNK))
        if not chunk:
            return False
        prepared: list[Any] = []
        for cell in chunk:
            try:
                prepared.append(self._prepare(cell))
            except Exception as exc:
                prepared.append(exc)
        if cache == "use":
            self.client.prefetch([p for p in prepared if not isinstance(p, Exception)])
        ready.extend(zip(chunk, prepared, strict=True))
        return True

    def _check_prepared(self) -> None:
        """Keep the calls prepared by earlier runs only while everything they were prepared
        from is unchanged: the client, its profile, and this experiment's prompts, params,
        system prompt, schema and models (all public attributes a user may reassign)."""
        schema = self.schema
        plan = (
            self.client,
            self.client.profile,
            json.dumps(
                [self.prompts, self.params, self.system, self.confidence, self.models],
                sort_keys=True,
                default=repr,
            ),
            schema,
            json.dumps(schema, sort_keys=True, default=repr) if isinstance(schema, dict) else None,
        )
        if plan != self._prepared_for:
            self._prepared, self._shown = {}, {}
            self._prepared_for = plan

    def _prepare(self, cell: _Cell) -> Any:
        """The cell's call, prepared. A re-run (resuming, or replaying from the cache) reuses
        the call an earlier run prepared when the registry still resolves its model to the same
        resolution (the registry memoises resolutions and drops them on any change; an A/B split
        is resolved anew each time, so it is never reused): rendering and keying 2,000 cells
        was a fifth of a cached re-run."""
        old = self._prepared.get(cell.index)
        if old is not None:
            client = self.client
            res = client.registry.resolve(
                cell.model, profile=client.profile, ab_key=self._ids[cell.item]
            )
            if res is old.resolution:
                return old.renew()
        p = self.client.prepare(**self._call_args(cell))
        self._prepared[cell.index] = p
        return p

    def _call_args(self, cell: _Cell) -> dict[str, Any]:
        return dict(
            template=self.prompts[cell.prompt],
            variables=self._inputs[cell.item],
            model=cell.model,
            schema=self.schema,
            confidence=self.confidence,
            sample=cell.repeat,
            run_id=self.run_id,
            item_id=self._ids[cell.item],
            system=self.system,
            **self.params,
        )

    async def _run_cell(self, cell: _Cell, cache: CacheMode, prepared: Any) -> dict[str, Any]:
        """One prepared call, evaluated, as a row; any exception (also one `prepare` raised,
        passed in as `prepared`) becomes an error row."""
        started = time.perf_counter()
        if isinstance(prepared, Exception):
            return self._error_row(cell, prepared, time.perf_counter() - started)
        shown = None
        if self.evaluators:  # rendered once per prompt and item, not per model and repeat
            shown = self._shown.get((cell.prompt, cell.item))
            if shown is None:
                shown = self._shown[cell.prompt, cell.item] = render(
                    self.prompts[cell.prompt], self._inputs[cell.item]
                )
        replied: list[Completion] = []
        try:
            got = await run_cell(
                self.client,
                self.evaluators,
                self._records[cell.item],
                prompt=shown,
                cache=cache,
                on_reply=replied.append,
                prepared=prepared,
            )
        except asyncio.CancelledError:
            if replied:  # the reply is paid for and cached: keep it as a row, then stop
                row = self._row(cell, replied[0], [])
                row.update(passed=False, error=_UNSCORED, error_type="CancelledError")
                self._rows[cell.index] = row
            raise
        except Exception as exc:
            if not replied:
                return self._error_row(cell, exc, time.perf_counter() - started)
            row = self._row(cell, replied[0], [])  # run_evaluators does not raise; belt and braces
            row.update(passed=False, error=f"evaluation failed: {exc}")
            row["error_type"] = type(exc).__name__
            return row
        return self._row(cell, got.completion, got.scores)

    # ------------------------------------------------------------------ rows
    def _base(self, cell: _Cell) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "item_id": self._ids[cell.item],
            "prompt": cell.prompt,
            "model": cell.model,
            "variant": variant_name(cell.prompt, cell.model),
            "repeat": cell.repeat,
        }

    def _row(self, cell: _Cell, done: Completion, scores: Sequence[Score]) -> dict[str, Any]:
        parsed = done.parsed
        if self.schema is not None and parsed is not None:
            parse_ok = bool(getattr(parsed, "ok", False))
            value = _plain(getattr(parsed, "value", None)) if parse_ok else None
            confidences = _float_dict(getattr(parsed, "confidences", None))
            repairs = [str(s) for s in (getattr(parsed, "repair_steps", None) or [])]
        else:
            parse_ok, value, confidences, repairs = True, None, {}, []
        if scores:
            score, passed = combine(scores)
            per = {s.evaluator: (_NAN if s.error is not None else float(s.value)) for s in scores}
            why = {s.evaluator: s.error or s.reason for s in scores if s.error or s.reason}
            field_correct: dict[str, bool] = {}
            for s in scores:
                field_correct.update({str(k): bool(v) for k, v in s.field_correct.items()})
        else:
            score, passed, per, why, field_correct = _NAN, parse_ok, {}, {}, {}
        conf_values = [v for v in confidences.values() if not math.isnan(v)]
        return self._base(cell) | {
            "model_id": done.model,
            "output": done.text,
            "parsed": value,
            "parse_ok": parse_ok,
            "passed": bool(passed),
            "score": float(score),
            "scores": per,
            "reasons": why,
            "confidence": sum(conf_values) / len(conf_values) if conf_values else _NAN,
            "confidences": confidences,
            "field_correct": field_correct,
            "prompt_tokens": done.usage.prompt_tokens,
            "completion_tokens": done.usage.completion_tokens,
            "cached_tokens": done.usage.cached_tokens,
            "cost_usd": float(done.cost_usd),
            "latency_s": float(done.latency_s),
            "ttft_s": float(done.ttft_s) if done.ttft_s is not None else _NAN,
            "cache_hit": bool(done.cache_hit),
            "repairs": repairs,
            "error": None,
            "error_type": None,
            "trace_id": done.trace_id,
        }

    def _error_row(self, cell: _Cell, exc: BaseException, elapsed: float) -> dict[str, Any]:
        try:
            model_id = self.client.registry.resolve(
                cell.model, profile=self.client.profile, ab_key=self._ids[cell.item]
            ).model
        except Exception:
            model_id = cell.model
        return self._base(cell) | {
            "model_id": model_id,
            "output": None,
            "parsed": None,
            "parse_ok": False,
            "passed": False,
            "score": 0.0 if self.evaluators else _NAN,
            "scores": {},
            "reasons": {},
            "confidence": _NAN,
            "confidences": {},
            "field_correct": {},
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "cost_usd": 0.0,
            "latency_s": float(elapsed),
            "ttft_s": _NAN,
            "cache_hit": False,
            "repairs": [],
            "error": scrub_secrets(str(exc) or type(exc).__name__),
            "error_type": type(exc).__name__,
            "trace_id": getattr(exc, "trace_id", None),
        }

    # ------------------------------------------------------------------ reporting
    def _meta(self) -> dict[str, Any]:

        specs: list[Any] = []
        for ev in self.evaluators:
            try:
                specs.append(ev.spec())
            except Exception:
                specs.append({"type": type(ev).__name__, "name": getattr(ev, "name", None)})
        return {
            "run_id": self.run_id,
            "name": self.name,
            "prompts": dict(self.prompts),
            "models": list(self.models),
            "schema": self.json_schema,
            "params": {k: v for k, v in self.params.items() if k not in _SECRET_PARAMS},
            "system": self.system,
            "confidence": self.confidence,
            "dataset": {
                "name": self.dataset.name,
                "path": self.dataset.path,
                "fingerprint": self._fingerprint,
                "rows": len(self.dataset),
                "expected_fields": self.dataset.expected_fields,
            },
            "evaluators": specs,
            "repeats": self.repeats,
            "planned": self.total,
            "completed": len(self._rows),
            "status": self._status,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "labkit_version": __version__,
        }

    def _status_text(self, status: str) -> str:
        s = self._state
        if status == "done":
            return "done" + (f" ({s.errors} errors: see results.df.error)" if s.errors else "")
        if status == "stopped":
            return f"stopped after {s.done}/{s.total}; run again to resume from the cache"
        if status == "interrupted":
            return f"interrupted after {s.done}/{s.total}; run again to resume from the cache"
        return status

    def _interrupted_hint(self) -> None:
        import sys

        s = self._state
        print(
            f"labkit: {self.name!r} interrupted after {s.done}/{s.total} calls. The finished "
            "rows are in experiment.results; run again to resume (finished calls come from the "
            "cache).",
            file=sys.stderr,
        )

    def _record_run(self, status: str) -> None:
        """One 'parent' trace row per run, so the trace browser can list runs."""
        try:
            s = self._state
            row = trace_row(
                "parent",
                "ok" if status in ("done", "stopped") else "error",
                run_id=self.run_id,
                event="experiment",
                cost_usd=s.cost_usd,
                latency_s=s.elapsed_s,
                meta={
                    "status": status,
                    "name": self.name,
                    "done": s.done,
                    "total": s.total,
                    "errors": s.errors,
                    "cache_hits": s.cache_hits,
                    "prompts": list(self.prompts),
                    "models": self.models,
                },
            )
            self.client.tracer.record(**row)
        except Exception:
            _log.exception("could not record the run's trace row")

    def _warn_dead_models(self) -> None:
        """A model that failed every one of its calls deserves a message, not just red rows."""
        by_model: dict[str, list[dict[str, Any]]] = {}
        for row in self._rows.values():
            by_model.setdefault(row["model"], []).append(row)
        for model, rows in by_model.items():
            if rows and all(r["error"] is not None for r in rows):
                first = rows[0]
                warnings.warn(
                    f"model {model!r} failed all {len(rows)} of its calls "
                    f"({first['error_type']}: {_short(first['error'])}). Its rows are error rows "
                    "(passed=False); check the model name, key and endpoint, then run again.",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def __repr__(self) -> str:
        return (
            f"Experiment(name={self.name!r}, run_id={self.run_id!r}, items={len(self.dataset)}, "
            f"prompts={list(self.prompts)}, models={self.models}, repeats={self.repeats}, "
            f"calls={self.total}, status={self._status!r})"
        )


# ---------------------------------------------------------------------------- helpers
def _named_prompts(prompts: Mapping[str, str] | Sequence[str] | str) -> dict[str, str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Mapping):
        named = {str(k): v for k, v in prompts.items()}
    else:
        named = {f"p{i}": t for i, t in enumerate(prompts, 1)}
    if not named:
        raise InputError("no prompts given; pass {name: template} or a list of templates")
    bad = [name for name, t in named.items() if not isinstance(t, str) or not t.strip()]
    if bad:
        raise InputError(f"prompt(s) {bad} are not non-empty template strings")
    return {name: mend_text(t) for name, t in named.items()}  # as build_messages sends them


def _model_list(models: Sequence[str] | str) -> list[str]:
    listed = [models] if isinstance(models, str) else list(models)
    if not listed:
        raise InputError("no models given; pass a list of aliases or 'provider/model' ids")
    bad = [m for m in listed if not isinstance(m, str) or not m.strip()]
    if bad:
        raise InputError(f"model names must be non-empty strings, got {bad!r}")
    dupes = sorted({m for m in listed if listed.count(m) > 1})
    if dupes:
        raise InputError(f"model(s) {dupes} are listed more than once")
    return listed


def _needs_labels(ev: Evaluator, columns: Sequence[str]) -> bool:
    """Whether an evaluator reads `item["expected"]` (and so fails on an unlabelled row)."""
    kind = getattr(ev, "type_name", "")
    if kind == "field_match":
        return True
    if kind in ("exact_match", "numeric_tolerance"):
        try:
            fixed = ev.spec().get("expected")  # present (not None) only when given
        except Exception:
            fixed = None
        return fixed is None and getattr(ev, "expected_key", None) not in columns
    return bool(getattr(ev, "include_reference", False))


def _json_schema(schema: Any) -> dict[str, Any] | None:
    """The output JSON Schema (for meta and the run id), without the confidence wrapper."""
    if schema is None:
        return None

    out: dict[str, Any] | None = to_json_schema(schema)
    return out


def _output_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k in OUTPUT_PARAMS}


def _plain(value: Any) -> Any:
    """Parsed values as plain JSON-able Python (pydantic models dumped)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value


def _float_dict(values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping):
        return {}
    out: dict[str, float] = {}
    for k, v in values.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _short(text: Any, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
