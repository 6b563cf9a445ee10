"""Widget behaviour without a browser: set values, click, assert what changes.

ipywidgets objects work without a kernel (their comms are inert), so every UI is driven here
through the same methods and callbacks its buttons and dropdowns call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import ClientFactory
from frames import binary_frame, fallback_frame, make_results

from labkit.client import Client
from labkit.errors import DatasetError, LabkitError
from labkit.models import Registry
from labkit.testing import FakeBackend, provider_error
from labkit.widgets import CompareView, PolicyPanel, TraceBrowser
from labkit.widgets._common import FigureBox, Notice, esc, figure_bundle, guarded

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def click(button: Any) -> None:
    """Press an ipywidgets Button as the browser would."""
    button.click()


@pytest.fixture
def client(client_factory: ClientFactory) -> Client:
    reg = Registry(
        policy={
            "retry": {"max_attempts": 1},
            "breaker": {"failure_threshold": 2, "cooldown": 60},
            "limits": {"fake/limited": {"rpm": 120, "concurrency": 2}},
        }
    )
    return client_factory(registry=reg)


# ------------------------------------------------------------------ shared pieces
def test_guarded_turns_an_exception_into_an_inline_message() -> None:
    notice = Notice()

    def boom(_: Any) -> None:
        raise DatasetError("cannot read rows.jsonl: line 3 is not JSON; fix the line")

    guarded(notice, boom)(None)  # does not raise
    assert notice.kind == "error"
    assert "DatasetError" in notice.text and "line 3" in notice.text
    assert "Traceback" not in notice.widget.value
    notice.clear()
    assert notice.kind == "" and notice.widget.value == ""


def test_unexpected_errors_are_labelled_but_still_inline() -> None:
    notice = Notice()
    guarded(notice, lambda: 1 / 0)()
    assert notice.kind == "error" and "ZeroDivisionError" in notice.text
    assert "unexpected" in notice.text


def test_figure_box_holds_plotly_mime_bundles() -> None:
    import plotly.graph_objects as go

    box = FigureBox()
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"title": {"text": "t"}})
    box.set({"bars": fig})
    (out,) = box.widget.outputs
    spec = out["data"][PLOTLY_MIME]
    assert spec["data"][0]["type"] == "bar" and spec["layout"]["title"]["text"] == "t"
    json.dumps(out)  # what the frontend receives must be plain JSON
    assert list(box.figures) == ["bars"]
    box.clear()
    assert box.widget.outputs == () and box.figures == {}
    assert figure_bundle(fig)["data"]["text/plain"] == "<plotly figure: t>"


# ------------------------------------------------------------------ trace browser
def _traced_calls(client: Client) -> dict[str, str]:
    client.add_backend(
        "fake",
        FakeBackend(
            [
                "first answer for bob@example.com",
                provider_error(400),
                '{"sentiment": "positive"}',
            ]
        ),
    )
    ok = client.generate("Write to bob@example.com", model="fake/a", run_id="run-1", item_id="i1")
    hit = client.generate("Write to bob@example.com", model="fake/a", run_id="run-2", item_id="i1")
    with pytest.raises(LabkitError):
        client.generate("this one fails", model="fake/b", run_id="run-2", item_id="i2")
    return {"ok": ok.trace_id or "", "hit": hit.trace_id or ""}


def test_trace_browser_filters_by_run_model_errors_and_cache(client: Client) -> None:
    ids = _traced_calls(client)
    tb = TraceBrowser(client)
    assert tb.notice.kind == ""
    assert set(tb.run.options) == {"(any)", "run-1", "run-2"}
    assert set(tb.model.options) == {"(any)", "fake/a", "fake/b"}
    assert len(tb.filtered()) == 3

    tb.set_filters(run="run-2")
    assert set(tb.filtered()["run_id"]) == {"run-2"} and len(tb.filtered()) == 2
    tb.set_filters(errors="errors only")
    (row,) = tb.filtered().to_dict("records")
    assert row["model"] == "fake/b" and row["error_type"]
    assert "1 of 3 rows" in tb.count.value

    tb.set_filters(run="(any)", errors="(any)", cache="hits")
    assert tb.filtered()["call_id"].tolist() == [ids["hit"]]
    tb.set_filters(cache="misses", model="fake/a")
    assert tb.filtered()["call_id"].tolist() == [ids["ok"]]
    with pytest.raises(ValueError, match="run 'nope' is not available"):
        tb.set_filters(run="nope")


def test_trace_browser_shows_one_call_redacted(client: Client) -> None:
    ids = _traced_calls(client)
    tb = TraceBrowser(client)
    tb.calls.value = ids["ok"]  # what picking a call in the list does
    html = tb.detail.value
    assert "bob@example.com" not in html, "the prompt must be shown redacted"
    assert "first answer" in html and "raw reply" in html and "prompt (redacted)" in html
    rec = tb.call_record(ids["ok"])
    assert rec["attempts"] == 1 and rec["cache_hit"] is False and rec["run_id"] == "run-1"
    assert rec["completion_tokens"] > 0 and rec["latency_s"] >= 0
    hit = tb.call_record(ids["hit"])
    assert hit["cache_hit"] is True and hit["reply"] == rec["reply"]


def test_trace_browser_lists_errors_of_a_failed_call(client: Client) -> None:
    _traced_calls(client)
    tb = TraceBrowser(client)
    tb.set_filters(errors="errors only")
    tb.show_call(tb.calls.value)
    assert "errors" in tb.detail.value and "BadRequest" in tb.detail.value


def test_trace_browser_takes_parsed_values_from_a_results_frame(client: Client) -> None:
    ids = _traced_calls(client)
    results = pd.DataFrame({"trace_id": [ids["ok"]], "parsed": [{"answer": 42}]})
    tb = TraceBrowser(client, results=results)
    rec = tb.call_record(ids["ok"])
    assert rec["parsed"] == {"answer": 42} and rec["parsed_from"] == "results frame"


def test_trace_browser_refresh_picks_up_new_calls(client: Client) -> None:
    client.add_backend("fake", FakeBackend("hello"))
    tb = TraceBrowser(client)
    assert tb.filtered().empty and "no trace rows" in tb.table.value
    client.generate("hi", model="fake/new", run_id="later")
    click(tb.refresh_button)
    assert "later" in tb.run.options and len(tb.filtered()) == 1
    assert tb.calls.value is not None and "hello" in tb.detail.value


def test_trace_browser_unknown_call_is_an_inline_error(client: Client) -> None:
    tb = TraceBrowser(client)
    guarded(tb.notice, tb.show_call)("does-not-exist")
    assert tb.notice.kind == "error" and "no trace rows" in tb.notice.text


# ------------------------------------------------------------------ policy panel
def test_policy_panel_shows_an_open_breaker(client: Client) -> None:
    client.add_backend("fake", FakeBackend([provider_error(503)]))
    panel = PolicyPanel(client)
    assert "no model called yet" in panel.table.value
    for _ in range(3):
        with pytest.raises(LabkitError):
            client.generate("x", model="fake/flaky", cache="off")
    click(panel.refresh_button)
    states = panel.states().set_index("model")
    assert states.loc["fake/flaky", "breaker"] == "open"
    assert states.loc["fake/flaky", "failures"] >= 2
    assert "open" in panel.table.value and "#c62828" in panel.table.value


def test_policy_panel_shows_rate_limits(client: Client) -> None:
    client.add_backend("fake", FakeBackend("ok"))
    client.generate("x", model="fake/limited")
    panel = PolicyPanel(client)
    row = panel.states().set_index("model").loc["fake/limited"]
    assert row["concurrency"] == 2 and row["rpm_left"].endswith("/120")


def test_policy_panel_live_polling_starts_and_stops(client: Client) -> None:
    client.add_backend("fake", FakeBackend("ok"))
    panel = PolicyPanel(client, interval=0.05)
    panel.live.value = True  # the checkbox
    assert panel._thread is not None and panel._thread.is_alive()
    client.generate("x", model="fake/live")
    import time

    deadline = time.monotonic() + 5
    while "fake/live" not in panel.table.value and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "fake/live" in panel.table.value
    panel.live.value = False
    panel._thread.join(timeout=2)
    assert not panel._thread.is_alive()


# ------------------------------------------------------------------ compare view
def test_compare_view_stats_match_the_stats_module() -> None:
    from labkit.experiments import stats

    df = make_results(n_items=40, seed=1)
    cv = CompareView(df, a="cot · large", b="terse · small")
    expected = stats.paired_comparison(df, "cot · large", "terse · small")
    assert cv.result.diff == pytest.approx(expected.diff)
    assert cv.result.p_value == pytest.approx(expected.p_value)
    assert f"{expected.rate_a:.0%}" in cv.stats_box.value
    assert set(cv.charts.figures) == {"success", "forest"}
    assert len(cv.charts.widget.outputs) == 2


def test_compare_view_filters_agree_with_pandas() -> None:
    df = make_results(n_items=60, seed=2)
    a, b = "terse · small", "cot · large"
    cv = CompareView(df, a=a, b=b)
    pa = df[df.variant == a].set_index("item_id")
    pb = df[df.variant == b].set_index("item_id")
    failed = ~(pa["passed"] & pb["passed"])
    assert len(cv.view()) == 60

    cv.failures.value = True  # ticking the checkbox
    assert sorted(cv.view()["item_id"]) == sorted(failed[failed].index)
    assert f"{int(failed.sum())} of 60 rows shown" in cv.count.value

    cv.set_filters(failures=False, low_confidence=0.6)
    low = (pa["confidence"] < 0.6) | (pb["confidence"] < 0.6)
    assert sorted(cv.view()["item_id"]) == sorted(low[low].index)

    cv.set_filters(low_confidence=False, disagreements=True)
    same = [json.dumps(x, sort_keys=True) if x else None for x in pa["parsed"]] == [
        json.dumps(x, sort_keys=True) if x else None for x in pb["parsed"]
    ]
    assert not same and 0 < len(cv.view()) < 60
    assert cv.view()["disagree"].all()


def test_compare_view_updates_stats_and_charts_with_the_selection() -> None:
    df = make_results(n_items=30, seed=3)
    cv = CompareView(df)
    first = (cv.result.a, cv.result.b)
    cv.b.value = "cot · large"  # the dropdown
    assert (cv.result.a, cv.result.b) == (first[0], "cot · large")
    forest = cv.charts.figures["forest"]
    assert "cot · large" in str(forest.data[0].y)
    click(cv.swap)
    assert (cv.a.value, cv.b.value) == ("cot · large", first[0])
    assert cv.result.a == "cot · large"


def test_compare_view_highlights_differences() -> None:
    df = pd.DataFrame(
        {
            "item_id": ["i1", "i1", "i2", "i2"],
            "variant": ["A", "B", "A", "B"],
            "repeat": 0,
            "output": ["the cat sat", "the dog sat", "same", "same"],
            "parsed": [None] * 4,
            "passed": [True, False, True, True],
            "confidence": [0.9, 0.3, 0.8, 0.8],
            "error": None,
        }
    )
    cv = CompareView(df, charts=False)
    cv.set_filters(disagreements=True)
    assert cv.view()["item_id"].tolist() == ["i1"]
    table = cv.table.value
    assert "<mark style='background:#ffd6d6'>cat</mark>" in table
    assert "<mark style='background:#d4f7d4'>dog</mark>" in table
    assert "background:#fff6e5" in table  # the pass/fail verdicts differ on this row
    cv.set_filters(disagreements=False, low_confidence=0.5)
    assert cv.view()["item_id"].tolist() == ["i1"]


def test_compare_view_with_one_variant_says_so() -> None:
    df = binary_frame([1, 0, 1], [1, 1, 0])
    cv = CompareView(df[df.variant == "A"])
    assert cv.notice.kind == "warn" and "at least two" in cv.notice.text
    cv2 = CompareView(df, a="A", b="A")
    assert cv2.notice.kind == "warn" and "same variant" in cv2.notice.text
    with pytest.raises(ValueError, match="not in the results"):
        cv2.set_pair("A", "C")


# ------------------------------------------------------------------ experiment builder
LABELS = ("positive", "negative", "neutral")


def _fake_sentiment(request: Any) -> str:
    """A deterministic 'model': the label depends on the prompt text, so variants differ."""
    text = str(request.messages[-1]["content"])
    label = LABELS[sum(map(ord, text)) % 3]
    return json.dumps({"sentiment": label, "sentiment_confidence": 0.4 + (len(text) % 6) / 10})


@pytest.fixture
def fake_client(client: Client) -> Client:
    client.add_backend("fake", FakeBackend(_fake_sentiment))
    return client


def _builder(client: Client, **kw: Any) -> Any:
    from labkit.widgets import ExperimentBuilder

    defaults: dict[str, Any] = {
        "dataset": "review_sentiment",
        "prompts": {"plain": "Sentiment of: {{review}}", "product": "{{product}}: {{review}}"},
        "models": ["fake/sent-1"],
        "schema": {"sentiment": list(LABELS)},
        "rows": 12,
    }
    return ExperimentBuilder(client, **(defaults | kw))


def test_builder_checks_template_variables_as_you_type(fake_client: Client) -> None:
    b = _builder(fake_client)
    row = b.prompt_rows[0]
    assert "✓ variables" in row.check.value and "{{review}}" in row.check.value
    row.template.value = "Sentiment of: {{revew}}"  # a typo, as typed in the textarea
    assert "unknown template variable {{revew}}" in row.check.value
    assert "did you mean {{review}}" in row.check.value
    row.template.value = "Sentiment of: {{review}}"
    assert "✓" in row.check.value and b.prompt_problems()["plain"] == []
    b.prompt_rows[1].name.value = "plain"  # two variants with one name
    assert "also called &#x27;plain&#x27;" in b.prompt_rows[1].check.value
    assert "also called &#x27;plain&#x27;" in b.prompt_rows[0].check.value
    click(b.editor.add_button)
    assert [r.name.value for r in b.prompt_rows] == ["plain", "plain", "variant3"]
    assert "empty prompt" in b.prompt_rows[2].check.value
    click(b.prompt_rows[2].remove)
    assert len(b.prompt_rows) == 2 and len(b.editor.box.children) == 2


def test_builder_shows_the_dataset_preview_and_its_columns(fake_client: Client) -> None:
    b = _builder(fake_client)
    assert b.dataset is not None and b.dataset.name == "review_sentiment"
    assert "using 12 of 125 rows" in b.dataset_preview.value
    assert "{{review}}" in b.dataset_preview.value and "rev-001" in b.dataset_preview.value
    b.rows.value = 5
    assert "using 5 of 125 rows" in b.dataset_preview.value
    b.dataset_pick.value = "loan_triage"  # picking another bundled dataset
    assert b.dataset.name == "loan_triage" and "{{applicant}}" in b.dataset_preview.value
    assert "unknown template variable {{review}}" in b.prompt_rows[0].check.value


def test_builder_lists_an_in_memory_dataset_under_its_name(fake_client: Client) -> None:
    from labkit.experiments import load_dataset

    sample = load_dataset("review_sentiment").sample(6, seed=2)
    b = _builder(fake_client, dataset=sample, rows=0)
    label = "review_sentiment-sample6-seed2 (in memory)"
    assert b.dataset_pick.value == label and b.dataset is sample
    b.dataset_pick.value = "loan_triage"
    b.dataset_pick.value = label  # back to the in-memory one
    assert b.dataset is sample and "using 6 of 6 rows" in b.dataset_preview.value


def test_builder_bad_input_is_reported_inline_and_the_form_keeps_working(
    fake_client: Client, tmp_path: Path
) -> None:
    b = _builder(fake_client, models=None)
    b.prompt_rows[0].template.value = "   "  # empty prompt
    b.prompt_rows[1].template.value = "Tell me about {{nope}}"  # unknown variable
    assert b.run_clicked() is None  # nothing starts
    assert b.notice.kind == "error"
    text = b.notice.text
    assert "empty prompt" in text and "{{nope}}" in text and "no model selected" in text
    assert "Traceback" not in b.notice.widget.value and b.future is None

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "review": "fine"}\n{this is not json\n')
    b.dataset_pick.value = "file…"
    b.dataset_path.value = str(broken)  # typing a path and pressing Enter
    assert b.dataset_notice.kind == "error" and "DatasetError" in b.dataset_notice.text
    assert b.dataset is not None and b.dataset.name == "review_sentiment", "previous data kept"

    b.schema_text.value = '{"sentiment": [positive]}'
    assert "not valid JSON" in b.schema_check.value

    # fix everything; the same form now runs
    b.prompt_rows[0].template.value = "Sentiment of: {{review}}"
    b.prompt_rows[1].template.value = "{{product}} :: {{review}}"
    b.model_add.value = "fake/sent-1"  # typing a model id that is not in the list yet
    assert b.model_pick.value == ("fake/sent-1",)
    b.schema_text.value = '{"sentiment": ["positive", "negative", "neutral"]}'
    assert b.run_clicked() is not None
    results = b.wait(30)
    assert results is not None and len(results.df) == 24 and b.notice.kind in ("", "info")


def test_builder_unparseable_dataset_file_via_load_button(
    fake_client: Client, tmp_path: Path
) -> None:
    b = _builder(fake_client)
    bad = tmp_path / "rows.csv"
    bad.write_bytes(b"id,review\n1,ok\n1,dup\n")
    b.dataset_path.value = ""
    click(b.load_button)
    assert "type the path" in b.dataset_notice.text
    b.dataset_path.value = str(bad)
    assert b.dataset_notice.kind == "error" and "more than once" in b.dataset_notice.text
    b.dataset_notice.clear()
    click(b.load_button)
    assert b.dataset_notice.kind == "error" and "Ids must be unique" in b.dataset_notice.text
    bad.write_text("id,review\n1,ok\n2,fine\n")  # fixed on disk: Load picks it up
    click(b.load_button)
    assert b.dataset_notice.kind == "" and b.dataset is not None and len(b.dataset) == 2


def test_builder_lists_models_with_their_profiles(fake_client: Client) -> None:
    fake_client.registry.alias("triage", "local/smollm2-135m-json", prod="fake/big-2024-01-01")
    b = _builder(fake_client, models=["triage", "local/smollm2-135m"])
    info = b.model_info.value
    assert "triage" in b.model_pick.options and "local/smollm2-135m-json" in b.model_pick.options
    assert "dev: local/smollm2-135m-json" in info and "prod: fake/big-2024-01-01" in info
    assert "active profile: <b>dev</b>" in info and "free" in info
    b.model_add.value = "gtp-4o"  # unknown name: says so, suggests, changes nothing
    assert b.notice.kind == "error" and "gtp-4o" in b.notice.text
    assert b.model_pick.value == ("triage", "local/smollm2-135m")


def test_builder_schema_from_labels(fake_client: Client) -> None:
    b = _builder(fake_client, schema=None)
    assert "free text" in b.schema_check.value
    click(b.schema_from_labels)
    assert json.loads(b.schema_text.value) == {"sentiment": ["negative", "neutral", "positive"]}
    assert "✓ structured output: fields sentiment" in b.schema_check.value


def test_builder_run_shows_progress_results_charts_and_tabs(fake_client: Client) -> None:
    b = _builder(fake_client)
    click(b.run_button)
    results = b.wait(30)
    assert results is not None and len(results.df) == 24
    assert set(results.variants) == {"plain · fake/sent-1", "product · fake/sent-1"}
    assert b.progress.value == 24 and b.progress.bar_style == "success"
    assert "24/24" in b.progress_text.value and "$" in b.progress_text.value
    assert {"success", "forest", "cost", "latency"} <= set(b.charts.figures)
    assert len(b.charts.widget.outputs) == len(b.charts.figures)
    assert "Results(" in b.summary.value
    assert (
        "accuracy per label" in b.summary.value and "sentiment</code> predicted:" in b.summary.value
    )
    assert b.compare is not None and b.compare.result.n_items == 12
    assert b.traces is not None and b.traces.run.value == results.meta["run_id"]
    assert b.exporter is not None and b.exporter.notice.kind == ""
    assert not b.run_button.disabled and b.stop_button.disabled
    assert 0 < b.timings["first_chart"] <= b.timings["all"]


def test_builder_second_run_replays_from_the_cache(fake_client: Client) -> None:
    b = _builder(fake_client)
    b.run_clicked()
    b.wait(30)
    calls = len(fake_client.backend_for("fake/sent-1").history)  # type: ignore[attr-defined]
    b.add_variant("shout", "REVIEW: {{review}}")
    b.run_clicked()
    results = b.wait(30)
    assert results is not None and len(results.df) == 36
    assert int(results.df["cache_hit"].sum()) == 24
    assert len(fake_client.backend_for("fake/sent-1").history) == calls + 12  # type: ignore[attr-defined]


def test_builder_stop_keeps_the_finished_rows(client: Client) -> None:
    client.add_backend("fake", FakeBackend(_fake_sentiment, latency=0.05))
    b = _builder(client, rows=40, concurrency=1)
    assert b.run_clicked() is not None
    import time

    deadline = time.monotonic() + 10
    while b.progress.value < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    click(b.stop_button)
    results = b.wait(30)
    assert results is not None and 3 <= len(results.df) < 80
    assert b.notice.kind == "warn" and "stopped after" in b.notice.text
    assert b.progress.bar_style == "warning"


def test_builder_refuses_a_second_concurrent_run(client: Client) -> None:
    client.add_backend("fake", FakeBackend(_fake_sentiment, latency=0.02))
    b = _builder(client, rows=20, concurrency=1)
    first = b.run_clicked()
    assert first is not None
    assert b.run_clicked() is None and "already going" in b.notice.text
    b.stop_clicked()
    b.wait(30)


def test_builder_model_errors_become_rows_not_tracebacks(client: Client) -> None:
    client.add_backend("fake", FakeBackend([provider_error(400)]))
    b = _builder(client, rows=3)
    b.run_clicked()
    results = b.wait(30)
    assert results is not None and results.df["error"].notna().all()
    assert b.progress.bar_style == "warning" and "6 errors" in b.progress_text.value
    assert b.notice.kind == "warn" and "6 of 6 calls failed" in b.notice.text
    assert "fake/sent-1: 6/6 (BadRequest" in b.notice.text


# ------------------------------------------------------------------ export winner
_REVIEW_LABELS: dict[str, str] = {}


def _reader(request: Any) -> str:
    """A 'model' that reads the label off the dataset, except on some items: it beats the
    majority-class baseline, so it is a winner the export may pick."""
    from labkit.experiments import load_dataset

    text = str(request.messages[-1]["content"])
    if not _REVIEW_LABELS:
        for r in load_dataset("review_sentiment").records():
            _REVIEW_LABELS[r["review"]] = r["expected"]["sentiment"]
    labels = _REVIEW_LABELS
    label = next((lab for review, lab in labels.items() if review in text), "neutral")
    if sum(map(ord, text)) % 4 == 0:  # the variants differ a little
        label = "neutral"
    return json.dumps({"sentiment": label, "sentiment_confidence": 0.4 + (len(text) % 6) / 10})


def _results(client: Client, fake: Any = None) -> Any:
    from labkit.experiments import Experiment

    client.add_backend("fake", FakeBackend(fake or _reader))
    exp = Experiment(
        "review_sentiment",
        {"plain": "Sentiment of: {{review}}", "product": "{{product}}: {{review}}"},
        ["fake/sent-1"],
        schema={"sentiment": list(LABELS)},
        client=client,
    )
    return exp.run(progress=False)


def test_export_panel_shows_evidence_and_writes_versions(client: Client, tmp_path: Path) -> None:
    from labkit.widgets import ExportPanel

    results = _results(client)
    panel = ExportPanel(results, path=str(tmp_path / "winner.yaml"))
    best = results.best()
    assert panel.chosen() == best.variant
    assert f"candidate: <b>{best.variant}</b>" in panel.evidence.value
    assert "paired differences" in panel.evidence.value
    click(panel.export_button)
    assert panel.notice.kind == "ok" and "version 1" in panel.notice.text
    assert "note: no confidence threshold" in panel.notice.text  # export's warning, inline
    assert panel.saved.name == best.variant and panel.saved.model == "fake/sent-1"
    assert panel.saved.evidence is not None and panel.saved.evidence.n == 125
    assert "evidence saved with it" in panel.written.value
    other = next(v for v in results.variants if v != best.variant)
    panel.variant.value = other  # export a specific variant instead
    assert f"candidate: <b>{other}</b>" in panel.evidence.value
    click(panel.export_button)
    assert "version 2" in panel.notice.text and panel.saved.name == other


def test_export_panel_problems_are_inline(client: Client, tmp_path: Path) -> None:
    from labkit.widgets import ExportPanel

    results = _results(client)
    panel = ExportPanel(results, path="")
    click(panel.export_button)
    assert panel.notice.kind == "error" and "name the file" in panel.notice.text
    strict = ExportPanel(results, path=str(tmp_path / "w.yaml"), constraints={"n": {"min": 10_000}})
    assert strict.notice.kind == "error" and "no variant satisfies" in strict.notice.text
    strict.variant.value = results.variants[0]  # the rest of the panel still works
    click(strict.export_button)
    assert strict.notice.kind == "ok"


def _always_positive(request: Any) -> str:
    return json.dumps({"sentiment": "positive", "sentiment_confidence": 0.8})


def test_export_panel_refuses_a_constant_answer_variant_and_says_why(
    client: Client, tmp_path: Path
) -> None:
    from labkit.errors import DegenerateVariant
    from labkit.widgets import ExportPanel

    results = _results(client, _always_positive)
    panel = ExportPanel(results, path=str(tmp_path / "w.yaml"))
    assert panel.notice.kind == "error" and "DegenerateVariant" in panel.notice.text
    assert "collapse to one value: 'positive'" in panel.notice.text
    assert "labkit-failure-modes" in panel.warnings.value
    assert "majority-class baseline" in panel.warnings.value
    with pytest.raises(DegenerateVariant):
        results.best()
    panel.variant.value = results.variants[0]  # named: still refused, with the reason
    assert panel.notice.kind == "warn" and "will not be exported" in panel.notice.text
    click(panel.export_button)
    assert panel.notice.kind == "error" and not (tmp_path / "w.yaml").exists()
    panel.allow.value = True  # the explicit override
    click(panel.export_button)
    assert panel.notice.kind == "ok" and (tmp_path / "w.yaml").exists()


# ------------------------------------------------------------------ item matrix
def test_item_matrix_shows_inputs_labels_and_every_variant(client: Client) -> None:
    from labkit.widgets import ItemMatrix

    results = _results(client)
    m = ItemMatrix(results, max_rows=500)
    assert len(m.frame) == 125 and m.variants == results.variants
    html = m.table.value
    first = next(iter(results.experiment.dataset.records()))
    assert esc(first["review"][:40]) in html  # the input
    assert "<b>review</b>" in html  # labelled by its column
    assert esc(json.dumps(first["expected"], ensure_ascii=False)) in html  # the label
    for v in results.variants:
        assert f">{v}</th>" in html
    # a failing cell says why, in the evaluator's own words (the frame's `reasons` column)
    assert "field_match: sentiment is" in html and ", expected " in html
    assert "✗ fail" in html and "conf " in html


def test_item_matrix_filters_agree_with_pandas(client: Client) -> None:
    from labkit.widgets import ItemMatrix
    from labkit.widgets.compare import answers

    results = _results(client)
    df = results.df.assign(answer=answers(results.df))
    wide = df.pivot_table(index="item_id", columns="variant", values="answer", aggfunc="first")
    passed = df.pivot_table(index="item_id", columns="variant", values="passed", aggfunc="first")
    m = ItemMatrix(results)
    m.set_filters(disagreements=True)
    assert set(m.view()["item_id"]) == set(wide.index[wide.nunique(axis=1) > 1])
    m.set_filters(disagreements=False, failures=True)
    assert set(m.view()["item_id"]) == set(passed.index[(passed == 0).any(axis=1)])
    recs = {str(r["id"]): r for r in results.experiment.dataset.records()}
    word = recs[next(iter(recs))]["review"].split()[-1].strip(".,!?").upper()
    m.set_filters(failures=False, search=word)  # case-insensitive; inputs, labels, answers
    said = df.groupby("item_id")["answer"].agg(" ".join).str.lower()
    want = {
        i
        for i, r in recs.items()
        if word.lower()
        in json.dumps({k: v for k, v in r.items() if k != "id"}, ensure_ascii=False).lower()
        or word.lower() in said.get(i, "")
    }
    assert want and set(m.view()["item_id"]) == want
    m.set_filters(search="", sort="lowest confidence first")
    conf = m.view()["min_confidence"].dropna().tolist()
    assert conf == sorted(conf)
    assert "of 125 rows" in m.count.value


def test_item_matrix_thumbs_become_a_human_score(client: Client) -> None:
    from labkit.widgets import ItemMatrix

    results = _results(client)
    m = ItemMatrix(results)
    ids = list(dict.fromkeys(results.df["item_id"]))
    v = results.variants[0]
    for i, item in enumerate(ids[:4]):
        m.cell_item.value, m.cell_variant.value = item, v
        m.comment.value = "reads sarcasm right" if i == 0 else ""
        click(m.up if i < 3 else m.down)
    assert m.notice.kind == "ok" and "'human' score" in m.notice.text
    row = results.df[(results.df["item_id"] == ids[0]) & (results.df["variant"] == v)].iloc[0]
    assert row["scores"]["human"] == 1.0 and row["human_comment"] == "reads sarcasm right"
    judged = results.judged_by("human")
    s = judged.summary().set_index("variant")
    assert s.loc[v, "n"] == 4 and s.loc[v, "successes"] == 3
    assert "👍" in m.render(m.frame[m.frame["item_id"] == ids[0]])
    m.cell_item.value = "no-such-item"
    click(m.up)
    assert m.notice.kind == "error" and "no row for item" in m.notice.text


# ------------------------------------------------------------------ prompt as sent
def test_preview_shows_the_messages_as_sent_with_the_json_instructions(
    fake_client: Client,
) -> None:
    from labkit.structured import json_instructions

    b = _builder(fake_client, prompts={"terse": "Answer with one word. Sentiment of: {{review}}"})
    b.preview.refresh()
    html = b.preview.messages.value
    assert "labkit-instructions" in html and "Answer with one word." in html
    assert "Whatever the task above asks you to answer" in html
    sent = fake_client.prepare(
        template="Answer with one word. Sentiment of: {{review}}",
        variables={
            k: v
            for k, v in next(iter(b.used_dataset().records())).items()
            if k not in ("id", "expected")
        },
        model="fake/sent-1",
        schema={"sentiment": list(LABELS)},
    ).messages[-1]["content"]
    assert sent.endswith(json_instructions({"sentiment": list(LABELS)}))
    est = b.preview.estimate.value
    assert "12 items × 1 prompts × 1 models × 1 repeats = 12 calls" in est
    assert "unknown (no price in the registry)" in est or "free" in est


# ------------------------------------------------------------------ verdict and fallbacks
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1] * 5 + [0] * 11, [0] * 16),  # the case: 5 discordant items, all one way
        ([1] * 14 + [0] * 2, [0] * 14 + [1] * 2),
        ([1, 0] * 8, [0, 1] * 8),
    ],
)
def test_compare_header_states_the_winner_and_agrees_with_its_interval(
    a: list[int], b: list[int]
) -> None:
    from labkit.experiments.diagnostics import significant

    view = CompareView(binary_frame(a, b))
    r = view.result
    sig = significant(r)
    assert sig == (r.ci_low > 0 or r.ci_high < 0)
    head = view.stats_box.value
    assert f"data-significant='{str(sig).lower()}'" in head
    if sig:
        winner = "A (A)" if r.diff > 0 else "B (B)"
        assert f"{winner} is better than" in head and "excludes 0" in head
    else:
        assert "no significant difference" in head and "includes 0" in head
    assert "McNemar" in head  # explained in the tooltip of "discordant"
    forest = view.charts.figures["forest"]
    (trace,) = forest.data
    assert trace.name == (
        "significant: the interval excludes 0"
        if sig
        else "not significant: the interval includes 0"
    )
    assert trace.showlegend is True and forest.layout.legend.title.text == "verdict"


def test_compare_view_leaves_out_answers_a_fallback_gave() -> None:
    df = fallback_frame()
    view = CompareView(df)
    assert view.excluded == int((df["model_id"] != df["model"]).sum()) == 10
    assert view.result.n_items == 10  # compared only on the items big answered itself
    assert "answers given by a fallback model" in view.stats_box.value
    assert "⚠" in view.modes_box.value and "a fallback answered" in view.modes_box.value
