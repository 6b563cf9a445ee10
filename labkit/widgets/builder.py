"""Experiment builder: pick a dataset, write prompt variants, choose models, run, watch, compare.

Why a form: trying a prompt idea should take one edit and one click, with mistakes (an empty
prompt, a `{{variable}}` the dataset lacks, no model, a file that does not parse) caught beside
their field before a call is paid for. It builds the same `labkit.Experiment` a cell would, so
a grid run in code replays from the cache in the builder, and vice versa.

The run goes on labkit's loop thread (`Experiment.start`), so the kernel stays free: Stop
works, and progress (with the running cost) and the breaker panel update while it runs. When it
ends, the results appear in tabs: summary and charts, the A/B compare view, the trace browser
for this run, the breaker/rate-limit panel, and "Export winner".
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import evaluation
from ._common import FigureBox, Notice, describe_error, esc, guarded
from ._models import error_summary, models_html
from .prompts import PromptEditor, PromptRow

if TYPE_CHECKING:
    from ..client import Client
    from ..experiments.datasets import Dataset
    from ..experiments.progress import ProgressState
    from ..experiments.results import Results
    from ..experiments.runner import Experiment

__all__ = ["EVALUATORS", "ExperimentBuilder"]

FILE = "file…"
EVALUATORS = {
    "field match (labels)": lambda: evaluation.FieldMatch(),
    "schema valid": lambda: evaluation.SchemaValid(),
    "confidence ≥ 0.7": lambda: evaluation.ConfidenceAbove(0.7),
    "exact match (answer)": lambda: evaluation.ExactMatch(),
}
"""Evaluator choices of the form; none selected = the experiment's automatic choice."""
TEMPERATURES = ["model default", 0.0, 0.3, 0.7, 1.0]
FIRST_CHARTS = ("success", "forest", "cost", "latency")
TABS = (
    "Summary", "Item matrix", "A/B compare", "Traces", "Breakers & limits", "Export winner",
    "Prompt as sent",
)  # fmt: skip


class ExperimentBuilder:
    """The form that builds and runs an `Experiment`; see the module docstring.

    Every argument pre-fills the form. `rows` takes the first N dataset rows (small grids
    first: the cache makes growing them cheap later); `export_path` is where "Export winner"
    writes the config.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        dataset: Any = None,
        prompts: Mapping[str, str] | None = None,
        models: Sequence[str] | None = None,
        schema: Any = None,
        evaluators: Sequence[str] = (),
        rows: int | None = 20,
        max_tokens: int = 48,
        temperature: float | None = None,
        repeats: int = 1,
        concurrency: int = 4,
        export_path: str = "winner.yaml",
    ) -> None:
        import ipywidgets as w

        from ..client import default_client
        from ..experiments.datasets import list_datasets
        from .policy import PolicyPanel

        self.client = client or default_client()
        self.export_path = export_path
        self._given: dict[str, Dataset] = {}
        self.dataset: Dataset | None = None
        """The loaded dataset (all rows); `rows` picks the first N for a run."""
        self.experiment: Experiment | None = None
        self.future: concurrent.futures.Future[Results] | None = None
        self.results: Results | None = None
        self.timings: dict[str, float] = {}
        """Seconds from Run to: 'first_chart' (live, of the rows so far; else the final one),
        'results' (grid done), 'final_chart', 'all' (every tab built)."""
        self._finished = threading.Event()
        self._finished.set()
        self._last_draw = 0.0
        self._run_started = 0.0
        self._stopping = False
        self._live = threading.Lock()
        self._live_on = False

        # ---- dataset
        self.notice = Notice()
        self.dataset_notice = Notice()
        names = list_datasets()
        self.dataset_pick = w.Dropdown(
            description="dataset",
            options=[*names, FILE],
            value=None,
            layout=w.Layout(width="300px"),
        )
        self.dataset_path = w.Text(
            placeholder="path to a .jsonl / .json / .csv file",
            continuous_update=False,
            layout=w.Layout(width="340px", display="none"),
        )
        self.load_button = w.Button(
            description="Load", icon="upload", layout=w.Layout(width="80px")
        )
        self.rows = w.BoundedIntText(
            value=rows or 0, min=0, max=1_000_000, description="rows",
            tooltip="first N rows (0 = all)", layout=w.Layout(width="150px"),
        )  # fmt: skip
        self.dataset_preview = w.HTML()
        # What stops a run, shown beside the field it is about (and summed up under Run).
        self.dataset_check = w.HTML()
        self.prompts_check = w.HTML()
        self.models_check = w.HTML()
        self.dataset_pick.observe(guarded(self.dataset_notice, self._pick_changed), names="value")
        self.dataset_path.observe(
            guarded(self.dataset_notice, lambda _: self.load_clicked()), names="value"
        )
        self.load_button.on_click(guarded(self.dataset_notice, lambda _: self.load_clicked()))
        self.rows.observe(
            guarded(self.dataset_notice, lambda _: self._show_preview()), names="value"
        )

        # ---- prompts
        self.editor = PromptEditor(
            lambda: self.dataset.input_columns if self.dataset is not None else None, self.notice
        )

        # ---- models
        self.model_pick = w.SelectMultiple(
            options=self._model_options(), rows=6, description="models",
            layout=w.Layout(width="420px"),
        )  # fmt: skip
        self.model_add = w.Text(
            placeholder="add a model id, e.g. openai/gpt-4o-mini-2024-07-18",
            continuous_update=False,
            layout=w.Layout(width="420px"),
        )
        self.model_info = w.HTML()
        self.model_pick.observe(guarded(self.notice, self._models_changed), names="value")
        self.model_add.observe(
            guarded(self.notice, lambda _: self.add_model_clicked()), names="value"
        )

        # ---- schema, evaluators, parameters
        self.schema_text = w.Textarea(
            placeholder='JSON: {"sentiment": ["positive", "negative"]} or a JSON Schema; empty = free text',
            layout=w.Layout(width="100%", height="60px"),
        )
        self.schema_from_labels = w.Button(
            description="from labels", icon="magic", layout=w.Layout(width="120px")
        )
        self.schema_check = w.HTML()
        self.schema_text.observe(
            guarded(self.notice, lambda _: self._form_changed()), names="value"
        )
        self.schema_from_labels.on_click(guarded(self.notice, lambda _: self.schema_from_dataset()))
        self.evaluator_pick = w.SelectMultiple(
            options=list(EVALUATORS), rows=4, description="evaluators",
            layout=w.Layout(width="330px"),
        )  # fmt: skip
        self.max_tokens = w.BoundedIntText(
            value=max_tokens,
            min=1,
            max=32_768,
            description="max_tokens",
            layout=w.Layout(width="180px"),
        )
        self.temperature = w.Dropdown(
            options=TEMPERATURES, value="model default" if temperature is None else temperature,
            description="temperature", layout=w.Layout(width="220px"),
        )  # fmt: skip
        self.repeats = w.BoundedIntText(
            value=repeats, min=1, max=100, description="repeats", layout=w.Layout(width="150px")
        )
        self.concurrency = w.BoundedIntText(
            value=concurrency,
            min=1,
            max=256,
            description="concurrency",
            layout=w.Layout(width="170px"),
        )

        # ---- run
        self.run_button = w.Button(
            description="Run", icon="play", button_style="success", layout=w.Layout(width="100px")
        )
        self.stop_button = w.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            layout=w.Layout(width="100px"),
        )
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="300px"))
        self.progress_text = w.HTML()
        self.run_button.on_click(guarded(self.notice, lambda _: self.run_clicked()))
        self.stop_button.on_click(guarded(self.notice, lambda _: self.stop_clicked()))

        # ---- results
        self.summary = w.HTML()
        self.charts = FigureBox()
        self.policy = PolicyPanel(self.client)
        self.compare_box = w.VBox([w.HTML("<i>run the grid to compare variants</i>")])
        self.traces_box = w.VBox([w.HTML("<i>run the grid to browse its calls</i>")])
        self.export_box = w.VBox([w.HTML("<i>run the grid to export its winner</i>")])
        self.matrix_box = w.VBox([w.HTML("<i>run the grid to see every item's answers</i>")])
        from .preview import PromptPreview

        self.preview = PromptPreview(self._preview_source)
        self.matrix: Any = None
        self.compare: Any = None
        self.traces: Any = None
        self.exporter: Any = None
        self.tabs = w.Tab(
            children=[
                w.VBox([self.summary, self.charts.widget]),
                self.matrix_box,
                self.compare_box,
                self.traces_box,
                self.policy.widget,
                self.export_box,
                self.preview.widget,
            ]
        )
        for i, title in enumerate(TABS):
            self.tabs.set_title(i, title)

        def section(title: str) -> Any:
            return w.HTML(f"<b style='font-size:13px'>{esc(title)}</b>")

        self.widget = w.VBox(
            [
                w.HTML("<b style='font-size:15px'>Experiment builder</b>"),
                section("1 · Dataset"),
                w.HBox([self.dataset_pick, self.dataset_path, self.load_button, self.rows]),
                self.dataset_check,
                self.dataset_notice.widget,
                self.dataset_preview,
                section("2 · Prompt variants"),
                self.editor.widget,
                self.prompts_check,
                section("3 · Models"),
                w.HBox(
                    [w.VBox([self.model_pick, self.model_add, self.models_check]), self.model_info]
                ),
                section("4 · Output schema, evaluators, parameters"),
                w.HBox([self.schema_text, self.schema_from_labels]),
                self.schema_check,
                w.HBox(
                    [
                        self.evaluator_pick,
                        w.VBox([self.max_tokens, self.temperature]),
                        w.VBox([self.repeats, self.concurrency]),
                    ]
                ),
                section("5 · Run"),
                w.HBox([self.run_button, self.stop_button, self.progress, self.progress_text]),
                self.notice.widget,
                self.tabs,
            ],
            layout=w.Layout(border="1px solid #ccc", padding="8px"),
        )
        self.widget.add_class("labkit-builder")

        # ---- pre-fill (problems show inline, like any other input)
        if dataset is not None:
            guarded(self.dataset_notice, self.set_dataset)(dataset)
        self.set_prompts(prompts or {"baseline": ""})
        if models:
            guarded(self.notice, self.set_models)(models)
        if schema is not None:
            self.schema_text.value = schema if isinstance(schema, str) else json.dumps(schema)
        if evaluators:
            self.evaluator_pick.value = tuple(evaluators)
        self._show_models()
        self._check_schema()
        self.editor.on_checked = self._form_changed
        self._form_changed()

    _validating = False

    def _models_changed(self, _: Any = None) -> None:
        self._show_models()
        self._form_changed()

    def _form_changed(self) -> None:
        """Re-validate after any edit: Run is enabled only on a valid form, and a "cannot run
        yet" message follows the form (updated, or gone once everything is fixed)."""
        if self._validating or (self.future is not None and not self.future.done()):
            return
        self._validating = True
        try:
            by_field = self.field_problems()
        finally:
            self._validating = False
        problems = [p for issues in by_field.values() for p in issues]
        for name, box in (
            ("dataset", self.dataset_check),
            ("prompts", self.prompts_check),
            ("models", self.models_check),
        ):
            box.value = "".join(
                f"<div class='labkit-field-error' style='color:#a94442;font-size:12px'>"
                f"✗ {esc(p)}</div>"
                for p in by_field[name]
            )
        self.run_button.disabled = bool(problems)
        self.run_button.tooltip = "fix first: " + "; ".join(problems) if problems else "Run"
        if self.notice.text.startswith("cannot run yet"):
            if problems:
                self.notice.error(_cannot_run(problems))
            else:
                self.notice.clear()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ================================================================= dataset
    def _pick_changed(self, change: Mapping[str, Any]) -> None:
        if change["new"] in self._given:
            self.dataset_path.layout.display = "none"
            self.set_dataset(self._given[change["new"]])
            return
        if change["new"] == FILE:
            self.dataset_path.layout.display = None
            if self.dataset_path.value.strip():
                self.load_clicked()
            return
        self.dataset_path.layout.display = "none"
        if change["new"]:
            self.set_dataset(change["new"])

    def load_clicked(self) -> None:
        """Load the file named in the path box (what Load and Enter do)."""
        path = self.dataset_path.value.strip()
        if not path:
            self.dataset_notice.error("type the path of a .jsonl, .json or .csv file first")
            return
        self.set_dataset(path)

    def set_dataset(self, source: Any) -> None:
        """Load a bundled name, a file path, a DataFrame, records or a Dataset. On failure the
        previous dataset stays and the reason is shown under the picker."""
        from ..experiments.datasets import list_datasets, load_dataset

        self.dataset_notice.clear()
        try:
            ds = load_dataset(source)
        except Exception as exc:
            self.dataset_notice.error(describe_error(exc))
            self._check_prompts()
            return
        self.dataset = ds
        if isinstance(source, str | Path) and str(source) in list_datasets():
            if self.dataset_pick.value != str(source):
                self.dataset_pick.value = str(source)
        elif isinstance(source, str | Path):
            self.dataset_pick.value = FILE
            if self.dataset_path.value != str(source):
                self.dataset_path.value = str(source)
        else:  # in memory (a Dataset, DataFrame or records): listed under its name
            label = f"{ds.name} (in memory)"
            self._given[label] = ds
            if label not in self.dataset_pick.options:
                self.dataset_pick.options = [label, *self.dataset_pick.options]
            if self.dataset_pick.value != label:
                self.dataset_pick.value = label
        self._show_preview()
        self._check_prompts()
        self._form_changed()

    def used_dataset(self) -> Dataset | None:
        """The rows a run uses: the first `rows` of the loaded dataset (all when 0)."""
        if self.dataset is None:
            return None
        n = int(self.rows.value or 0)
        return self.dataset.head(n) if 0 < n < len(self.dataset) else self.dataset

    def _show_preview(self) -> None:
        ds = self.used_dataset()
        if ds is None or self.dataset is None:
            self.dataset_preview.value = ""
            return
        used = f"using {len(ds)} of {len(self.dataset)} rows"
        self.dataset_preview.value = (
            f"<div style='font-size:12px;max-height:260px;overflow:auto'>{esc(used)} · "
            f"template variables available: "
            + ", ".join(f"<code>{{{{{esc(c)}}}}}</code>" for c in self.dataset.input_columns)
            + f"{ds._repr_html_()}</div>"
        )

    # ================================================================= prompts
    @property
    def prompt_rows(self) -> list[PromptRow]:
        return self.editor.rows

    def set_prompts(self, prompts: Mapping[str, str]) -> None:
        """Replace the prompt variants with {name: template}."""
        self.editor.set_prompts(prompts)

    def add_variant(self, name: str | None = None, template: str = "") -> None:
        """Add a prompt variant (what 'add variant' does, with an optional name and text)."""
        self.editor.add_variant(name, template)

    def prompts(self) -> dict[str, str]:
        """The variants as {name: template}, as the form shows them."""
        return self.editor.prompts()

    def prompt_problems(self) -> dict[str, list[str]]:
        """Per variant name: what stops it from running (empty list = fine)."""
        return dict(self.editor.problems())

    def _check_prompts(self) -> list[tuple[str, list[str]]]:
        return self.editor.check()

    # ================================================================= models
    def _model_options(self) -> list[str]:
        reg = self.client.registry
        return [*sorted(reg.aliases), *sorted(reg.models)]

    def add_model_clicked(self) -> None:
        """Add the id typed in the box to the list and select it (unknown names: inline error)."""
        name = self.model_add.value.strip()
        if not name:
            return
        self.notice.clear()
        self.set_models(
            [*self.model_pick.value, name]
            if name not in self.model_pick.value
            else list(self.model_pick.value)
        )

    def set_models(self, models: Sequence[str]) -> None:
        """Select models by alias or id (ids not in the registry are added to the list)."""
        options = list(self.model_pick.options)
        for m in models:
            if m not in options:
                self.client.registry.resolve(m, profile=self.client.profile)  # unknown: raises
                options.append(m)
        self.model_pick.options = options
        self.model_pick.value = tuple(models)

    def _show_models(self) -> None:
        self.model_info.value = models_html(self.client, list(self.model_pick.value))

    # ================================================================= schema
    def schema(self) -> Any:
        """The schema as entered (parsed JSON), None for free text. Raises on bad JSON."""
        text = self.schema_text.value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"the schema is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                f'{exc.msg}); write e.g. {{"sentiment": ["positive", "negative"]}}'
            ) from None
        from ..structured import to_json_schema

        to_json_schema(value)  # InputError names what is wrong
        return value

    def _check_schema(self) -> bool:
        try:
            value = self.schema()
        except Exception as exc:
            self.schema_check.value = (
                f"<div style='color:#a94442;font-size:12px'>✗ {esc(describe_error(exc))}</div>"
            )
            return False
        self.schema_check.value = (
            "<div style='color:#777;font-size:12px'>free text (no schema)</div>"
            if value is None
            else "<div style='color:#2e7d32;font-size:12px'>✓ structured output: "
            f"fields {esc(', '.join(_fields(value)))}</div>"
        )
        return True

    def schema_from_dataset(self) -> None:
        """Fill the schema from the dataset's labels: an enum for few distinct values."""
        if self.dataset is None:
            raise ValueError("load a dataset first: the schema is built from its labels")
        fields = self.dataset.expected_fields
        if not fields:
            raise ValueError(f"dataset {self.dataset.name!r} has no labels to build a schema from")
        schema: dict[str, Any] = {}
        for field in fields:
            values = [v for v in self.dataset.label_counts(field).index if v is not None]
            kinds = {type(v).__name__ for v in values}
            if 0 < len(values) <= 12 and kinds <= {"str"}:
                schema[field] = sorted(str(v) for v in values)
            else:
                kind = next(iter(kinds)) if len(kinds) == 1 else "any"
                schema[field] = {"int": "int", "float": "float", "bool": "bool"}.get(kind, "str")
        self.schema_text.value = json.dumps(schema)

    def _preview_source(self) -> dict[str, Any]:
        """What the "Prompt as sent" tab previews: the form as it stands."""
        problems = [p for p in self.problems() if not p.startswith("the schema")]
        if problems:
            raise ValueError("cannot preview yet: " + "; ".join(problems))
        ds = self.used_dataset()
        assert ds is not None
        return {
            "client": self.client, "records": list(ds.records()), "prompts": self.prompts(),
            "models": list(self.model_pick.value), "schema": self.schema(),
            "params": self.params(), "repeats": int(self.repeats.value),
        }  # fmt: skip

    # ================================================================= run
    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_tokens": int(self.max_tokens.value)}
        if self.temperature.value != "model default":
            out["temperature"] = float(self.temperature.value)
        return out

    def problems(self) -> list[str]:
        """Everything that stops a run, each naming its fix (empty = ready)."""
        return [p for issues in self.field_problems().values() for p in issues]

    def field_problems(self) -> dict[str, list[str]]:
        """`problems` by the field they are about: dataset, prompts, models, schema (each is
        shown beside its field; a prompt's own issues also under that prompt)."""
        out: dict[str, list[str]] = {"dataset": [], "prompts": [], "models": [], "schema": []}
        if self.dataset is None:
            out["dataset"].append("no dataset: pick a bundled one or load a file")
        if not self.prompt_rows:
            out["prompts"].append("no prompt variant: press 'add variant'")
        for name, issues in self._check_prompts():
            out["prompts"] += [f"prompt {name!r}: {p}" for p in issues if "no {{column}}" not in p]
        if not self.model_pick.value:
            out["models"].append("no model selected: pick at least one in the model list")
        if not self._check_schema():
            out["schema"].append("the schema does not parse (see the message under it)")
        return out

    def build(self) -> Experiment:
        """The `Experiment` the form describes (raises on any problem; nothing is run)."""
        from ..errors import InputError
        from ..experiments.runner import Experiment

        problems = self.problems()
        if problems:
            raise InputError("cannot run yet:\n- " + "\n- ".join(problems))
        picked = list(self.evaluator_pick.value)
        dataset = self.used_dataset()
        assert dataset is not None  # problems() said so otherwise
        return Experiment(
            dataset,
            self.prompts(),
            list(self.model_pick.value),
            schema=self.schema(),
            evaluators=[EVALUATORS[name]() for name in picked] if picked else None,
            params=self.params(),
            repeats=int(self.repeats.value),
            concurrency=int(self.concurrency.value),
            client=self.client,
        )

    def run_clicked(self) -> concurrent.futures.Future[Results] | None:
        """What Run does: check the form, start the grid in the background, return its future
        (None when the form has a problem: it is shown inline instead)."""
        if self.future is not None and not self.future.done():
            self.notice.warn("a run is already going: wait for it or press Stop")
            return None
        self.notice.clear()
        problems = self.problems()
        if problems:
            self.notice.error(_cannot_run(problems))
            return None
        exp = self.build()
        self.experiment = exp
        self.timings = {}
        self._finished.clear()
        self._run_started = time.perf_counter()
        self.progress.max = max(exp.total, 1)
        self.progress.value = 0
        self.progress.bar_style = "info"
        self.progress_text.value = esc(f"0/{exp.total} · starting")
        self.run_button.disabled = True
        self.stop_button.disabled = False
        exp.on_progress.append(self._on_progress)
        self._live_on = True  # before start: a grid that ends at once turns it off again
        try:
            self.future = exp.start(progress=False)
        except Exception:
            self._idle()
            self._finished.set()
            raise
        self.future.add_done_callback(self._done)
        threading.Thread(target=self._live_chart, name="labkit-builder-live", daemon=True).start()
        return self.future

    def _live_chart(self, first: float = 0.4, every: float = 1.5) -> None:
        """While a grid runs, draw the success chart of the rows done so far (first after
        `first` s, then every `every` s): a long grid shows where it is heading at once."""
        from ..experiments import plots

        wait = first
        while not self._finished.wait(wait):
            wait = every
            exp, fut = self.experiment, self.future
            if exp is None or fut is None or fut.done():
                return
            df = exp.results.df  # a snapshot: rows are appended on the loop thread
            if df.empty:
                continue
            fig = plots.success_chart(df)
            state = exp.progress
            fig.update_layout(title=f"{fig.layout.title.text} · so far: {state.done}/{state.total}")
            with self._live:
                if not self._live_on:
                    return
                self.charts.set({"success": fig})
                self.timings.setdefault("first_chart", time.perf_counter() - self._run_started)

    def stop_clicked(self) -> None:
        """What Stop does: calls in flight finish, the rest are skipped; partial results show."""
        if self.experiment is None or self.future is None or self.future.done():
            self.notice.info("nothing is running")
            return
        self.experiment.stop()
        self._stopping = True
        self.stop_button.disabled = True
        # No "~N s left" from here on: the skipped calls will not run.
        text = _without_eta(self.experiment.progress.describe())
        self.progress_text.value = f"<span style='font-size:12px'>{esc(text)} · stopping</span>"
        self.notice.info("stopping: the calls in flight finish, the rest are skipped")

    def wait(self, timeout: float | None = None) -> Results | None:
        """Block until the current run and its result views are done (tests, scripts)."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the run did not finish within {timeout} s")
        return self.results

    def _on_progress(self, state: ProgressState) -> None:
        now = time.monotonic()
        if now - self._last_draw < 0.1 and state.done < state.total:
            return
        self._last_draw = now
        self.progress.value = state.done
        text = _without_eta(state.describe()) if self._stopping else state.describe()
        self.progress_text.value = f"<span style='font-size:12px'>{esc(text)}</span>"
        self.policy.refresh()

    def _idle(self) -> None:
        self._stopping = False
        self.run_button.disabled = False
        self.stop_button.disabled = True

    def _done(self, fut: concurrent.futures.Future[Results]) -> None:
        # Called on labkit's loop thread: building the result views takes a second or two of
        # pandas and plotly work, which must not hold up that loop (other calls may be on it).
        threading.Thread(
            target=self._finish, args=(fut,), name="labkit-builder-results", daemon=True
        ).start()

    def _finish(self, fut: concurrent.futures.Future[Results]) -> None:
        with self._live:  # no partial chart may land over the final ones
            self._live_on = False
        try:
            self._idle()
            if fut.cancelled():
                self.notice.warn(
                    "the run was cancelled; finished rows are in builder.experiment.results"
                )
                return
            exc = fut.exception()
            if exc is not None:
                self.progress.bar_style = "danger"
                self.notice.error(exc)
                return
            results = fut.result()
            self.timings["results"] = time.perf_counter() - self._run_started
            state = self.experiment.progress if self.experiment is not None else None
            if state is not None:
                self.progress.value = state.done
                stopped = state.done < state.total
                text = state.describe()
                text = _without_eta(text) + " · stopped" if stopped else text
                self.progress_text.value = f"<span style='font-size:12px'>{esc(text)}</span>"
                self.progress.bar_style = "warning" if stopped or state.errors else "success"
                if stopped:
                    self.notice.warn(
                        f"stopped after {state.done}/{state.total} calls; the results below are "
                        "partial. Run again to resume (finished calls come from the cache)."
                    )
                elif state.errors:
                    self.notice.warn(error_summary(results.df))
            guarded(self.notice, self.show_results)(results)
        finally:
            self._finished.set()

    # ================================================================= results
    def show_results(self, results: Results) -> None:
        """Fill the result tabs: summary and charts first, then compare, traces, export."""
        from ..experiments import plots

        self.results = results
        self.tabs.selected_index = 0
        df = results.df
        if df.empty:
            self.summary.value = "<i>no rows: nothing ran</i>"
            self.charts.clear()
            return
        self.charts.set({"success": plots.success_chart(df)})
        self.timings["final_chart"] = time.perf_counter() - self._run_started
        self.timings.setdefault("first_chart", self.timings["final_chart"])
        self.summary.value = (
            "<div style='font-size:12px;max-height:260px;overflow:auto'>"
            f"{results._repr_html_()}<details class='labkit-modes-details'><summary>failure "
            "modes: predicted values, accuracy per label, confusion matrix</summary>"
            f"{results.failure_modes()._repr_html_()}</details></div>"
        )
        modes = results.failure_modes().table  # the baseline marks on the success chart
        baselines = dict(zip(modes["variant"], modes["baseline"], strict=True))
        builders: dict[str, Callable[[Any], Any]] = {
            "success": lambda d: plots.success_chart(d, baselines=baselines),
            "forest": plots.forest_chart,
            "cost": plots.cost_chart,
            "latency": plots.latency_chart,
        }
        figures = {k: f(df) for k, f in builders.items()}
        figures["tokens"] = plots.token_chart(df)
        if results.meta.get("schema"):
            figures["confidence"] = plots.confidence_chart(df)
            figures["reliability"] = plots.reliability_chart(df)
            figures["coverage"] = plots.coverage_chart(df)
            figures["repairs"] = plots.repair_chart(df)
        self.charts.set(figures)
        self.timings["charts"] = time.perf_counter() - self._run_started
        self._fill_tabs(results)
        self.timings["all"] = time.perf_counter() - self._run_started

    def _fill_tabs(self, results: Results) -> None:
        import ipywidgets as w

        from .compare import CompareView
        from .export import ExportPanel
        from .matrix import ItemMatrix
        from .traces import TraceBrowser

        self.matrix = ItemMatrix(results)
        self.matrix_box.children = [self.matrix.widget]
        if len(results.variants) >= 2:
            self.compare = CompareView(results)
            self.compare_box.children = [self.compare.widget]
        else:
            self.compare = None
            self.compare_box.children = [
                w.HTML("<i>one variant only: add a prompt variant or a model to compare</i>")
            ]
        self.traces = TraceBrowser(
            self.client, results=results.df, run_id=results.meta.get("run_id")
        )
        self.traces_box.children = [self.traces.widget]
        self.exporter = ExportPanel(results, path=self.export_path)
        self.export_box.children = [self.exporter.widget]
        self.policy.refresh()


def _cannot_run(problems: Sequence[str]) -> str:
    """The summary under Run; each problem is also marked beside its own field."""
    lines = "\n".join(f"• {p}" for p in problems)
    return f"cannot run yet (each is marked ✗ beside its field above):\n{lines}"


def _without_eta(text: str) -> str:
    """A progress line without its "~N s left": after Stop there is nothing left to wait for."""
    return " · ".join(p for p in text.split(" · ") if not p.endswith(" s left"))


def _fields(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        props = schema.get("properties")
        return [str(k) for k in (props if isinstance(props, dict) else schema)]
    return []
