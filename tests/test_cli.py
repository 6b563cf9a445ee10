"""The `labkit` command, end to end: run (local model), report, gate (loopback server),
history, rollback, serve-fake, and its errors. Most tests call `labkit.cli.main([...])` in
process; a few start the real entry points as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from frames import make_results

from labkit.cli import main
from labkit.client import Client
from labkit.deploy import DeployedConfig, read_config, save_config
from labkit.experiments import Experiment, Results
from labkit.models import Registry
from labkit.monitoring import history
from labkit.testing import FakeOpenAIServer

ROOT = Path(__file__).resolve().parent.parent
LABKIT = Path(sys.executable).with_name("labkit")  # the installed console script
CHROMIUM = Path("/usr/bin/chromium")


def _calls(tmp: Path) -> list[str]:
    return ["--cache-dir", str(tmp / "cache"), "--traces", str(tmp / "traces.db")]


# ----------------------------------------------------------------------------- help


def test_help_explains_each_command_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    for command in ("run", "report", "gate", "history", "rollback", "serve-fake"):
        assert command in out
    for command in ("run", "report", "gate", "rollback", "serve-fake"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "example:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["gate", "cfg.yaml"])  # --candidate is required
    assert done.value.code == 2 and "--candidate" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the report


class _Charts(HTMLParser):
    """Collects plotly chart divs and scripts of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.divs: list[str] = []
        self.sections: list[str] = []
        self.scripts: list[dict[str, Any]] = []
        self._in_script: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.divs.append(a.get("id") or "")
        if tag == "section" and a.get("data-chart"):
            self.sections.append(a["data-chart"] or "")
        if tag == "script":
            self._in_script = {"src": a.get("src"), "size": 0, "text": ""}
            self.scripts.append(self._in_script)

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            self._in_script["size"] += len(data)
            if len(self._in_script["text"]) < 2000:
                self._in_script["text"] += data[:2000]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None


def _check_report(html_path: Path, df: Any) -> None:
    from labkit.experiments.plots import all_charts

    names = list(all_charts(df))
    parsed = _Charts()
    parsed.feed(html_path.read_text(encoding="utf-8"))
    assert parsed.divs == [f"chart-{n}" for n in names]  # one plotly div per chart
    assert parsed.sections == names
    assert not [s for s in parsed.scripts if s["src"]]  # nothing fetched: works offline
    big = [s for s in parsed.scripts if s["size"] > 1_000_000]
    assert len(big) == 1 and "plotly" in big[0]["text"].lower()  # plotly.js inlined once


@pytest.fixture
def results_file(tmp_path: Path) -> tuple[Path, Results]:
    res = Results(make_results(n_items=30), {"name": "synthetic", "run_id": "run-test"})
    return res.to_parquet(tmp_path / "results.parquet"), res


def test_report_contains_every_chart_and_inlines_plotly_once(
    results_file: tuple[Path, Results], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, res = results_file
    out = tmp_path / "report.html"
    assert main(["report", str(path), "-o", str(out), "--title", "Synthetic"]) == 0
    assert str(out) in capsys.readouterr().out
    _check_report(out, res.df)
    text = out.read_text()
    assert "Synthetic" in text and "Paired comparisons" in text
    csv = res.to_csv(tmp_path / "results.csv")
    assert main(["report", str(csv)]) == 0  # default output: RESULTS with .html
    _check_report(csv.with_suffix(".html"), res.df)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_report_renders_offline_in_a_browser(
    results_file: tuple[Path, Results], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    from labkit.experiments.plots import all_charts

    path, res = results_file
    out = tmp_path / "report.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())  # fmt: skip
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(out.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(all_charts(res.df))}",
                timeout=60_000,
            )  # fmt: skip
            drawn = page.evaluate(
                "[...document.querySelectorAll('.plotly-graph-div')].map(d => d.id)"
            )
        finally:
            browser.close()
    assert not errors
    assert drawn == [f"chart-{n}" for n in all_charts(res.df)]


def test_a_partial_frame_still_gives_a_report(results_file: tuple[Path, Results]) -> None:
    from labkit.experiments.report import build_report

    _, res = results_file
    html = build_report(res.df.drop(columns=["latency_s"]))
    assert "No summary table" in html and "latency_s" in html
    assert html.count('class="plotly-graph-div') == 9  # every chart still drawn


def test_report_of_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nope.parquet")]) == 2
    err = capsys.readouterr().err
    assert "labkit report: error:" in err and "nope.parquet" in err


# ----------------------------------------------------------------------------- run (local model)


@pytest.fixture(scope="module")
def local_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """A 3-row experiment on the embedded model, exported: (config, data, workdir)."""
    tmp = tmp_path_factory.mktemp("cli-local")
    data = tmp / "rows.jsonl"
    lines = (ROOT / "datasets" / "review_sentiment.jsonl").read_text().splitlines()[:3]
    data.write_text("\n".join(lines) + "\n")
    client = Client(registry=Registry(), cache_dir=tmp / "cache", traces=tmp / "traces.db")
    try:
        exp = Experiment(
            data,
            {"plain": "Sentiment of this review: {{review}}"},
            ["local/smollm2-135m-json"],
            schema={"sentiment": ["positive", "negative", "neutral"]},
            params={"max_tokens": 30, "temperature": 0},
            client=client,
        )
        res = exp.run(progress=False)
        # Three rows on a 135M model: its answers may not beat the majority label, which
        # export refuses by default; this fixture tests the CLI, not the choice of a winner.
        path = res.export_config(
            tmp / "sentiment.yaml", suite_size=3, review_below=0.5, allow_degenerate=True
        )
    finally:
        client.close()
    yield path, data, tmp


@pytest.mark.local_model
def test_run_then_report_on_the_local_model(
    local_config: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, data, tmp = local_config
    out = tmp / "run.parquet"
    code = main(["run", str(cfg), "--data", str(data), "--out", str(out), "--no-progress", *_calls(tmp)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "v1 · local/smollm2-135m-json" in printed and "wrote 3 rows" in printed
    res = Results.read(out)
    assert len(res.df) == 3 and res.df["cache_hit"].all()  # same call path, same cache keys
    assert res.df["error"].isna().all() and res.meta["models"] == ["local/smollm2-135m-json"]
    csv = tmp / "run.csv"
    assert main(["run", str(cfg), "--data", str(data), "--out", str(csv), *_calls(tmp)]) == 0
    assert "3/3" in capsys.readouterr().err  # the progress bar
    assert len(Results.read(csv).df) == 3
    html = tmp / "run.html"
    assert main(["report", str(out), "-o", str(html)]) == 0
    _check_report(html, res.df)


@pytest.mark.local_model
def test_run_as_a_real_subprocess(local_config: tuple[Path, Path, Path]) -> None:
    cfg, data, tmp = local_config
    out = tmp / "sub.csv"
    cmd = [sys.executable, "-m", "labkit.cli", "run", str(cfg), "--data", str(data)]
    done = subprocess.run(
        [*cmd, "--out", str(out), "--no-progress", *_calls(tmp)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 3 rows" in done.stdout and len(Results.read(out).df) == 3


def test_run_rejects_a_broken_config_and_a_bad_output_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprompt: 'Hi {{text}}'\nmodel: local/smollm2-135m\nparams: [1,\n")
    data = tmp_path / "rows.jsonl"
    data.write_text('{"id": "a", "text": "hi"}\n')
    assert main(["run", str(bad), "--data", str(data), *_calls(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "labkit run: error:" in err and f"{bad}, line 5" in err and "invalid YAML" in err
    assert not list(tmp_path.glob("*.parquet"))
    assert main(["run", str(bad), "--data", str(data), "--out", "x.txt"]) == 2
    assert ".parquet or .csv" in capsys.readouterr().err


# ----------------------------------------------------------------------------- gate over HTTP

GOOD = "openai/fake-good-2024-01-01"
BAD = "openai/fake-bad-2024-01-01"
LABELS = {f"item-{i}": ("neg" if i % 3 == 0 else "pos") for i in range(9)}


def _server_reply(body: dict[str, Any]) -> str:
    text = str(body["messages"][-1]["content"])
    item = next(k for k in LABELS if f"{k}." in text)
    label = LABELS[item] if "good" in str(body.get("model")) else "pos"
    return json.dumps({"label": label, "label_confidence": 0.8})


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """A config on BAD and a registry pointing both fake models at the loopback server."""
    monkeypatch.setenv("LABKIT_TEST_KEY", "sk-test")
    with FakeOpenAIServer(reply=_server_reply, max_lifetime=120) as server:
        entry = {"api_base": server.url, "api_key_env": "LABKIT_TEST_KEY"}
        reg = tmp_path / "labkit.yaml"
        reg.write_text(json.dumps({"models": {GOOD: entry, BAD: entry}}))
        cfg = DeployedConfig.model_validate(
            {
                "name": "labels",
                "prompt": "Label {{text}}.",
                "model": BAD,
                "params": {"max_tokens": 20},
                "schema": {"type": "object", "properties": {"label": {"enum": ["pos", "neg"]}}},
                "suite": [
                    {"id": k, "inputs": {"text": k}, "expected": {"label": v}}
                    for k, v in LABELS.items()
                ],
            }
        )
        path = tmp_path / "labels.yaml"
        save_config(path, cfg, author="tester")
        yield path, reg


def test_gate_cli_promotes_and_keeps_over_the_loopback_server(
    served: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, reg = served
    common = ["--registry", str(reg), "--no-progress", *_calls(tmp_path)]
    assert main(["gate", str(path), "--candidate", GOOD, *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PROMOTE") and "written as version 2" in out
    assert read_config(path).model == GOOD
    assert [v.action for v in history(path)] == ["export", "promote"]
    # now the bad model is the candidate: kept, exit status 1, nothing written
    before = path.read_bytes()
    assert main(["gate", str(path), "--candidate", BAD, "--json", *common]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["decision"] == "keep" and verdict["current"] == GOOD
    assert verdict["n"] == 9 and len(verdict["disagreements"]) == 3
    assert path.read_bytes() == before
    # an empty suite is refused with the field named
    empty = tmp_path / "empty.yaml"
    save_config(empty, read_config(path).model_copy(update={"suite": []}))
    assert main(["gate", str(empty), "--candidate", BAD, *common]) == 2
    assert "field suite" in capsys.readouterr().err


# ----------------------------------------------------------------------------- versions


def test_history_and_rollback(
    served: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = served
    save_config(path, read_config(path).model_copy(update={"model": GOOD}), note="upgrade")
    assert main(["history", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "tester" in lines[0] and "upgrade" in lines[1]
    assert main(["rollback", str(path), "--to", "1", "--note", "bad upgrade"]) == 0
    assert "restored v1 as v3" in capsys.readouterr().out
    assert read_config(path).model == BAD
    before = path.read_bytes()
    assert main(["rollback", str(path), "--to", "9"]) == 2
    err = capsys.readouterr().err
    assert "no version 9" in err and "v1 (export" in err and "v3 (rollback" in err
    assert path.read_bytes() == before
    assert main(["history", str(path), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["action"] == "rollback" and last["restored_from"] == 1
    assert last["note"] == "bad upgrade"


# ----------------------------------------------------------------------------- serve-fake


def test_serve_fake_in_process_stops_after_its_lifetime(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve-fake", "--lifetime", "0.3"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")


@pytest.mark.skipif(not LABKIT.exists(), reason="the labkit console script is not installed")
def test_serve_fake_entry_point_answers_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [str(LABKIT), "serve-fake", "--reply", "pong", "--lifetime", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "ping"}]})
        req = urllib.request.Request(
            f"{url}/chat/completions",
            data=body.encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-any"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            reply = json.loads(resp.read())
        assert reply["choices"][0]["message"]["content"] == "pong"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "served 1 request" in err
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
