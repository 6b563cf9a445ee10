from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from labkit.errors import ConfigError, UnknownModel
from labkit.models import Registry, UnpinnedModelWarning, ab_bucket

YAML = """
profile: dev
models:
  openai/gpt-4o-mini-2024-07-18: {api_key_env: OPENAI_API_KEY, context_window: 128000}
aliases:
  triage:
    default: local/smollm2-135m-json
    prod: openai/gpt-4o-2024-08-06
    staging: {openai/gpt-4o-2024-08-06: 0.5, openai/gpt-4o-mini-2024-07-18: 0.5}
fallbacks:
  openai/gpt-4o-2024-08-06: [openai/gpt-4o-mini-2024-07-18, local/smollm2-135m]
"""


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    path = tmp_path / "labkit.yaml"
    path.write_text(YAML)
    return Registry.load(path)


def test_profiles_pick_the_pinned_version(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    assert reg.resolve("triage").model == "local/smollm2-135m-json"
    prod = reg.resolve("triage", profile="prod")
    assert prod.model == "openai/gpt-4o-2024-08-06"
    assert prod.chain == [
        "openai/gpt-4o-2024-08-06",
        "openai/gpt-4o-mini-2024-07-18",
        "local/smollm2-135m",
    ]
    monkeypatch.setenv("LABKIT_PROFILE", "prod")
    assert reg.resolve("triage").model == "openai/gpt-4o-2024-08-06"
    assert reg.resolve("triage", profile="dev").model == "local/smollm2-135m-json"


def test_ab_split_is_deterministic_and_balanced(reg: Registry) -> None:
    picks = [
        reg.resolve("triage", profile="staging", ab_key=f"item-{i}").model for i in range(2000)
    ]
    again = [
        reg.resolve("triage", profile="staging", ab_key=f"item-{i}").model for i in range(2000)
    ]
    assert picks == again
    share = Counter(picks)["openai/gpt-4o-2024-08-06"] / len(picks)
    assert 0.45 < share < 0.55
    assert 0 <= ab_bucket("x", "triage") < 1


def test_unknown_model_suggests_close_names(reg: Registry) -> None:
    with pytest.raises(UnknownModel) as err:
        reg.resolve("triag")
    assert "triage" in err.value.suggestions
    assert "Did you mean 'triage'" in str(err.value)
    with pytest.raises(UnknownModel):
        reg.resolve("notaprovider/some-model")
    assert reg.resolve("anthropic/claude-3-5-sonnet-20241022").alias is None


def test_default_model_is_the_local_one() -> None:
    res = Registry().resolve(None)
    assert res.model == "local/smollm2-135m"
    assert res.info.context_window == 8192


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("aliases: [unclosed", "invalid YAML line"),
        ("- a list", "expected a mapping"),
        ("modles: {}", "unknown top-level key(s) ['modles']"),
        ("aliases: {t: {default: nope/model}}", "aliases.t.default"),
        ("aliases: {t: {default: {local/smollm2-135m: -1}}}", "aliases.t"),
        ("models: {local/x: {context_window: 0}}", "models.local/x"),
        ("profile: qa", "profile 'qa'"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "labkit.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Registry.load(path)
    assert fragment in str(err.value)
    assert str(path) in str(err.value)


def test_floating_model_names_warn(reg: Registry) -> None:
    reg.alias("chat", "openai/gpt-4o")
    with pytest.warns(UnpinnedModelWarning, match="pin a dated version"):
        reg.resolve("chat")


def test_code_registration_merges_over_builtins() -> None:
    reg = Registry()
    info = reg.register("local/smollm2-135m", max_output_tokens=100)
    assert info.context_window == 8192 and info.max_output_tokens == 100
    with pytest.raises(UnknownModel):
        reg.alias("x", "nope/zzz")


def test_an_unregistered_id_s_defaults_are_built_once_and_a_registration_wins() -> None:
    reg = Registry()
    info = reg.info("openai/gpt-4o-mini-2024-07-18")
    assert info.id == "openai/gpt-4o-mini-2024-07-18" and info.api_base is None
    assert reg.info("openai/gpt-4o-mini-2024-07-18") is info  # one object per id
    assert reg.info("openai/gpt-4o-2024-08-06") is not info
    reg.register("openai/gpt-4o-mini-2024-07-18", api_base="http://127.0.0.1:9")
    assert reg.info("openai/gpt-4o-mini-2024-07-18").api_base == "http://127.0.0.1:9"
