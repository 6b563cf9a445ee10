"""End to end in a real browser: JupyterLab on loopback, driven by Debian's headless Chromium.

The server serves a temporary copy of `notebooks/` (so autosave never writes outputs into the
committed notebooks) that shares the notebooks' answer cache (so the A/B notebook replays cached
answers instead of calling the model again). Settings, workspaces and
runtime files go to temporary folders too; announcements and update checks are off, so nothing
leaves the machine. Playwright drives `/usr/bin/chromium` (never a downloaded browser).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (`make browser` installs it)",
    ),
]

# JS: is the current notebook finished (kernel idle, every code cell run)? Any error outputs?
_NOTEBOOK_STATE = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return {ready: false};
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  for (const c of cells) {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    }
  }
  return {
    ready: true,
    status: kernel ? kernel.status : 'none',
    pending: cells.filter(c => c.model.executionCount === null).length,
    running: cells.filter(c => c.promptNode && c.promptNode.textContent.includes('*')).length,
    errors: errors,
  };
}"""


class Lab:
    """A JupyterLab server process on loopback with its URL and token."""

    def __init__(self, root: Path, base: Path) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = base / "settings"
        tracker = settings / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True)
        # Render every cell (no windowing), so widget outputs exist in the DOM to be found.
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        # No news or update checks (and no toast asking about them over the screenshot).
        apputils = settings / "@jupyterlab" / "apputils-extension"
        apputils.mkdir(parents=True)
        (apputils / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        env = {
            **os.environ,
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path = base / "jupyterlab.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 90.0) -> None:
        status = f"{self.url}/api/status?token={self.token}"
        wait_http(status, self.proc, self.log_path, name="JupyterLab", timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".labkit", ".ipynb_checkpoints"))
    # Share the notebooks' answer cache (git-ignored, made for exactly this): answers the
    # notebook tests or a user already paid for replay here, and answers made here replay there.
    cache = NOTEBOOKS / ".labkit" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (root / ".labkit").mkdir()
    (root / ".labkit" / "cache").symlink_to(cache, target_is_directory=True)
    server = Lab(root, base)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_notebook(browser: Any, lab: Lab, name: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    # `reset`: no workspace restored from an earlier test, whose notebook could be the current
    # widget when run-all is issued (its cells would run, this one's would wait forever).
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}")
    page.wait_for_function(
        "(name) => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.context"
        " && window.jupyterapp.shell.currentWidget.context.path.endsWith(name)"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        arg=name,
        timeout=90_000,
    )
    return page


def run_all(page: Any, lab: Lab, timeout: float = 600.0) -> dict[str, Any]:
    """Run every cell and wait until the kernel is idle with every code cell executed."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = page.evaluate(_NOTEBOOK_STATE)
        if state.get("errors"):
            break
        idle = state.get("ready") and state["status"] == "idle"
        if idle and not state["pending"] and not state["running"]:
            break
        page.wait_for_timeout(500)
    else:
        raise AssertionError(f"notebook did not finish in {timeout} s: {state}\n{lab.log()}")
    return state


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=False)
    return path


def test_ab_notebook_runs_and_the_builder_draws_its_charts(lab: Lab, browser: Any) -> None:
    page = open_notebook(browser, lab, "02_ab_prompts.ipynb")
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    started = time.perf_counter()
    state = run_all(page, lab)
    ran_in = time.perf_counter() - started
    assert not state["errors"], f"cells failed in the browser: {state['errors']}"

    # The notebook's own charts (results.charts()) and the compare view rendered.
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length >= 4"
    )
    pairs = page.locator(".labkit-compare table.labkit-pairs tr")
    assert pairs.count() > 1, "the compare view lists no rows"

    # Press the builder's Run: the grid replays from the cache and the result tabs fill in.
    builder = page.locator(".labkit-builder")
    builder.scroll_into_view_if_needed()
    assert builder.locator(".js-plotly-plot").count() == 0
    builder.locator("button.widget-button[title='Run']").click()
    clicked = time.perf_counter()
    page.wait_for_function(
        "() => document.querySelectorAll('.labkit-builder .js-plotly-plot').length >= 4",
        timeout=300_000,
    )
    to_charts = time.perf_counter() - clicked
    plots = builder.locator(".js-plotly-plot")
    assert plots.count() >= 4
    # With this tiny model both prompts may answer one label to (nearly) everything: the export
    # panel then refuses to crown a winner and says why (#20), a moment after the charts. That
    # refusal is the only error notice allowed.
    page.wait_for_timeout(1500)
    notices = builder.locator(".labkit-notice.labkit-error")
    texts = [notices.nth(i).inner_text() for i in range(notices.count())]
    assert all("no variant can be picked as the winner" in t for t in texts), texts
    assert all("degenerate" in t and "allow_degenerate=True" in t for t in texts), texts
    progress = builder.locator(".widget-html-content", has_text="cached").first.inner_text()
    assert "32/32" in progress and "32 cached" in progress, progress
    # The charts are drawn (SVG with data), not empty placeholders.
    assert builder.locator(".js-plotly-plot .main-svg").count() >= 4
    assert builder.locator(".js-plotly-plot .bars path, .js-plotly-plot .point").count() > 0

    plots.first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    shot = screenshot(page, "browser_ab_builder.png")

    # The other tabs work in the browser too: the A/B compare view draws its own charts.
    builder.locator(".lm-TabBar-tab", has_text="A/B compare").click()
    page.wait_for_function(
        "() => document.querySelectorAll("
        "'.labkit-builder .labkit-compare .js-plotly-plot').length >= 2"
    )
    compare = builder.locator(".labkit-compare")
    assert compare.locator("table.labkit-pairs tr").count() > 1
    compare.locator("table.labkit-pairs").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    screenshot(page, "browser_ab_compare.png")
    builder.scroll_into_view_if_needed()
    page.evaluate("() => document.querySelector('.labkit-builder').scrollIntoView()")
    page.wait_for_timeout(300)
    screenshot(page, "browser_ab_form.png")

    # A broken schema is marked beside the schema box and Run is disabled; fixing it clears both.
    from playwright.sync_api import expect

    schema = builder.locator("textarea[placeholder^='JSON']")
    good = schema.input_value()
    run = builder.locator("button.widget-button", has_text="Run")
    schema.fill('{"sentiment": [positive]}')
    mark = builder.locator(".widget-html-content", has_text="not valid JSON")
    expect(mark).to_be_visible()
    expect(run).to_be_disabled()
    box, said = schema.bounding_box(), mark.bounding_box()
    assert box and said and 0 <= said["y"] - (box["y"] + box["height"]) < 60, (box, said)
    mark.scroll_into_view_if_needed()
    screenshot(page, "browser_form_error_beside_field.png")
    schema.fill(good)
    expect(mark).to_have_count(0)
    expect(run).to_be_enabled()
    print(f"run all: {ran_in:.1f} s; Run to charts: {to_charts:.1f} s; screenshot: {shot}")
    page.close()


_HEIGHTS = """(sel) => Array.from(document.querySelectorAll(sel))
    .filter(el => el.offsetParent !== null)
    .map(el => el.getBoundingClientRect().height)"""


def test_ab_notebook_matrix_preview_and_charts_that_survive_a_resize(
    lab: Lab, browser: Any
) -> None:
    page = open_notebook(browser, lab, "02_ab_prompts.ipynb")
    state = run_all(page, lab)
    assert not state["errors"], f"cells failed in the browser: {state['errors']}"

    # The prompt as sent: the user's prompt and labkit's JSON instructions, marked.
    preview = page.locator(".labkit-preview").first
    preview.scroll_into_view_if_needed()
    instructions = preview.locator(".labkit-instructions")
    assert instructions.count() >= 1
    text = instructions.first.inner_text()
    assert "JSON object" in text and '<"positive" or "negative" or "neutral">' in text
    assert (
        "What is the sentiment of this review?"
        in preview.locator(".labkit-message").first.inner_text()
    )
    assert "calls" in preview.inner_text()
    screenshot(page, "browser_prompt_preview.png")

    # The item matrix: every item's inputs and label beside each variant's answer.
    matrix = page.locator(".labkit-matrix").first
    matrix.scroll_into_view_if_needed()
    rows = matrix.locator("table.labkit-matrix-table tbody tr")
    assert rows.count() == 16
    first = rows.first
    assert "review" in first.locator("td.lk-inputs").inner_text()
    assert "sentiment" in first.locator("td.lk-expected").inner_text()
    assert first.locator("td.lk-cell").count() == 2
    screenshot(page, "browser_item_matrix.png")

    # The builder's charts keep their height through window resizes.
    builder = page.locator(".labkit-builder")
    builder.scroll_into_view_if_needed()
    builder.locator("button.widget-button[title='Run']").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.labkit-builder .js-plotly-plot').length >= 4",
        timeout=300_000,
    )
    builder.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    before = page.evaluate(_HEIGHTS, ".labkit-builder .js-plotly-plot")
    assert before and min(before) > 100, before
    for size in ({"width": 900, "height": 700}, {"width": 1400, "height": 1000}):
        page.set_viewport_size(size)
        page.wait_for_timeout(800)
    builder.locator(".lm-TabBar-tab", has_text="A/B compare").click()
    page.wait_for_timeout(300)
    page.set_viewport_size({"width": 1100, "height": 900})
    page.wait_for_timeout(800)
    builder.locator(".lm-TabBar-tab", has_text="Summary").click()
    page.wait_for_timeout(800)
    after = page.evaluate(_HEIGHTS, ".labkit-builder .js-plotly-plot")
    assert len(after) == len(before) and min(after) > 100, (before, after)
    builder.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    screenshot(page, "browser_builder_after_resize.png")
    page.close()


_CONSTANT_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "id": "k0",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": (
                "import json\n"
                "import labkit\n"
                "from labkit.experiments.datasets import load_dataset\n"
                "from labkit.experiments.runner import Experiment\n"
                "from labkit.models import Registry\n"
                "from labkit.testing import FakeOpenAIServer\n"
                "from labkit.widgets import CompareView, ExportPanel\n"
                "ds = load_dataset('review_sentiment').sample(20, seed=3)\n"
                "truth = {r['review']: r['expected']['sentiment'] for r in ds.records()}\n"
                "def reply(body):\n"
                "    text = body['messages'][-1]['content']\n"
                "    if text.startswith('Always'):\n"
                "        return json.dumps({'sentiment': 'positive', 'sentiment_confidence': 0.7})\n"
                "    label = next(v for k, v in truth.items() if k in text)\n"
                "    return json.dumps({'sentiment': label, 'sentiment_confidence': 0.8})\n"
                "server = FakeOpenAIServer(reply=reply).start()\n"
                "import os; os.environ['LABKIT_DEMO_KEY'] = 'k'\n"
                "M = 'openai/gpt-4o-mini-2024-07-18'\n"
                "reg = Registry(models={M: {'api_base': server.url, 'api_key_env': 'LABKIT_DEMO_KEY'}})\n"
                "client = labkit.Client(registry=reg, cache_dir='.labkit/const-cache', traces='.labkit/const.db')\n"
                "prompts = {'constant': 'Always {{review}}', 'reads': 'Sentiment: {{review}}'}\n"
                "res = Experiment(ds, prompts, [M], schema={'sentiment': ['positive', 'negative', 'neutral']},\n"
                "                 client=client).run(progress=False)\n"
                "server.stop()\n"
                "CompareView(res)"
            ),
        }
    ],
    "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_a_constant_answer_variant_gets_its_warning(lab: Lab, browser: Any) -> None:
    (lab.root / "constant_answer.ipynb").write_text(json.dumps(_CONSTANT_NOTEBOOK))
    page = open_notebook(browser, lab, "constant_answer.ipynb")
    state = run_all(page, lab, timeout=300)
    assert not state["errors"], state["errors"]
    warning = page.locator(".labkit-compare .labkit-failure-modes")
    warning.wait_for()
    text = warning.inner_text()
    assert "predictions collapse to one value: 'positive'" in text, text
    assert "does not beat the majority-class baseline" in text
    assert "baseline" in page.locator(".labkit-compare").inner_text()
    warning.scroll_into_view_if_needed()
    screenshot(page, "browser_constant_answer_warning.png")
    page.close()
