"""Context measurement: counting, fit checks, chunking with overlap, merging chunk answers."""

from __future__ import annotations

import itertools
import random
import re
import sys
import types
from typing import Any

import pytest

from labkit.chunking import Chunk, chunk_text, merge_structured
from labkit.context import (
    OutputLimitExceeded,
    check_fit,
    count_tokens,
    estimate_tokens,
    require_fit,
)
from labkit.errors import ContextOverflow, InputError
from labkit.types import EventKind

MSGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Extract the names from: Ann met Bob in Paris."},
]

# ----------------------------------------------------------------------------------- counting


def test_estimate_is_chars_over_four_plus_chat_framing() -> None:
    chars = len("system") + len("You are terse.") + len("user") + len(MSGS[1]["content"])
    assert estimate_tokens(MSGS) == -(-chars // 4) + 2 * 4 + 3
    assert estimate_tokens([]) == 0


def test_estimate_reads_the_text_parts_of_multimodal_content() -> None:
    parts = [{"type": "text", "text": "abcd" * 5}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert estimate_tokens([{"role": "user", "content": parts}]) == 1 + 5 + 4 + 3


def test_a_backend_counter_wins() -> None:
    assert count_tokens("local/smollm2", MSGS, counter=lambda m: 42 if m is MSGS else 0) == 42


def _fake_backend_module(
    monkeypatch: pytest.MonkeyPatch, token_counter: Any, utils: Any = None
) -> None:
    """Stand-in for labkit.backends.litellm_backend, so these tests never import litellm."""
    fake = types.SimpleNamespace(token_counter=token_counter, utils=utils)
    module = types.ModuleType("labkit.backends.litellm_backend")
    module.import_litellm = lambda: fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "labkit.backends.litellm_backend", module)


def test_ids_litellm_would_download_a_tokenizer_for_are_counted_with_tiktoken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []

    def counter(**kw: Any) -> int:
        seen.append(kw)
        return 5

    utils = types.SimpleNamespace(
        huggingface_tokenizer_kind=lambda m: "llama3" if "llama-3" in m else None,
        get_default_encoding=lambda: "cl100k",
    )
    _fake_backend_module(monkeypatch, counter, utils)
    assert count_tokens("groq/llama-3-70b", MSGS) == 5
    assert count_tokens("openai/gpt-x", MSGS) == 5
    assert seen[0]["custom_tokenizer"] == {"type": "openai_tokenizer", "tokenizer": "cl100k"}
    assert "custom_tokenizer" not in seen[1]


def test_a_counter_that_cannot_count_falls_through_to_litellm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_backend_module(monkeypatch, lambda **kw: 17)
    assert count_tokens("openai/gpt-x", MSGS, counter=lambda m: None) == 17


def test_without_litellm_the_estimate_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "labkit.backends.litellm_backend", None)
    assert count_tokens("openai/gpt-x", MSGS) == estimate_tokens(MSGS)


def test_when_litellm_cannot_count_the_estimate_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kw: Any) -> int:
        raise ValueError("unknown model")

    _fake_backend_module(monkeypatch, refuse)
    assert count_tokens("mystery/model", MSGS) == estimate_tokens(MSGS)


@pytest.mark.slow  # imports litellm (seconds on a cold start)
def test_litellm_counts_openai_and_llama_ids_without_downloading() -> None:
    pytest.importorskip("litellm")
    openai = count_tokens("openai/gpt-4o-mini-2024-07-18", MSGS)
    assert 15 <= openai <= 40  # tiktoken's count, not the estimate's framing-heavy one
    # A Llama id would make litellm fetch a tokenizer from the Hub; offline that stalls for
    # seconds, so tiktoken stands in and the count equals the generic one.
    assert count_tokens("openrouter/meta-llama/llama-3-8b-instruct", MSGS) == count_tokens(
        "some/model", MSGS
    )


# ------------------------------------------------------------------------------------ fitting


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "window", "max_out", "fits", "near", "reason", "used"),
    [
        (100, 100, 1000, 4096, True, False, None, 0.2),
        (850, 50, 1000, 4096, True, True, None, 0.9),
        (900, 100, 1000, 4096, True, True, None, 1.0),  # exactly full still fits
        (950, 100, 1000, 4096, False, False, "context", 1.05),
        (10, 5000, 128000, 4096, False, False, "output", 5010 / 128000),
        (950, None, 1000, 4096, True, True, None, 0.95),  # provider default reserves nothing
        (10**6, 100, None, None, True, False, None, None),  # unknown limits
    ],
)
def test_check_fit(
    prompt: int,
    max_tokens: int | None,
    window: int | None,
    max_out: int | None,
    fits: bool,
    near: bool,
    reason: str | None,
    used: float | None,
) -> None:
    fit = check_fit("m", prompt, max_tokens, window, max_out)
    assert (fit.fits, fit.near_limit, fit.reason) == (fits, near, reason)
    assert fit.used == (pytest.approx(used) if used is not None else None)


def test_warn_ratio_is_configurable_and_validated() -> None:
    assert check_fit("m", 500, 0, 1000, None, warn_ratio=0.5).near_limit
    with pytest.raises(InputError):
        check_fit("m", 1, 1, 10, None, warn_ratio=0)


def test_require_fit_raises_context_overflow_with_its_numbers() -> None:
    with pytest.raises(ContextOverflow) as info:
        require_fit("prov/m", 950, 100, 1000, 4096)
    err = info.value
    assert (err.model, err.tokens, err.max_tokens, err.limit) == ("prov/m", 950, 100, 1000)
    assert not isinstance(err, OutputLimitExceeded)


def test_output_limit_misfit_is_a_context_overflow_naming_the_output_limit() -> None:
    with pytest.raises(ContextOverflow) as info:
        require_fit("prov/m", 10, 5000, 128000, 4096)
    err = info.value
    assert isinstance(err, OutputLimitExceeded)
    assert (err.tokens, err.max_tokens, err.limit) == (10, 5000, 4096)
    assert "4096-token output limit" in str(err) and "context window" not in str(err)


def test_require_fit_returns_the_fit_and_its_event() -> None:
    assert require_fit("m", 10, 10, 1000, None).event() is None
    fit = require_fit("m", 900, 10, 1000, None)
    event = fit.event()
    assert event is not None and event.kind == EventKind.CONTEXT and event.model == "m"
    assert event.detail["near_limit"] and event.detail["context_window"] == 1000


# ----------------------------------------------------------------------------------- chunking


def _detok(ids: list[int]) -> str:
    return " ".join(f"t{i}" for i in ids)


@pytest.mark.parametrize(
    ("n", "max_tokens", "overlap"),
    [(0, 5, 1), (3, 5, 1), (5, 5, 2), (6, 5, 0), (23, 5, 2), (100, 10, 9), (101, 7, 3)],
)
def test_token_chunks_share_exactly_the_overlap_and_cover_everything(
    n: int, max_tokens: int, overlap: int
) -> None:
    ids = list(range(n))
    chunks = chunk_text("ignored", max_tokens, overlap, tokenize=lambda s: ids, detokenize=_detok)
    if n == 0:
        assert chunks == []
        return
    assert chunks[0].start == 0 and chunks[-1].end == n
    for prev, nxt in itertools.pairwise(chunks):
        assert prev.end - nxt.start == overlap
    covered = {i for c in chunks for i in range(c.start, c.end)}
    assert covered == set(ids)
    for i, c in enumerate(chunks):
        assert (c.index, c.total, c.unit, c.estimated) == (i, len(chunks), "token", False)
        assert c.tokens == c.end - c.start <= max_tokens
        assert c.text == _detok(ids[c.start : c.end])


def test_word_chunks_keep_the_source_text_and_overlap_by_whole_words() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    chunks = chunk_text(text, 4, 1)
    assert [c.text for c in chunks][:3] == ["alpha beta", "beta gamma", "gamma delta"]
    assert chunks[-1].text.endswith("mu")
    for c in chunks:
        assert c.text == text[c.start : c.end] and c.unit == "char" and c.estimated
        assert c.tokens <= 4


def test_word_chunks_without_overlap_partition_the_words() -> None:
    text = "one two three four five six seven eight nine ten"
    chunks = chunk_text(text, 3, 0)
    assert " ".join(c.text for c in chunks) == text


def test_word_chunks_keep_newlines_and_spacing_inside_a_chunk() -> None:
    text = "Title\n\nFirst  line.\nSecond line."
    (chunk,) = chunk_text(text, 100, 10)
    assert chunk.text == text


def test_a_word_longer_than_a_chunk_is_cut_into_pieces() -> None:
    blob = "x" * 100
    chunks = chunk_text(f"see {blob} end", 5, 0)  # a piece holds 5 tokens * 4 chars
    assert [len(c.text) for c in chunks if "x" in c.text and " " not in c.text] == [20] * 5
    assert "".join(re.sub(r"[^x]", "", c.text) for c in chunks) == blob


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, 10, 2) == []


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "kwargs"),
    [
        (0, 0, {}),
        (5, 5, {}),
        (5, 7, {}),
        (5, -1, {}),
        (5, 1, {"tokenize": lambda s: [1]}),
        (5, 1, {"detokenize": _detok}),
    ],
)
def test_bad_chunking_arguments_are_rejected(
    max_tokens: int, overlap: int, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InputError):
        chunk_text("some text", max_tokens, overlap, **kwargs)


def test_word_chunking_invariants_on_random_texts() -> None:
    rng = random.Random(3)
    vocab = ["a", "to", "the", "model", "international", "https://example.org/" + "q" * 60, "x" * 9]
    for _ in range(200):
        words = [rng.choice(vocab) for _ in range(rng.randint(1, 60))]
        text = "".join(w + rng.choice([" ", "  ", "\n", "\t"]) for w in words)
        max_tokens = rng.randint(1, 30)
        overlap = rng.randint(0, max_tokens - 1)
        chunks = chunk_text(text, max_tokens, overlap)
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        assert _covers(chunks, spans), (text, max_tokens, overlap)
        starts = [c.start for c in chunks]
        assert starts == sorted(set(starts))  # always moves forward
        for c in chunks:
            assert c.text == text[c.start : c.end] and c.text == c.text.strip()
            assert c.tokens <= max_tokens
        for prev, nxt in itertools.pairwise(chunks):
            shared = text[nxt.start : prev.end]
            assert nxt.start <= prev.end or not shared.strip()
            if overlap == 0:
                assert nxt.start >= prev.end


def _covers(chunks: list[Chunk], spans: list[tuple[int, int]]) -> bool:
    return all(
        any(c.start <= a and b <= c.end for c in chunks) or _split(chunks, a, b) for a, b in spans
    )


def _split(chunks: list[Chunk], a: int, b: int) -> bool:
    """A long word cut into pieces is covered when its characters all are."""
    return all(any(c.start <= i < c.end for c in chunks) for i in range(a, b))


# ------------------------------------------------------------------------------------ merging


def test_lists_are_concatenated_in_order_and_deduplicated() -> None:
    values: list[dict[str, Any]] = [
        {"names": ["Ann", "Bob"], "tags": [{"k": 1}]},
        {"names": ["  ann ", "Cy"], "tags": [{"k": 1}, {"k": 2}]},
    ]
    merged, conf = merge_structured(values, [{"names": 0.6}, {"names": 0.9, "tags": 0.4}])
    assert merged == {"names": ["Ann", "Bob", "Cy"], "tags": [{"k": 1}, {"k": 2}]}
    assert conf == {"names": 0.9, "tags": 0.4}


def test_scalars_come_from_the_most_confident_chunk_earliest_on_a_tie() -> None:
    values: list[dict[str, Any]] = [
        {"city": "Paris", "year": 1999},
        {"city": "Lyon", "year": 2001},
        {"city": "Nice"},
    ]
    confs = [{"city": 0.4, "year": 0.7}, {"city": 0.8, "year": 0.7}, {"city": 0.8}]
    merged, conf = merge_structured(values, confs)
    assert merged == {"city": "Lyon", "year": 1999}
    assert conf == {"city": 0.8, "year": 0.7}


def test_a_missing_value_never_beats_a_found_one() -> None:
    values: list[dict[str, Any]] = [{"city": None, "zip": "75001"}, {"city": "Paris"}]
    merged, conf = merge_structured(values, [{"city": 0.99, "zip": 0.5}, {"city": 0.1}])
    assert merged == {"city": "Paris", "zip": "75001"} and conf["city"] == 0.1


def test_a_field_no_chunk_found_stays_none() -> None:
    merged, conf = merge_structured([{"x": None}, {"x": None}], [])
    assert merged == {"x": None} and conf == {}


def test_nested_objects_merge_field_by_field_with_dotted_confidences() -> None:
    values: list[dict[str, Any]] = [
        {"address": {"city": "Paris", "street": None}, "who": "Ann"},
        {"address": {"city": "Lyon", "street": "Rue X"}},
    ]
    confs = [{"address.city": 0.9, "address": 0.5, "who": 0.7}, {"address": 0.6}]
    merged, conf = merge_structured(values, confs)
    assert merged == {"address": {"city": "Paris", "street": "Rue X"}, "who": "Ann"}
    assert conf == {"address": 0.6, "address.city": 0.9, "who": 0.7}


def test_without_confidences_the_first_found_value_wins() -> None:
    merged, conf = merge_structured([{"a": 1}, {"a": 2, "b": [1]}], [])
    assert merged == {"a": 1, "b": [1]} and conf == {"a": 0.0, "b": 0.0}


def test_mixed_shapes_fall_back_to_the_scalar_rule() -> None:
    merged, _ = merge_structured([{"a": ["x"]}, {"a": "y"}], [{"a": 0.2}, {"a": 0.3}])
    assert merged == {"a": "y"}


def test_merge_checks_it_has_one_confidence_dict_per_value() -> None:
    with pytest.raises(InputError):
        merge_structured([{"a": 1}, {"a": 2}], [{"a": 1.0}])
    assert merge_structured([], []) == ({}, {})


def test_upper_bound_is_never_below_a_real_tokenizer_count() -> None:
    """The fast path skips exact counting only when this bound fits; it must be a true bound."""
    from labkit.context import count_tokens, token_upper_bound

    samples = [
        [{"role": "user", "content": "Plain English words, nothing odd."}],
        [{"role": "system", "content": "Réponds en français : naïve café"}, {"role": "user", "content": "日本語のテキスト 🎉🎉"}],
        [{"role": "user", "content": "x" * 5000 + " 1234567890" * 50}],
    ]  # fmt: skip
    for messages in samples:
        bound = token_upper_bound(messages)
        assert bound is not None
        assert bound >= count_tokens("openai/gpt-4o-mini-2024-07-18", messages)
    assert token_upper_bound([{"role": "user", "content": [{"type": "image_url"}]}]) is None
