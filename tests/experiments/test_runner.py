"""Grid runs: the loopback server with real litellm, the local model, interruption and resume,
failing models, bad input, progress and persistence."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import ClientFactory

from labkit.client import Client
from labkit.errors import DatasetError, InputError, UnknownModel
from labkit.evaluation import ExactMatch, FieldMatch, InEnum
from labkit.experiments import Experiment, Results, stats
from labkit.experiments import calibration as calib
from labkit.experiments.progress import ProgressState, TextBar
from labkit.experiments.results import COLUMNS
from labkit.testing import FakeBackend, FakeOpenAIServer, provider_error
from labkit.types import Completion, Request, Usage

MINI = "openai/gpt-4o-mini-2024-07-18"
FULL = "openai/gpt-4o-2024-08-06"
SCHEMA = {"sentiment": ["positive", "negative"]}
PROMPTS = {
    "terse": "Sentiment of this review: {{review}}",
    "polite": "Please read the review and classify its sentiment.\nReview: {{review}}",
}


def _reviews(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i:03d}",
            "review": f"{'great' if i % 2 == 0 else 'awful'} product number {i}",
            "expected": {"sentiment": "positive" if i % 2 == 0 else "negative"},
        }
        for i in range(n)
    ]


def _sentiment_reply(body: dict[str, Any]) -> str:
    """A model that is right on 'great' reviews, wrong on 'awful' ones for the terse prompt."""
    text = body["messages"][-1]["content"]
    review = re.search(r"(great|awful) product", text)
    good = review is not None and review.group(1) == "great"
    terse = text.startswith("Sentiment of this review")
    label = "positive" if good or terse else "negative"
    return json.dumps({"sentiment": label, "sentiment_confidence": 0.9 if good else 0.6})


@pytest.fixture
def sentiment_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    monkeypatch.setenv("LABKIT_TEST_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(reply=_sentiment_reply, latency=0.02, max_lifetime=120) as server:
        yield server


# ---------------------------------------------------------------------------- loopback grid
def test_grid_on_loopback_server(
    client_factory: ClientFactory, tmp_path: Path, sentiment_server: FakeOpenAIServer
) -> None:
    client = client_factory({MINI: sentiment_server, FULL: sentiment_server})
    exp = Experiment(
        _reviews(4), PROMPTS, [MINI, FULL], schema=SCHEMA, client=client, concurrency=4,
        params={"temperature": 0, "max_tokens": 30},
    )  # fmt: skip
    assert [type(e) for e in exp.evaluators] == [FieldMatch]  # labels + schema
    res = exp.run(progress=False)

    df = res.df
    assert list(df.columns) == list(COLUMNS) and len(res) == 16 == sentiment_server.count
    assert df[["item_id", "prompt", "model", "repeat"]].duplicated().sum() == 0
    assert (df["run_id"] == exp.run_id).all() and df["error"].isna().all()
    assert set(df["variant"]) == {f"{p} · {m}" for p in PROMPTS for m in (MINI, FULL)}
    assert (df["model_id"] == df["model"]).all()
    assert df["parse_ok"].all() and (df["prompt_tokens"] > 0).all()
    assert (df["completion_tokens"] > 0).all() and (df["cost_usd"] > 0).all()
    assert (df["ttft_s"] > 0).all() and (df["latency_s"] >= df["ttft_s"]).all()
    assert not df["cache_hit"].any()
    # the terse prompt says "positive" to everything: right on even items only
    terse = df[df["prompt"] == "terse"]
    expected = terse["item_id"].map(lambda i: int(i[1:]) % 2 == 0)
    assert (terse["passed"] == expected).all()
    assert df.loc[df["prompt"] == "polite", "passed"].all()
    row = df.iloc[0]
    assert row["parsed"] == {"sentiment": "positive"}
    assert row["confidences"] == {"sentiment": 0.9} and row["confidence"] == 0.9
    assert row["field_correct"] == {"sentiment": True} and row["scores"] == {"field_match": 1.0}
    # every row links to its trace
    traces = client.traces(run_id=exp.run_id, kind="attempt")
    assert set(df["trace_id"]) == set(traces["call_id"])
    assert len(client.traces(run_id=exp.run_id, kind="parent")) == 1

    summary = res.summary()
    assert list(summary["variant"]) == res.variants
    rates = dict(zip(summary["variant"], summary["rate"], strict=True))
    assert rates[f"terse · {MINI}"] == 0.5 and rates[f"polite · {FULL}"] == 1.0
    cmp = res.compare(f"polite · {MINI}", f"terse · {MINI}")
    assert cmp.n_items == 4 and cmp.diff == 0.5

    again = exp.run(progress=False)  # everything from the cache, nothing sent
    assert sentiment_server.count == 16 and again.df["cache_hit"].all()
    pd.testing.assert_series_equal(again.df["passed"], df["passed"])
    assert (again.df["cost_usd"] == df["cost_usd"]).all()  # original cost kept on a hit
    client.close()


def test_stop_then_resume_pays_only_for_the_rest(
    client_factory: ClientFactory, tmp_path: Path, sentiment_server: FakeOpenAIServer
) -> None:
    client = client_factory({MINI: sentiment_server})
    exp = Experiment(_reviews(12), PROMPTS, [MINI], schema=SCHEMA, client=client, concurrency=3)
    exp.on_progress.append(lambda s: exp.stop() if s.done >= 5 else None)
    partial = exp.run(progress=False)

    done_before = len(partial)
    assert 5 <= done_before < exp.total == 24
    assert partial.meta["status"] == "stopped" and partial.meta["completed"] == done_before
    assert sentiment_server.count == done_before  # in-flight calls finished and were kept
    assert len(exp.results) == done_before
    # the partial frame has every variant on the same items, in plan order
    assert partial.df["item_id"].is_monotonic_increasing

    exp.on_progress.clear()
    full = exp.run(progress=False)
    assert len(full) == 24 and full.df["error"].isna().all()
    assert sentiment_server.count == 24  # only the calls not done before were made
    assert int(full.df["cache_hit"].sum()) == done_before
    client.close()


def test_cancelled_future_keeps_rows_and_resume_repeats_no_finished_call(
    client_factory: ClientFactory, tmp_path: Path, sentiment_server: FakeOpenAIServer
) -> None:
    client = client_factory({MINI: sentiment_server})
    exp = Experiment(_reviews(15), PROMPTS, [MINI], schema=SCHEMA, client=client, concurrency=4)
    reached, cancelled = threading.Event(), threading.Event()

    def hold(state: ProgressState) -> None:
        # Hold the loop until the cancel is requested: on a loaded machine the rest of the
        # grid would otherwise finish before this thread gets to cancel it.
        if state.done >= 6 and not reached.is_set():
            reached.set()
            cancelled.wait(10)

    exp.on_progress.append(hold)
    fut = exp.start(progress=False)
    assert reached.wait(30)
    fut.cancel()  # like Ctrl-C: calls in flight are abandoned
    cancelled.set()
    with pytest.raises(BaseException):  # noqa: B017 (CancelledError of either flavour)
        fut.result(timeout=10)
    _wait_until(lambda: exp.progress.done == len(exp.results) and not exp._active)

    done_before = len(exp.results)
    sent_before = sentiment_server.count
    assert 6 <= done_before < 30 and exp.results.meta["status"] == "interrupted"
    exp.on_progress.clear()
    full = exp.run(progress=False)
    assert len(full) == 30
    assert sentiment_server.count - sent_before == 30 - done_before
    client.close()


def test_ctrl_c_keeps_rows_and_resume_repeats_no_finished_call(
    client_factory: ClientFactory,
    tmp_path: Path,
    sentiment_server: FakeOpenAIServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = client_factory({MINI: sentiment_server})
    exp = Experiment(_reviews(15), PROMPTS, [MINI], schema=SCHEMA, client=client, concurrency=4)
    fired: list[bool] = []
    returned = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # what Python's own handler does

    def ctrl_c(state: ProgressState) -> None:
        if state.done >= 6 and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT to the waiting main thread
            # Hold the loop until `run` has returned to the main thread, so it has asked to
            # cancel: on a loaded machine the rest of the grid would otherwise finish first
            # (a fixed pause after the signal was taken was not always enough).
            returned.wait(10)

    exp.on_progress.append(ctrl_c)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            exp.run(progress=False)
    finally:
        returned.set()
        signal.signal(signal.SIGINT, previous)
    assert "interrupted after" in capsys.readouterr().err
    _wait_until(lambda: not exp._active)

    done_before, sent_before = len(exp.results), sentiment_server.count
    assert 6 <= done_before < 30
    exp.on_progress.clear()
    full = exp.run(progress=False)
    assert len(full) == 30 and full.df["error"].isna().all()
    assert sentiment_server.count - sent_before == 30 - done_before
    client.close()


def _wait_until(predicate: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_a_model_that_fails_every_call_gives_error_rows(
    client_factory: ClientFactory, tmp_path: Path, sentiment_server: FakeOpenAIServer
) -> None:
    with FakeOpenAIServer(reply="x", fault_rates={"500": 1.0}, max_lifetime=60) as broken:
        client = client_factory({MINI: sentiment_server, FULL: broken})
        exp = Experiment(_reviews(3), PROMPTS, [MINI, FULL], schema=SCHEMA, client=client)
        with pytest.warns(RuntimeWarning, match=f"model '{FULL}' failed all 6 of its calls"):
            res = exp.run(progress=False)
    df = res.df
    assert len(df) == 12  # every row present
    bad = df[df["model"] == FULL]
    assert bad["error"].notna().all() and not bad["passed"].any()
    assert set(bad["error_type"]) <= {"RetryExhausted", "CircuitOpen"}
    assert bad["output"].isna().all() and (bad["cost_usd"] == 0).all()
    good = df[df["model"] == MINI]
    assert good["error"].isna().all() and good["passed"].any()

    summary = res.summary().set_index("variant")
    assert summary.loc[f"polite · {FULL}", "rate"] == 0.0
    assert summary.loc[f"polite · {FULL}", "errors"] == 3
    assert summary.loc[f"polite · {FULL}", "latency_n"] == 0  # n = 0, not a division by zero
    cal = res.calibration().summary.set_index("variant")
    assert cal.loc[f"polite · {FULL}", "n"] == 0
    client.close()


# ---------------------------------------------------------------------------- bad input
def test_bad_input_fails_before_any_call(client_factory: ClientFactory, tmp_path: Path) -> None:
    backend = FakeBackend("positive")
    client = client_factory(backends={"fake": backend}, attempts=1)
    rows = _reviews(3)

    with pytest.raises(UnknownModel, match="gpt-4o-mini-2024-07-18"):
        Experiment(rows, PROMPTS, ["fake/ok", "gpt-4o-mini-2024-07-18"], client=client)
    with pytest.raises(DatasetError, match=r"'reveiw' has no column.*did you mean 'review'") as err:
        Experiment(rows, {"a": "{{review}}", "b": "Classify {{reveiw}}"}, ["fake/x"], client=client)
    assert "b (" in str(err.value)  # names the prompt that needs it
    with pytest.raises(DatasetError, match="empty"):
        Experiment([], PROMPTS, ["fake/x"], client=client)
    with pytest.raises(DatasetError, match="more than once"):
        Experiment([*rows, rows[0]], PROMPTS, ["fake/x"], client=client)
    unlabelled = [*rows, {"id": "r9", "review": "fine product number 9"}]
    with pytest.raises(DatasetError, match=r"(?s)no expected labels: r9.*field_match"):
        Experiment(unlabelled, PROMPTS, ["fake/x"], schema=SCHEMA, client=client)
    with pytest.raises(InputError, match="tempreature"):
        Experiment(rows, PROMPTS, ["fake/x"], params={"tempreature": 0}, client=client)
    with pytest.raises(InputError, match="must not show them"):
        Experiment(
            rows, {"leak": "{{review}} is {{expected.sentiment}}"}, ["fake/x"], client=client
        )
    with pytest.raises(InputError, match="more than once"):
        Experiment(rows, PROMPTS, ["fake/x", "fake/x"], client=client)
    with pytest.raises(InputError, match="repeats"):
        Experiment(rows, PROMPTS, ["fake/x"], repeats=0, client=client)
    assert backend.history == []

    # unlabelled rows are fine for evaluators that need no labels
    exp = Experiment(
        unlabelled, PROMPTS, ["fake/x"], schema=SCHEMA, client=client,
        evaluators=[InEnum("sentiment", ["positive", "negative"])],
    )  # fmt: skip
    assert len(exp.run(progress=False)) == 8
    client.close()


def test_failing_cells_become_error_rows_and_the_grid_carries_on(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    def reply(req: Request) -> str:
        text = req.messages[-1]["content"]
        if re.search(r"number 1\b", text):
            raise provider_error(400)  # not retryable: this one cell fails
        if re.search(r"number 2\b", text):
            raise ValueError("backend bug")
        return '{"sentiment": "positive"}'

    client = client_factory(backends={"fake": FakeBackend(reply)}, attempts=1)
    exp = Experiment(_reviews(4), PROMPTS, ["fake/m"], schema=SCHEMA, client=client)
    res = exp.run(progress=False)
    df = res.df.set_index("item_id")
    assert len(df) == 8 and exp.progress.errors == 4
    assert set(df.loc["r001", "error_type"]) == {"BadRequest"}
    assert set(df.loc["r002", "error_type"]) == {"ValueError"}
    assert df.loc["r002", "error"].str.contains("backend bug").all()
    assert not df.loc[["r001", "r002"], "passed"].any()
    assert df.loc[["r000", "r003"], "error"].isna().all()
    client.close()


# ---------------------------------------------------------------------------- behaviour
class _CountingBackend:
    """Tracks the most calls in flight at once."""

    def __init__(self, latency: float = 0.01) -> None:
        self.latency = latency
        self.in_flight = self.peak = self.calls = 0

    async def generate(self, request: Request) -> Completion:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.latency)
        self.in_flight -= 1
        return Completion(text="positive", model=request.model, usage=Usage(prompt_tokens=3))

    def count_tokens(self, model: str, messages: list[dict[str, Any]]) -> int:
        return 3


def test_concurrency_cap_repeats_and_plan_order(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    backend = _CountingBackend()
    client = client_factory(backends={"fake": backend}, attempts=1)
    exp = Experiment(
        _reviews(5), ["A {{review}}", "B {{review}}"], ["fake/a", "fake/b"], repeats=3,
        concurrency=3, client=client,
    )  # fmt: skip
    assert list(exp.prompts) == ["p1", "p2"] and exp.evaluators == []
    plan = exp.preview()
    assert len(plan) == exp.total == 60 and backend.calls == 0
    assert plan.iloc[0]["text"] == "A great product number 0"
    res = exp.run(progress=False)
    assert backend.calls == 60 and backend.peak == 3
    keys = ["item_id", "prompt", "model", "repeat"]
    pd.testing.assert_frame_equal(res.df[keys], plan[keys])
    assert sorted(res.df["repeat"].unique()) == [0, 1, 2]
    # no evaluators: passed = answered and parsed
    assert res.df["passed"].all() and res.df["score"].isna().all()
    client.close()


def test_run_id_is_deterministic(client_factory: ClientFactory, tmp_path: Path) -> None:
    client = client_factory(backends={"fake": FakeBackend("positive")}, attempts=1)
    a = Experiment(_reviews(3), PROMPTS, ["fake/x"], params={"temperature": 0}, client=client)
    b = Experiment(_reviews(3), PROMPTS, ["fake/x"], params={"temperature": 0}, client=client)
    c = Experiment(_reviews(3), PROMPTS, ["fake/x"], params={"temperature": 1}, client=client)
    d = Experiment(_reviews(4), PROMPTS, ["fake/x"], params={"temperature": 0}, client=client)
    assert a.run_id == b.run_id and len({a.run_id, c.run_id, d.run_id}) == 3
    client.close()


def test_default_evaluators(client_factory: ClientFactory, tmp_path: Path) -> None:
    client = client_factory(backends={"fake": FakeBackend("Paris")}, attempts=1)
    qa = [{"id": "q1", "q": "Capital of France?", "expected": {"answer": "paris"}}]
    exp = Experiment(qa, ["{{q}}"], ["fake/x"], client=client)
    assert [type(e) for e in exp.evaluators] == [ExactMatch]
    res = exp.run(progress=False)
    assert res.df["passed"].tolist() == [True] and res.df["scores"][0] == {"exact_match": 1.0}
    plain = [{"id": "q1", "q": "Say hi"}]
    assert Experiment(plain, ["{{q}}"], ["fake/x"], client=client).evaluators == []
    client.close()


def test_arun_from_another_event_loop_and_progress_callbacks(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    client = client_factory(backends={"fake": FakeBackend('{"sentiment": "negative"}')}, attempts=1)
    exp = Experiment(_reviews(4), PROMPTS, ["fake/x"], schema=SCHEMA, client=client)
    seen: list[ProgressState] = []
    exp.on_progress.append(seen.append)
    exp.on_progress.append(lambda s: 1 / 0)  # a broken callback does not stop the run
    res = asyncio.run(exp.arun(progress=False))
    assert len(res) == 8
    done = [s.done for s in seen]
    assert done == sorted(done) and done[-1] == 8 and seen[-1].total == 8
    assert res.df["passed"].tolist() == [False, False, True, True] * 2
    client.close()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_text_progress_bar() -> None:
    out = _Terminal()
    bar = TextBar("demo", stream=out, min_interval=0)
    bar.update(ProgressState(3, 10, 1, 0.0123, 2, 1.5))
    bar.close(ProgressState(10, 10, 1, 0.05, 2, 4.0))
    text = out.getvalue()
    assert text.startswith("\rdemo [") and "3/10 · 1 error · $0.012 · 2 cached" in text
    assert text.endswith("\n") and text.rstrip().endswith(
        "10/10 · 1 error · $0.050 · 2 cached · 4.0 s · done"
    )


def test_text_progress_bar_in_a_log_writes_plain_lines() -> None:
    """Not a terminal (CI, a file): whole lines now and then, no carriage returns."""
    out = io.StringIO()
    bar = TextBar("demo", stream=out, log_interval=3600)
    for done in range(1, 10):
        bar.update(ProgressState(done, 10, 0, 0.0, 0, 0.1 * done))
    bar.close(ProgressState(10, 10, 0, 0.0, 0, 1.0))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 1 and lines[0].endswith("10/10 · 0 errors · $0 · 0 cached · 1.0 s · done")


def test_widget_bar_has_a_stop_button() -> None:
    pytest.importorskip("ipywidgets")
    from labkit.experiments.progress import WidgetBar

    stopped: list[bool] = []
    bar = WidgetBar(4, "grid", on_stop=lambda: stopped.append(True))
    bar.update(ProgressState(2, 4, 0, 0.0, 0, 0.5))
    assert bar.bar.value == 2 and "2/4" in bar.text.value
    bar.stop_button.click()
    assert stopped == [True] and bar.stop_button.disabled
    bar.close(ProgressState(4, 4, 0, 0.0, 0, 1.0))
    assert bar.bar.bar_style == "success"


def test_results_round_trip_parquet_and_csv(
    client_factory: ClientFactory, tmp_path: Path, sentiment_server: FakeOpenAIServer
) -> None:
    client = client_factory({MINI: sentiment_server})
    exp = Experiment(_reviews(3), PROMPTS, [MINI], schema=SCHEMA, client=client, name="rt")
    res = exp.run(progress=False)
    for name in ("r.parquet", "r.csv"):
        back = Results.read(res.to_parquet(tmp_path / name) if name.endswith("parquet")
                            else res.to_csv(tmp_path / name))  # fmt: skip
        pd.testing.assert_frame_equal(back.df, res.df)
        assert back.meta["run_id"] == exp.run_id and back.meta["prompts"] == PROMPTS
        assert back.meta["dataset"]["fingerprint"] == exp.dataset.fingerprint
        assert back.meta["schema"]["required"] == ["sentiment"]
        assert back.meta["evaluators"] == [
            {"type": "field_match", "fields": None, "name": "field_match"}
        ]
    assert "api_key" not in json.dumps(res.meta)
    html = res._repr_html_()
    assert "<table" in html and "terse · " in html
    client.close()


def test_stats_accept_the_frame(client_factory: ClientFactory) -> None:
    reply = FakeBackend('{"sentiment": "positive", "sentiment_confidence": 0.7}')
    client = client_factory(backends={"fake": reply}, attempts=1)
    res = Experiment(_reviews(6), PROMPTS, ["fake/x"], schema=SCHEMA, client=client).run(
        progress=False
    )
    assert stats.success_rates(res.df)["rate"].tolist() == [0.5, 0.5]
    assert calib.calibration(res.df, field="sentiment").summary["n"].tolist() == [6, 6]
    assert set(res.charts()) >= {"success", "forest", "cost", "latency"}
    client.close()


# ---------------------------------------------------------------------------- local model
@pytest.mark.local_model
def test_grid_on_the_local_model(local_client: Client) -> None:
    exp = Experiment(
        _reviews(3),
        {"short": "Review: {{review}}\nIs it positive or negative?", "json": PROMPTS["terse"]},
        ["local/smollm2-135m-json"],
        schema=SCHEMA,
        params={"max_tokens": 40, "temperature": 0},
        client=local_client,
        concurrency=2,
    )
    res = exp.run(progress=False)
    df = res.df
    assert len(df) == 6 and df["error"].isna().all()
    assert (df["model_id"] == "local/smollm2-135m-json").all() and (df["cost_usd"] == 0).all()
    assert (df["completion_tokens"] > 0).all() and df["output"].str.len().gt(0).all()
    assert df["passed"].dtype == bool and len(res.summary()) == 2
