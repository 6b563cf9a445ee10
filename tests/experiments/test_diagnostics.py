"""Failure modes (constant answers, the majority baseline, copied format examples, fallbacks)
and the one verdict rule, on hand-made frames whose right answers are known by construction."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import pytest

from labkit.errors import DegenerateVariant
from labkit.experiments import Results, best_variant, failure_modes, verdict
from labkit.experiments.diagnostics import answered_by_other, significant
from labkit.experiments.results import build_frame
from labkit.experiments.stats import paired_comparison, pairwise_comparisons
from labkit.structured import parse
from labkit.structured.instructions import (
    copies_example,
    format_line,
    json_instructions,
    legacy_example,
)

SCHEMA = {"sentiment": ["positive", "negative", "neutral"]}
LABELS = ["positive"] * 4 + ["negative"] * 3 + ["neutral"] * 3  # majority: positive, 40%


def _row(item: int, prompt: str, answer: str | None, **kw: Any) -> dict[str, Any]:
    label = LABELS[item]
    model = kw.pop("model", "m/one")
    parsed = {"sentiment": answer} if answer is not None else None
    conf = kw.pop("conf", 0.7)
    return {
        "run_id": "r",
        "item_id": f"i{item}",
        "prompt": prompt,
        "model": model,
        "model_id": kw.pop("model_id", model),
        "variant": f"{prompt} · {model}",
        "repeat": 0,
        "output": kw.pop("output", json.dumps({"sentiment": answer, "sentiment_confidence": conf})),
        "parsed": parsed,
        "parse_ok": parsed is not None,
        "passed": answer == label,
        "score": float(answer == label),
        "scores": {},
        "confidence": conf,
        "confidences": {"sentiment": conf},
        "field_correct": {"sentiment": answer == label},
        "error": None,
    } | kw


def _df(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The typed frame, with each item's labels in an `expected` column."""
    df = build_frame(list(enumerate(rows)))
    df["expected"] = [{"sentiment": LABELS[int(i[1:])]} for i in df["item_id"]]
    return df


def frame(**answers: list[str]) -> pd.DataFrame:
    return _df([_row(i, prompt, a) for prompt, said in answers.items() for i, a in enumerate(said)])


CONSTANT = ["positive"] * 10
GOOD = [*LABELS[:8], "positive", "positive"]  # 8 right of 10


def test_constant_answer_is_called_out_with_its_baseline() -> None:
    modes = failure_modes(frame(const=CONSTANT, good=GOOD))
    t = modes.table.set_index("variant")
    const, good = t.loc["const · m/one"], t.loc["good · m/one"]
    assert const["rate"] == pytest.approx(0.4) and const["baseline"] == pytest.approx(0.4)
    assert const["baseline_answer"] == "positive" and const["top_share"] == 1.0
    assert const["degenerate"] and not good["degenerate"]
    text = " ".join(const["warnings"])
    assert "collapse to one value: 'positive' in 10 of 10" in text
    assert "does not beat the majority-class baseline: success 40% vs 40%" in text
    assert good["warnings"] == [] and good["rate"] == pytest.approx(0.8)


def test_per_label_accuracy_confusion_and_distribution() -> None:
    modes = failure_modes(frame(const=CONSTANT, good=GOOD))
    per = modes.per_label[modes.per_label["variant"] == "good · m/one"].set_index("label")
    assert per.loc["positive", "accuracy"] == 1.0
    assert per.loc["negative", "accuracy"] == 1.0
    assert per.loc["neutral", "accuracy"] == pytest.approx(1 / 3)  # 1 right, 2 said positive
    conf = modes.confusion("good · m/one")
    assert conf.loc["neutral", "positive"] == 2 and conf.loc["neutral", "neutral"] == 1
    assert int(conf.to_numpy().sum()) == 10
    dist = modes.distribution[modes.distribution["variant"] == "const · m/one"]
    assert dist[["value", "count", "share"]].to_dict("records") == [
        {"value": "positive", "count": 10, "share": 1.0}
    ]


def test_best_refuses_a_degenerate_variant_and_says_why() -> None:
    df = frame(const=CONSTANT, good=GOOD)
    assert best_variant(df).variant == "good · m/one"
    only = df[df["prompt"] == "const"]
    with pytest.raises(DegenerateVariant) as err:
        best_variant(only)
    assert "collapse to one value" in str(err.value) and "allow_degenerate=True" in str(err.value)
    assert list(err.value.reasons) == ["const · m/one"]
    assert best_variant(only, allow_degenerate=True).variant == "const · m/one"
    assert Results(only).best(allow_degenerate=True).variant == "const · m/one"


def test_summary_puts_the_baseline_beside_the_rate() -> None:
    s = Results(frame(const=CONSTANT, good=GOOD)).summary().set_index("variant")
    assert list(s.columns).index("baseline") == list(s.columns).index("ci_high") + 1
    assert s.loc["good · m/one", "baseline"] == pytest.approx(0.4)
    assert s.loc["const · m/one", "warnings"] == 2 and s.loc["good · m/one", "warnings"] == 0
    html = Results(frame(const=CONSTANT, good=GOOD))._repr_html_()
    assert "does not beat the majority-class baseline" in html


def test_verdict_and_interval_always_agree() -> None:
    df = frame(const=CONSTANT, good=GOOD, bad=["neutral"] * 4 + LABELS[4:])
    for a, b in (("good · m/one", "const · m/one"), ("const · m/one", "bad · m/one")):
        r = paired_comparison(df, a, b)
        assert significant(r) == (r.ci_low > 0 or r.ci_high < 0)
        words = verdict(r)
        if significant(r):
            assert "is better than" in words and "excludes 0" in words
        else:
            assert words.startswith("no significant difference") and "includes 0" in words
    for row in pairwise_comparisons(df).to_dict("records"):
        assert significant(row) == (row["ci_low"] > 0 or row["ci_high"] < 0)

    class WithFlag:  # once the comparison carries its own flag, that flag is the verdict
        significant = True
        ci_low, ci_high = -0.1, 0.2

    assert significant(WithFlag())


def test_answers_another_model_gave_are_flagged() -> None:
    rows = [
        _row(i, "p", LABELS[i], model="openai/gpt-4o-2024-08-06", model_id="openai/mini")
        for i in range(4)
    ] + [_row(i, "p", LABELS[i], model="openai/mini") for i in range(4)]
    df = _df(rows)
    flags = answered_by_other(df)
    assert flags.tolist() == [True] * 4 + [False] * 4
    t = failure_modes(df).table.set_index("variant")
    big = t.loc["p · openai/gpt-4o-2024-08-06"]
    assert big["other_model_rows"] == 4 and big["answered_by"] == "openai/mini (4)"
    assert "a fallback answered" in " ".join(big["warnings"]) and not big["degenerate"]


# ---------------------------------------------------------------------- the format example


def test_instructions_fit_the_users_answer_instead_of_contradicting_it() -> None:
    text = json_instructions(SCHEMA)
    assert "Whatever the task above asks you to answer (a word, a label, a number)" in text
    assert "placeholder values" not in text
    shape = text.splitlines()[-1]
    assert shape == format_line(SCHEMA)
    assert '<"positive" or "negative" or "neutral">' in shape
    assert "0.9" not in text and '"sentiment": "positive"' not in text
    assert not parse(shape, SCHEMA).clean  # the shape is not itself a valid answer


def test_replies_copying_the_format_example_are_recognised() -> None:
    assert copies_example(format_line(SCHEMA), SCHEMA)
    assert copies_example('{"sentiment": <your confidence, 0 to 1>}', SCHEMA)
    # real answers are never copies, even one that equals the old example object
    old = legacy_example(SCHEMA)
    assert old == {"sentiment": "positive", "sentiment_confidence": 0.9}
    assert not copies_example(json.dumps(old), SCHEMA)
    assert copies_example(json.dumps(old), SCHEMA, legacy=True)  # asked for, for old runs
    assert not copies_example('{"sentiment": "negative", "sentiment_confidence": 0.9}', SCHEMA)
    assert not copies_example("Sentiment: positive", SCHEMA)
    assert not copies_example("anything", None) and not copies_example(None, SCHEMA)


def test_a_variant_that_parrots_the_example_is_degenerate() -> None:
    rows = []
    for i in range(10):
        parrot = i % 2 == 0
        out = format_line(SCHEMA) if parrot else None
        rows.append(_row(i, "p", LABELS[i], **({"output": out} if out else {})))
    res = Results(_df(rows), meta={"schema": SCHEMA})
    t = res.failure_modes().table.iloc[0]
    assert t["parrot_rows"] == 5
    assert any("copy the format example in 5 of 10" in w for w in t["reasons"])
    right = Results(
        _df([_row(i, "p", LABELS[i], conf=0.9) for i in range(10)]), meta={"schema": SCHEMA}
    )
    assert right.failure_modes().table.iloc[0]["parrot_rows"] == 0


def test_money_is_readable_when_tiny_or_zero() -> None:
    from labkit.usage import money

    assert money(0) == "free" and money(float("nan")) == "n/a"
    assert money(0.00012) == "$0.00012" and money(12.5) == "$12.50"
    assert not math.isnan(float(money(0.5)[1:]))


def test_money_keeps_two_significant_digits_without_exponents() -> None:
    from labkit.usage import money

    assert money(5.2e-05) == "$0.000052" and money(0.0041) == "$0.0041"
    assert money(3e-9) == "$3.0e-09"


def test_verdict_states_the_winners_margin_as_a_positive_interval() -> None:
    df = frame(const=CONSTANT, good=GOOD)
    r = paired_comparison(df, "const · m/one", "good · m/one")
    words = verdict(r)
    if significant(r):  # the winner's margin reads as positive numbers, winner first
        assert words.startswith("good · m/one is better than const · m/one by 40 points")
        assert "95% CI -" not in words
    else:  # (with a more conservative interval method) the same 40 points, undecided
        assert words.startswith("no significant difference") and "-40 points" in words
