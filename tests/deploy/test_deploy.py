"""Exported configs: choose, export, load, run, version, roll back and gate model upgrades.

Everything here runs on scripted fake models (`labkit.testing.FakeBackend`): "fake/good*"
answer every item correctly, "fake/bad" always says "pos" (right on 2/3 of the items).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import ClientFactory

from labkit import artifact as config
from labkit.client import Client
from labkit.deploy import (
    DeployedConfig,
    Output,
    gate,
    load_config,
    read_config,
    rollback,
    save_config,
)
from labkit.errors import ConfigError, InputError, UnknownModel
from labkit.experiments import Experiment, Results, best_variant, export_config
from labkit.models import Registry
from labkit.monitoring import history
from labkit.testing import FakeBackend
from labkit.types import Request

N_ITEMS = 12
LABELS = {f"item-{i:02d}": ("neg" if i % 3 == 0 else "pos") for i in range(N_ITEMS)}
SCHEMA = {"label": ["pos", "neg"]}


def _reply(request: Request) -> str:
    match = re.search(r"item-\d\d", str(request.messages[-1]["content"]))
    assert match, request.messages
    model = request.model
    if model.startswith("fake/good"):
        return json.dumps({"label": LABELS[match.group()], "label_confidence": 0.9})
    if model == "fake/shy":  # right, but unsure
        return json.dumps({"label": LABELS[match.group()], "label_confidence": 0.3})
    return json.dumps({"label": "pos", "label_confidence": 0.6})


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend([_reply])


@pytest.fixture
def client(client_factory: ClientFactory, backend: FakeBackend) -> Client:
    reg = Registry(aliases={"triage": "fake/good"}, fallbacks={"triage": ["fake/good-backup"]})
    return client_factory(registry=reg, backends={"fake": backend})


def _rows() -> list[dict[str, Any]]:
    return [
        {"id": f"r{i:02d}", "text": f"item-{i:02d}", "expected": {"label": label}}
        for i, label in enumerate(LABELS.values())
    ]


@pytest.fixture
def results(client: Client) -> Results:
    exp = Experiment(
        _rows(),
        {"short": "Classify: {{text}}", "polite": "Please classify: {{text}}"},
        ["triage", "fake/bad"],
        schema=SCHEMA,
        client=client,
        params={"max_tokens": 20, "temperature": 0},
    )
    return exp.run(progress=False)


def _frame(variants: dict[str, tuple[list[bool], float]]) -> pd.DataFrame:
    """A minimal results frame: per variant, the pass list and a cost per row."""
    rows = []
    for variant, (passed, cost) in variants.items():
        prompt, model = variant.split(" · ")
        for i, ok in enumerate(passed):
            rows.append(
                dict(run_id="run-x", item_id=f"i{i}", prompt=prompt, model=model, model_id=model,
                     variant=variant, repeat=0, passed=ok, parse_ok=True, score=float(ok),
                     cost_usd=cost, latency_s=0.1, ttft_s=float("nan"), cache_hit=False,
                     error=None, prompt_tokens=10, completion_tokens=5, cached_tokens=0)
            )  # fmt: skip
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- best


def test_best_variant_takes_the_highest_rate(results: Results) -> None:
    win = results.best()
    assert win.variant in ("short · triage", "polite · triage")
    assert win.value == 1.0 and win.n == N_ITEMS and 0.7 < win.ci_low < 1.0
    assert set(win.table["variant"]) == set(results.variants)


def test_ties_go_to_the_cheaper_variant() -> None:
    df = _frame({"a · m1": ([True, True, False], 0.02), "b · m2": ([True, False, True], 0.01)})
    assert best_variant(df).variant == "b · m2"
    # lower is better for cost metrics
    assert best_variant(df, metric="cost_per_success").variant == "b · m2"


def test_constraints_filter_and_a_failure_lists_every_variant() -> None:
    df = _frame({"a · m1": ([True] * 4, 0.02), "b · m2": ([True, True, False, False], 0.001)})
    win = best_variant(df, constraints={"cost_per_success": {"max": 0.01}})
    assert win.variant == "b · m2"
    with pytest.raises(ConfigError) as err:
        best_variant(df, constraints={"cost_per_success": {"max": 0.0001}, "n": {"min": 30}})
    msg = str(err.value)
    assert "a · m1" in msg and "b · m2" in msg
    assert "cost_per_success 0.02 > max 0.0001" in msg and "n 4 < min 30" in msg


def test_unknown_metric_or_malformed_constraint_is_an_input_error() -> None:
    df = _frame({"a · m1": ([True], 0.0)})
    with pytest.raises(InputError, match="unknown metric 'accuracy'"):
        best_variant(df, metric="accuracy")
    with pytest.raises(InputError, match="'min' and/or 'max'"):
        best_variant(df, constraints={"n": 30})


# ----------------------------------------------------------------------------- export


def test_export_writes_everything_production_needs(results: Results, tmp_path: Path) -> None:
    path = results.export_config(tmp_path / "triage.yaml", suite_size=6, note="first")
    text = path.read_text()
    cfg = read_config(path)
    assert cfg.version == 1 and cfg.name == results.best().variant
    assert cfg.model == "fake/good"  # the alias resolved to the pinned id that answered
    assert cfg.fallbacks == ["fake/good-backup"]  # the registry's chain for the alias
    assert cfg.params == {"max_tokens": 20, "temperature": 0}
    assert cfg.output_schema is not None and cfg.output_schema["properties"]["label"]["enum"]
    assert cfg.evaluators == [{"type": "field_match", "fields": None, "name": "field_match"}]
    assert len(cfg.suite) == 6
    assert {i.expected["label"] for i in cfg.suite} == {"pos", "neg"}  # both classes sampled
    assert all(set(i.inputs) == {"text"} for i in cfg.suite)
    ev = cfg.evidence
    assert ev is not None and ev.metric == "success_rate" and ev.value == 1.0
    assert ev.n == N_ITEMS and ev.ci_low is not None and ev.ci_low < 1.0
    assert ev.dataset_fingerprint == results.experiment.dataset.fingerprint  # type: ignore[union-attr]
    assert ev.run_id == results.meta["run_id"] and ev.labkit_version
    assert {c["variant"] for c in ev.compared_to} == set(results.variants) - {cfg.name}
    # three comparisons: Holm-adjusted p and intervals beside the unadjusted ones, labelled
    assert all(c["p_holm"] >= c["p_value"] and "Holm" in c["intervals"] for c in ev.compared_to)
    assert all(c["ci_low_holm"] <= c["ci_low"] <= c["diff"] for c in ev.compared_to)
    # confidences 0.9 on all-correct answers: the threshold accepts them all
    assert cfg.confidence.review_below == 0.9 and cfg.confidence.expected_coverage == 1.0
    assert yaml.safe_load(text)["schema"] == cfg.output_schema
    [entry] = history(path)
    assert entry.action == "export" and entry.note == "first" and entry.author
    assert entry.evidence and entry.evidence["value"] == 1.0


def test_round_trip_same_outputs_from_the_cache(
    results: Results, tmp_path: Path, client: Client, backend: FakeBackend
) -> None:
    path = results.export_config(tmp_path / "triage.yaml", suite_size=N_ITEMS)
    calls = len(backend.history)
    deployed = load_config(path, client=client)
    outs = deployed.run([item.inputs for item in deployed.config.suite])
    assert isinstance(outs, list) and len(backend.history) == calls  # nothing new was called
    rows = results.df[results.df["variant"] == deployed.config.name].set_index("item_id")
    for item, out in zip(deployed.config.suite, outs, strict=True):
        assert out.completion is not None and out.completion.cache_hit
        assert out.completion.text == rows.loc[item.id, "output"]
        assert out.value == rows.loc[item.id, "parsed"] and out.ok and not out.needs_review
    frame = pd.DataFrame([item.inputs for item in deployed.config.suite[:2]])
    from_frame = deployed.run(frame)
    assert isinstance(from_frame, list) and len(backend.history) == calls
    assert [o.value for o in from_frame] == [o.value for o in outs[:2]]
    one = deployed.run(deployed.config.suite[0].inputs)
    assert isinstance(one, Output) and one.completion and one.completion.cache_hit


def test_arun_works_inside_a_running_event_loop(results: Results, tmp_path: Path) -> None:
    path = results.export_config(tmp_path / "triage.yaml", suite_size=2)
    deployed = load_config(path, client=results.experiment.client)  # type: ignore[union-attr]

    async def main() -> Any:
        return await deployed.arun({"text": "item-03"})

    out = asyncio.run(main())
    assert out.value == {"label": "neg"} and out.confidences == {"label": 0.9}


def test_low_confidence_and_failures_are_routed_to_review(
    results: Results, tmp_path: Path, client: Client
) -> None:
    path = results.export_config(tmp_path / "triage.yaml", suite_size=2, review_below=0.5)
    cfg = read_config(path)
    shy = load_config(path, client=client)
    shy.config = cfg.model_copy(update={"model": "fake/shy"})
    out = shy.run({"text": "item-01"})
    assert isinstance(out, Output) and out.ok and out.confidence == 0.3 and out.needs_review
    outs = shy.run([{"text": "item-01"}, {"wrong": "no text variable"}])
    assert isinstance(outs, list) and outs[1].error and "text" in outs[1].error
    assert outs[1].needs_review and outs[0].value == {"label": "pos"}  # the batch went on


def test_export_refuses_floating_models_and_never_writes_keys(
    results: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    floating = Results(results.df.assign(model_id="openai/gpt-4o"), results.meta)
    target = tmp_path / "x.yaml"
    with pytest.raises(ConfigError, match="floating model name"):
        export_config(floating, target, variant="short · fake/bad")
    assert not target.exists()
    # a credential that slipped into the data is refused, and nothing is written
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-live-0123456789")
    leaky = Results(results.df, results.meta, results.experiment)
    leaky.experiment.dataset.df.loc[0, "text"] = "item-00 sk-live-0123456789"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="MY_SERVICE_API_KEY"):
        export_config(leaky, target, suite_size=N_ITEMS)
    assert not target.exists()


def test_secret_params_are_left_out(results: Results, tmp_path: Path) -> None:
    meta = dict(results.meta, params={"max_tokens": 20, "client_secret": "x", "timeout": 5})
    with pytest.warns(UserWarning) as caught:
        path = export_config(Results(results.df, meta, results.experiment), tmp_path / "c.yaml")
    assert read_config(path).params == {"max_tokens": 20}
    assert "client_secret" not in path.read_text()
    assert any("credentials" in str(w.message) for w in caught)


def test_export_from_a_results_file_reloads_and_checks_the_dataset(
    client: Client, tmp_path: Path
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    exp = Experiment(data, {"p": "Classify: {{text}}"}, ["fake/good"], schema=SCHEMA, client=client)
    saved = exp.run(progress=False).to_parquet(tmp_path / "results.parquet")
    read = Results.read(saved)
    path = export_config(read, tmp_path / "c.yaml", suite_size=3, client=client)
    cfg = read_config(path)
    assert [i.id for i in cfg.suite] == ["r00", "r01", "r06"]  # neg, pos, neg: spread
    assert cfg.model == "fake/good"
    data.write_text(data.read_text().replace("item-05", "item-55"))
    with pytest.raises(ConfigError, match="has changed since the run"):
        export_config(read, tmp_path / "c.yaml", client=client)
    assert read_config(path).version == 1
    in_memory = Results.read(exp.run(progress=False).to_csv(tmp_path / "r.csv"))
    in_memory.meta["dataset"]["path"] = None
    with pytest.raises(ConfigError, match="dataset was not a file"):
        export_config(in_memory, tmp_path / "d.yaml", client=client)


# ----------------------------------------------------------------------------- versions


def test_export_again_keeps_history_and_rollback_restores(results: Results, tmp_path: Path) -> None:
    path = tmp_path / "triage.yaml"
    results.export_config(path, suite_size=4, note="v1")
    first = path.read_text()
    with pytest.warns(UserWarning, match="no confidence threshold reached 90% accuracy"):
        results.export_config(path, variant="short · fake/bad", suite_size=4, note="v2")
    assert read_config(path).confidence.review_below == 1.0  # everything goes to review
    assert read_config(path).model == "fake/bad" and read_config(path).version == 2
    assert (tmp_path / "triage.history" / "v0001.yaml").read_text() == first
    restored = rollback(path, to=1)
    assert restored.version == 3 and restored.model == "fake/good"
    assert (
        read_config(path).evidence == read_config(tmp_path / "triage.history/v0001.yaml").evidence
    )
    log = history(path)
    assert [(v.version, v.action, v.model) for v in log] == [
        (1, "export", "fake/good"),
        (2, "export", "fake/bad"),
        (3, "rollback", "fake/good"),
    ]
    assert log[2].restored_from == 1 and log[2].created_at and log[2].author
    lines = (tmp_path / "triage.history" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["version"] for x in lines] == [1, 2, 3]


def test_rollback_to_a_missing_version_lists_the_existing_ones(
    results: Results, tmp_path: Path
) -> None:
    path = results.export_config(tmp_path / "triage.yaml", suite_size=2)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as err:
        rollback(path, to=7)
    assert "no version 7" in str(err.value) and "v1 (export, fake/good" in str(err.value)
    assert path.read_bytes() == before and len(history(path)) == 1


def test_a_hand_edited_file_becomes_a_version_before_it_is_replaced(
    results: Results, tmp_path: Path
) -> None:
    path = results.export_config(tmp_path / "triage.yaml", suite_size=2)
    edited = path.read_text().replace("max_tokens: 20", "max_tokens: 30")
    path.write_text(edited)
    results.export_config(path, suite_size=2)
    log = history(path)
    assert [v.action for v in log] == ["export", "edit", "export"]
    assert (tmp_path / "triage.history" / log[1].file).read_text() == edited


def test_export_never_overwrites_a_file_that_is_not_a_config(
    results: Results, tmp_path: Path
) -> None:
    registry = tmp_path / "labkit.yaml"
    registry.write_text("profile: dev\n")
    with pytest.raises(ConfigError, match="is not a labkit config; nothing was written"):
        results.export_config(registry)
    assert registry.read_text() == "profile: dev\n" and not history(registry)
    assert not (tmp_path / "labkit.history").exists()  # no trace of the refused export


def test_a_failed_write_leaves_the_config_untouched(
    results: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = results.export_config(tmp_path / "triage.yaml", suite_size=2)
    before = path.read_bytes()
    cfg = read_config(path)

    def boom(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(config.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_config(path, cfg.model_copy(update={"model": "fake/bad"}))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.rglob("*.tmp")]  # temporaries cleaned up
    assert [v.version for v in history(path)] == [1]


# ----------------------------------------------------------------------------- bad files


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


GOOD = """\
version: 1
name: demo
prompt: "Classify: {{text}}"
model: fake/good
params: {max_tokens: 20}
schema:
  type: object
  properties: {label: {type: string}}
suite:
  - id: a
    inputs: {text: item-00}
    expected: {label: neg}
"""


@pytest.mark.parametrize(
    ("edit", "message", "where"),
    [
        (("name: demo", "name: demo: two"), "invalid YAML", "line 2, column 11"),
        (("params:", "colour: red\nparams:"), "Extra inputs are not permitted", "field colour"),
        (("params: {max_tokens: 20}", "params: {api_key: sk-1}"), "looks like a credential", "field params.api_key"),
        (("params: {max_tokens: 20}", "params: {max_tokns: 20}"), "unknown generation parameter", "line 5"),
        (("expected: {label: neg}", "expected: {colour: neg}"), "not in the output schema", "line 12, field suite[0].expected.colour"),
        (("inputs: {text: item-00}", "inputs: {txt: item-00}"), "lacks the template variable(s) ['text']", "line 11, field suite[0].inputs"),
        (("version: 1", "version: zero"), "valid integer", "line 1, field version"),
        (("suite:", "evaluators: [{type: field_match, fields: [colour]}]\nsuite:"), "reads field(s) ['colour']", "line 9, field evaluators[0]"),
    ],
)  # fmt: skip
def test_bad_files_name_file_line_and_field(
    tmp_path: Path, edit: tuple[str, str], message: str, where: str
) -> None:
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as err:
        read_config(path)
    assert message in str(err.value) and where in str(err.value)
    assert str(path) in str(err.value)


def test_good_file_reads_and_unknown_model_names_the_line(tmp_path: Path, client: Client) -> None:
    assert isinstance(read_config(_write(tmp_path, GOOD)), DeployedConfig)
    path = _write(tmp_path, GOOD.replace("model: fake/good", "model: nosuch/model-x"))
    with pytest.raises(UnknownModel) as err:
        load_config(path, client=client)
    assert "line 4, field model" in str(err.value) and "nosuch/model-x" in str(err.value)
    alias = _write(tmp_path, GOOD.replace("model: fake/good", "model: triage"))
    with pytest.raises(ConfigError, match="is an alias; a deployed config pins a model id"):
        load_config(alias, client=client)
    with pytest.raises(ConfigError, match="no such config file"):
        read_config(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------- gate


@pytest.fixture
def current_bad(results: Results, tmp_path: Path) -> Path:
    return results.export_config(
        tmp_path / "bad.yaml", variant="short · fake/bad", review_below=0.5
    )


@pytest.fixture
def current_good(results: Results, tmp_path: Path) -> Path:
    return results.export_config(tmp_path / "good.yaml", variant="short · triage")


def test_gate_promotes_a_better_candidate(current_bad: Path, client: Client) -> None:
    v = gate(current_bad, "fake/good", client=client)
    assert v.decision == "promote" and v.promoted_version == 2
    assert v.current_rate == pytest.approx(2 / 3) and v.candidate_rate == 1.0
    assert v.n == N_ITEMS and v.diff == pytest.approx(1 / 3) and v.ci_low > 0
    assert {d["id"] for d in v.disagreements} == {"r00", "r03", "r06", "r09"}
    cfg = read_config(current_bad)
    assert cfg.model == "fake/good" and cfg.version == 2
    assert cfg.evidence and cfg.evidence.metric == "suite_pass_rate" and cfg.evidence.gate
    assert cfg.evidence.compared_to[0]["model"] == "fake/bad"
    assert [v.action for v in history(current_bad)] == ["export", "promote"]


def test_gate_promotes_an_equal_candidate_within_the_margin(
    current_good: Path, client: Client
) -> None:
    # 12 agreeing items cannot rule out a 5-point loss (the old bootstrap collapsed to [0, 0]
    # here and always promoted); they do rule out a 25-point one.
    v = gate(current_good, "fake/good-2025-01-01", client=client, margin=0.05, promote=False)
    assert v.decision == "keep" and v.diff == 0 and v.ci_low < -0.05 and not v.disagreements
    v = gate(current_good, "fake/good-2025-01-01", client=client, margin=0.25)
    assert v.decision == "promote" and -0.25 < v.ci_low < 0 and v.p_value <= v.alpha
    assert "exact" in v.method and read_config(current_good).model == "fake/good-2025-01-01"


def test_gate_keeps_the_current_model_against_a_worse_candidate(
    current_good: Path, client: Client
) -> None:
    before = current_good.read_bytes()
    v = gate(current_good, "fake/bad", client=client)
    assert v.decision == "keep" and v.promoted_version is None
    assert v.ci_low <= -v.margin and v.diff == pytest.approx(-1 / 3)
    assert len(v.disagreements) == 4 and all(d["current_passed"] for d in v.disagreements)
    assert "KEEP" in str(v) and "cannot rule out" in v.reason
    assert current_good.read_bytes() == before and len(history(current_good)) == 1


def test_gate_dry_run_and_the_suite_calls_are_cached(
    current_bad: Path, client: Client, backend: FakeBackend
) -> None:
    v = gate(current_bad, "fake/good", client=client, promote=False)
    assert v.decision == "promote" and v.promoted_version is None
    assert read_config(current_bad).model == "fake/bad"
    calls = len(backend.history)
    again = gate(current_bad, "fake/good", client=client, promote=False)
    assert len(backend.history) == calls and again.diff == v.diff
    assert not client.traces(run_id=v.run_id, kind="parent").empty


def test_gate_bad_input(current_good: Path, client: Client, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="already the config's model"):
        gate(current_good, "triage", client=client)  # the alias resolves to the same model
    with pytest.raises(UnknownModel):
        gate(current_good, "nosuch-model", client=client)
    cfg = read_config(current_good)
    empty = tmp_path / "empty.yaml"
    save_config(empty, cfg.model_copy(update={"suite": []}))
    before = empty.read_bytes()
    with pytest.raises(ConfigError) as err:
        gate(empty, "fake/bad", client=client)
    assert "suite is empty" in str(err.value) and "field suite" in str(err.value)
    assert empty.read_bytes() == before
