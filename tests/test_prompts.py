from __future__ import annotations

import pytest

from labkit.errors import MessagesError, TemplateError
from labkit.prompts import build_messages, render, template_variables


def test_template_variables_ignores_json_braces() -> None:
    tpl = 'Classify {{ text }} as {"sentiment": "..."} for {{product}}'
    assert template_variables(tpl) == {"text", "product"}
    assert render(tpl, {"text": "great", "product": "kettle"}) == (
        'Classify great as {"sentiment": "..."} for kettle'
    )


def test_missing_variables_are_all_named() -> None:
    with pytest.raises(TemplateError) as err:
        render("{{a}} {{b}} {{c}}", {"b": 1})
    assert err.value.missing == ["a", "c"]
    assert "variables={" in str(err.value)


@pytest.mark.parametrize(
    ("messages", "index", "fragment"),
    [
        ([], None, "non-empty list"),
        ("hello", None, "non-empty list"),
        ([{"role": "user", "content": "hi"}, "oops"], 1, "expected a dict"),
        ([{"role": "robot", "content": "hi"}], 0, "role 'robot'"),
        ([{"role": "user", "content": 3}], 0, "content must be a string"),
    ],
)
def test_malformed_messages(messages: object, index: int | None, fragment: str) -> None:
    with pytest.raises(MessagesError) as err:
        build_messages(messages=messages)  # type: ignore[arg-type]
    assert err.value.index == index
    assert fragment in str(err.value)


def test_exactly_one_way_of_asking() -> None:
    with pytest.raises(MessagesError, match="exactly one"):
        build_messages("hi", template="{{x}}")
    assert build_messages("hi", system="be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
