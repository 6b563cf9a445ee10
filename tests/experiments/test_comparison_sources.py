"""One source per fact a comparison shows: the evaluators' reasons live in the results frame,
`Results.compare` leaves a fallback's answers out of a comparison of models, the config history
marks rates measured on different items, and the builder says what is wrong beside each field.

Real parts throughout: a real Client with its diskcache and SQLite traces, a scripted backend
standing in for the model (its replies are chosen so the right verdicts are known).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from frames import binary_frame, fallback_frame

from labkit.client import Client
from labkit.evaluation import FieldMatch
from labkit.experiments import Experiment
from labkit.experiments.results import Results, build_frame
from labkit.models import Registry
from labkit.testing import FakeBackend

ITEMS = [
    {"id": "a", "review": "Love it", "expected": {"sentiment": "positive"}},
    {"id": "b", "review": "Broke at once", "expected": {"sentiment": "negative"}},
    {"id": "c", "review": "It is fine", "expected": {"sentiment": "neutral"}},
]
SCHEMA = {"sentiment": ["positive", "negative", "neutral"]}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    reg = Registry(policy={"retry": {"max_attempts": 1}})
    c = Client(registry=reg, cache_dir=tmp_path / "cache", traces=tmp_path / "traces.db")
    c.add_backend("fake", FakeBackend(lambda r: json.dumps({"sentiment": "positive"})))
    yield c
    c.close()


@pytest.fixture
def judged(client: Client) -> Results:
    """Two prompts on a model that always says "positive", scored by FieldMatch."""
    prompts = {"short": "Sentiment: {{review}}", "long": "What is the sentiment? {{review}}"}
    return Experiment(
        ITEMS, prompts, ["fake/m"], schema=SCHEMA, evaluators=[FieldMatch()], client=client
    ).run(progress=False)


# ----------------------------------------------------------------------------- reasons


def test_the_evaluators_reasons_are_a_column_of_the_results_frame(
    judged: Results, tmp_path: Path
) -> None:
    df = judged.df
    assert "reasons" in df.columns
    wrong = df[df["item_id"] == "b"].iloc[0]
    assert wrong["reasons"] == {"field_match": "sentiment is 'positive', expected 'negative'"}
    right = df[df["item_id"] == "a"].iloc[0]
    assert right["reasons"] == {"field_match": "all 1 field(s) match"}
    # files keep them (JSON text, read back as dicts)
    for path in (tmp_path / "r.csv", tmp_path / "r.parquet"):
        back = Results.read(
            judged.to_csv(path) if path.suffix == ".csv" else judged.to_parquet(path)
        )
        assert back.df["reasons"].tolist() == df["reasons"].tolist()


def test_matrix_and_compare_view_show_the_stored_reason_not_a_rebuilt_one(
    judged: Results,
) -> None:
    from labkit.widgets import CompareView, ItemMatrix

    # Change the stored reason: both views must show the new text, so they read the column.
    df = judged.df
    row = df.index[(df["item_id"] == "b") & (df["prompt"] == "short")][0]
    df.at[row, "reasons"] = {"field_match": "said positive about a broken item"}
    matrix = ItemMatrix(judged)
    cells = matrix.frame.set_index("item_id")
    assert (
        cells.loc["b", "reasons|short · fake/m"] == "field_match: said positive about a broken item"
    )
    assert cells.loc["b", "reasons|long · fake/m"] == (
        "field_match: sentiment is 'positive', expected 'negative'"
    )
    assert cells.loc["a", "reasons|short · fake/m"] == ""  # passed: nothing to explain
    assert "said positive about a broken item" in matrix.table.value

    view = CompareView(judged, a="short · fake/m", b="long · fake/m", charts=False)
    pairs = view.pairs.set_index("item_id")  # type: ignore[union-attr]
    assert pairs.loc["b", "why_a"] == "field_match: said positive about a broken item"
    view.set_filters(failures=True)
    assert "said positive about a broken item" in view.table.value


def test_reasons_text_falls_back_to_fields_only_without_a_stored_reason() -> None:
    from labkit.experiments.diagnostics import reasons_text

    row = {
        "error": None, "parse_ok": True, "parsed": {"sentiment": "positive"},
        "field_correct": {"sentiment": False}, "scores": {"judge": 0.25}, "reasons": {},
    }  # fmt: skip
    text = reasons_text(row, {"sentiment": "negative"})
    assert text == 'sentiment: expected "negative", got "positive"; judge = 0.25'
    row["reasons"] = {"judge": "the reply ignores the broken screen"}
    assert reasons_text(row, {"sentiment": "negative"}) == (
        "judge: the reply ignores the broken screen"
    )
    assert reasons_text({"error": "timeout after 30 s"}) == "error: timeout after 30 s"
    row |= {"scores": {"judge": float("nan")}, "reasons": {"judge": "judge reply unusable"}}
    assert reasons_text(row) == "judge: judge reply unusable"  # could not judge: says why


# ----------------------------------------------------------------------------- fallbacks


def test_results_compare_of_models_leaves_out_a_fallbacks_answers() -> None:
    res = Results(fallback_frame())
    own = res.compare("p · big", "p · mini")
    assert own.n_items == 10  # only the items big answered itself
    assert own.rate_a == 1.0  # big's own answers are the even items, all right
    [note] = [n for n in own.notes if "fallback" in n]
    assert note.startswith("10 answers given by a fallback model were left out")
    assert "p · big: openai/big-2024 (10), openai/mini-2024 (10)" in note
    kept = res.compare("p · big", "p · mini", fallbacks="include")
    assert kept.n_items == 20 and kept.rate_a == 0.5
    assert any("were kept" in n and "score the fallback" in n for n in kept.notes)
    with pytest.raises(ValueError, match="use 'exclude' or 'include'"):
        res.compare("p · big", "p · mini", fallbacks="drop")


def test_comparing_prompts_on_one_model_keeps_every_row() -> None:
    df = fallback_frame()
    df["model"] = "openai/big-2024"  # both variants ask the same model: prompts compared
    r = Results(df).compare("p · big", "p · mini")
    assert r.n_items == 20 and not any("fallback" in n for n in r.notes)


def test_summary_and_charts_name_the_model_that_answered() -> None:
    res = Results(build_frame(list(enumerate(fallback_frame().to_dict("records")))))
    s = res.summary().set_index("variant")
    assert s.loc["p · big", "answered_by"] == "openai/big-2024 (10), openai/mini-2024 (10)"
    ticks = res.charts()["success"].layout.xaxis.ticktext
    assert "p · big<br>n=20<br>⚠ 10 answered by mini-2024" in ticks


# ----------------------------------------------------------------------------- history


def test_history_table_marks_rates_measured_on_different_items(tmp_path: Path) -> None:
    from labkit.artifact import DeployedConfig, save_config
    from labkit.monitoring import history_table

    def cfg(model: str, n: int, dataset: str | None) -> DeployedConfig:
        return DeployedConfig.model_validate(
            {
                "name": "bot", "prompt": "Classify: {{text}}", "model": model,
                "evidence": {
                    "metric": "success_rate", "value": 0.5 + n / 100, "n": n,
                    "dataset": dataset, "created_at": "2026-01-01T00:00:00Z",
                    "labkit_version": "0",
                },
            }
        )  # fmt: skip

    path = tmp_path / "bot.yaml"
    save_config(path, cfg("local/smollm2-135m", 16, "review_sentiment"), action="export")
    save_config(path, cfg("local/smollm2-135m-json", 8, None), action="promote")
    table = history_table(path)
    assert table["n"].tolist() == [16, 8]
    assert table["measured_on"].tolist() == ["review_sentiment", "the regression suite"]
    assert table["basis"].tolist() == ["A", "B"]
    assert "not comparable" in table.attrs["note"]
    save_config(path, cfg("local/smollm2-135m", 16, "review_sentiment"), action="rollback")
    assert history_table(path)["basis"].tolist() == ["A", "B", "A"]


# ----------------------------------------------------------------------------- builder


def test_builder_says_what_is_wrong_beside_each_field(client: Client) -> None:
    from labkit.widgets import ExperimentBuilder

    b = ExperimentBuilder(
        client, dataset="review_sentiment", prompts={"p": "Sentiment: {{review}}"},
        models=None, schema={"sentiment": ["positive", "negative"]}, rows=4,
    )  # fmt: skip
    assert "no model selected" in b.models_check.value and b.run_button.disabled
    assert b.prompts_check.value == "" and b.dataset_check.value == ""
    b.prompt_rows[0].template.value = "Sentiment: {{nope}}"
    assert "{{nope}}" in b.prompts_check.value  # beside the prompts, not only under Run
    b.schema_text.value = '{"sentiment": [positive]}'
    assert "not valid JSON" in b.schema_check.value
    assert b.run_clicked() is None and "beside its field" in b.notice.text
    # fixing each field clears its own message and, once all are fixed, the summary
    b.set_models(["fake/m"])
    assert b.models_check.value == ""
    b.prompt_rows[0].template.value = "Sentiment: {{review}}"
    assert b.prompts_check.value == ""
    b.schema_text.value = '{"sentiment": ["positive", "negative"]}'
    assert "✓ structured output" in b.schema_check.value
    assert not b.run_button.disabled and b.notice.text == ""


def test_a_running_grid_charts_its_rows_so_far_and_stop_drops_the_eta(client: Client) -> None:
    from labkit.widgets import ExperimentBuilder

    slow = FakeBackend(lambda r: json.dumps({"sentiment": "positive"}), latency=0.05)
    client.add_backend("fake", slow)
    b = ExperimentBuilder(
        client, dataset="review_sentiment", prompts={"p": "Sentiment: {{review}}"},
        models=["fake/slow"], schema=SCHEMA, rows=40, concurrency=1,
    )  # fmt: skip
    assert b.run_clicked() is not None, b.notice.text
    import time

    deadline = time.monotonic() + 10
    while "s left" not in b.progress_text.value and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "s left" in b.progress_text.value  # the ETA showed while running
    # the success chart of the rows done so far is drawn while the grid runs
    while "success" not in b.charts.figures and time.monotonic() < deadline:
        time.sleep(0.02)
    live = b.charts.figures["success"]
    assert "so far:" in live.layout.title.text and b.future is not None and not b.future.done()
    b.stop_clicked()
    assert "s left" not in b.progress_text.value and "stopping" in b.progress_text.value
    b.wait(30)
    assert "s left" not in b.progress_text.value and "stopped" in b.progress_text.value
    final = b.charts.figures["success"]  # the final chart replaced the live one
    assert "so far" not in final.layout.title.text and "forest" in b.charts.figures


def test_failure_modes_view_shows_where_the_answers_go(judged: Results) -> None:
    html = judged.failure_modes()._repr_html_()
    v = "short · fake/m"
    assert f"<b>{v}</b>: success 33%" in html
    assert "predicted: positive 100%" in html
    assert "right per label: positive 1/1, negative 0/1, neutral 0/1" in html
    assert "labkit-confusion" in html and "rows expected, columns predicted" in html


def test_the_forest_plot_says_what_holm_means_where_it_uses_it() -> None:
    from frames import make_results

    from labkit.experiments import plots

    several = plots.forest_chart(make_results(n_items=30, seed=0))
    assert "Holm-adjusted: each interval widened" in several.layout.title.text
    one = plots.forest_chart(binary_frame([1, 0] * 10, [1, 1, 0, 0] * 5))
    assert "Holm" not in one.layout.title.text  # one pair: the plain interval, no jargon


def test_the_forest_plot_of_models_leaves_out_a_fallbacks_answers() -> None:
    from labkit.experiments import plots

    fig = plots.forest_chart(fallback_frame())
    assert "10 answers given by a fallback model left out" in fig.layout.title.text
    [n_items] = {int(c[4]) for trace in fig.data for c in trace.customdata}
    assert n_items == 10  # the same items Results.compare uses


def test_the_export_panels_evidence_compares_each_models_own_answers() -> None:
    from labkit.widgets import ExportPanel

    res = Results(build_frame(list(enumerate(fallback_frame().to_dict("records")))))
    _, pairs = ExportPanel(res).evidence_frame("p · mini")
    [pair] = pairs.to_dict("records")
    assert pair["a"] == "p · big" and pair["n_items"] == 10  # as res.compare("p · big", ...)
    assert pair["diff"] == res.compare("p · big", "p · mini").diff
