"""map_chunks: split, one call per chunk through the call path, merge, one parent trace."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pandas as pd
import pytest
from conftest import ClientFactory
from pydantic import BaseModel

from labkit.chunking import CHUNK_MARGIN_TOKENS, amap_chunks, map_chunks
from labkit.client import Client
from labkit.errors import BadRequest, InputError
from labkit.models import Registry
from labkit.testing import FakeBackend, provider_error
from labkit.types import Request

M = "fake/doc-1"
TEMPLATE = "List the tags in: {{document}}"
WORDS = " ".join(f"w{i}" for i in range(300))  # 300 words of one estimated token each


def echo(request: Request) -> str:
    """Answers with the first and last word of the chunk it was given."""
    chunk = str(request.messages[-1]["content"]).split(": ", 1)[1].split()
    return f"{chunk[0]}..{chunk[-1]}"


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend([echo], cycle=True)


@pytest.fixture
def client(client_factory: ClientFactory, fake: FakeBackend) -> Client:
    reg = Registry(
        models={M: {"context_window": 300, "max_output_tokens": 100}, "fake/doc-2": {}},
        aliases={"ab": {"default": {M: 1, "fake/doc-2": 1}}},
    )
    return client_factory(registry=reg, backends={"fake": fake})


def parent_row(client: Client, parent_id: str) -> pd.Series:
    rows = client.traces(kind="parent", call_id=parent_id)
    assert len(rows) == 1
    return rows.iloc[0]


# --------------------------------------------------------------------------------- the map


def test_chunks_go_through_the_call_path_in_order_under_one_parent(
    client: Client, fake: FakeBackend
) -> None:
    out = map_chunks(WORDS, template=TEMPLATE, model=M, client=client, chunk_tokens=100, overlap=10)
    n = len(out.chunks)
    assert n == 4 and len(fake.history) == n and out.ok
    assert [c.index for c in out.chunks] == list(range(n))
    # each chunk ends 10 words past where the next one starts
    assert out.value == [f"{c.text.split()[0]}..{c.text.split()[-1]}" for c in out.chunks]
    assert out.value[0] == "w0..w99" and out.value[1] == "w90..w189"
    assert out.value[-1].endswith("..w299")
    assert all(c.text in p for c, p in zip(out.chunks, fake.prompts, strict=True))

    attempts = client.traces(kind="attempt")
    assert len(attempts) == n and set(attempts["parent_id"]) == {out.parent_id}
    done = [c for c in out.completions if c is not None]
    assert set(attempts["call_id"]) == {c.trace_id for c in done}
    parent = parent_row(client, out.parent_id)
    assert (parent["status"], parent["model"], parent["meta"]["chunks"]) == ("ok", M, n)
    assert parent["meta"]["chunk_calls"] == [c.trace_id for c in done]
    assert parent["meta"]["tokenizer"] == "estimate"  # FakeBackend has no tokenizer
    assert json.loads(parent["response"]) == out.value
    assert out.totals.prompt_tokens == sum(c.usage.prompt_tokens for c in done) > 0
    assert parent["prompt_tokens"] == out.totals.prompt_tokens
    assert out.totals.tokens == out.totals.prompt_tokens + out.totals.completion_tokens


def test_the_default_chunk_size_fills_the_window_beside_template_and_reply(
    client: Client, fake: FakeBackend
) -> None:
    out = map_chunks(WORDS * 2, template=TEMPLATE, model=M, client=client, max_tokens=40)
    sizing = parent_row(client, out.parent_id)["meta"]
    template_tokens = 5  # FakeBackend counts words: "List the tags in: {{document}}"
    expected = 300 - template_tokens - 40 - CHUNK_MARGIN_TOKENS
    assert (sizing["template_tokens"], sizing["reply_tokens"]) == (template_tokens, 40)
    assert sizing["chunk_tokens"] == expected and sizing["window"] == 300
    assert sizing["overlap"] == expected // 4  # the default overlap, capped for small chunks
    # 600 one-token words in chunks of 239 sharing 59: starts 0, 180, 360, 540
    assert [c.tokens for c in out.chunks] == [expected, expected, expected, 60]
    # every chunk passed the call path's own fit check, none was refused
    assert client.traces(kind="attempt")["error_type"].isna().all()
    assert all(r.params["max_tokens"] == 40 for r in fake.history)


def test_chunk_number_and_count_can_be_used_in_the_template(
    client: Client, fake: FakeBackend
) -> None:
    template = "Part {{chunk_number}} of {{chunk_count}} ({{topic}}): {{document}}"
    map_chunks(
        WORDS, template=template, model=M, client=client, chunk_tokens=150, overlap=0,
        variables={"topic": "tags"},
    )  # fmt: skip
    assert [p.split(":")[0] for p in fake.prompts] == ["Part 1 of 2 (tags)", "Part 2 of 2 (tags)"]


class Extract(BaseModel):
    people: list[str]
    city: str | None = None


def test_structured_answers_merge_lists_and_keep_the_most_confident_value(
    client: Client,
) -> None:
    replies = iter(
        [
            {"people": ["Ann", "Bo"], "city": "Oslo", "city_confidence": 0.4},
            {"people": ["bo", "Cy"], "city": "Bergen", "city_confidence": 0.9},
            {"people": [], "city": None},
        ]
    )
    client.add_backend("fake", FakeBackend([lambda r: json.dumps(next(replies))] * 3))
    out = map_chunks(
        WORDS, template=TEMPLATE, model=M, client=client, schema=Extract,
        chunk_tokens=100, overlap=0, concurrency=1,
    )  # fmt: skip
    assert len(out.chunks) == 3
    assert out.value == {"people": ["Ann", "Bo", "Cy"], "city": "Bergen"}
    assert out.confidences["city"] == 0.9 and out.unparsed == []
    parent = parent_row(client, out.parent_id)
    assert bool(parent["parse_ok"]) and json.loads(parent["response"]) == out.value


def test_a_reply_with_no_object_is_left_out_of_the_merge_and_reported(client: Client) -> None:
    replies = iter(['{"people": ["Ann"]}', "I cannot help with that.", '{"people": ["Cy"]}'])
    client.add_backend("fake", FakeBackend([lambda r: next(replies)] * 3))
    out = map_chunks(
        WORDS, template=TEMPLATE, model=M, client=client, schema={"people": list},
        chunk_tokens=100, overlap=0, concurrency=1,
    )  # fmt: skip
    assert out.value["people"] == ["Ann", "Cy"]
    assert out.unparsed == [1] and out.ok
    parent = parent_row(client, out.parent_id)
    assert parent["parse_ok"] is not None and not parent["parse_ok"]
    assert parent["meta"]["unparsed"] == [1]


# --------------------------------------------------------------------------------- failures


def failing_second(request: Request) -> str:
    if "w100" in str(request.messages[-1]["content"]).split():
        raise provider_error(400)
    return echo(request)


def test_a_failed_chunk_is_raised_with_the_parent_traced_and_the_rest_kept(
    client: Client,
) -> None:
    client.add_backend("fake", FakeBackend([failing_second], cycle=True))
    with pytest.raises(BadRequest) as info:
        map_chunks(WORDS, template=TEMPLATE, model=M, client=client, chunk_tokens=100, overlap=0)
    note = " ".join(getattr(info.value, "__notes__", []))
    assert "chunk 2 of 3 failed" in note
    parent_id = re.search(r"parent_id=(\w+)", note)
    assert parent_id is not None
    parent = parent_row(client, parent_id.group(1))
    assert (parent["status"], parent["error_type"]) == ("error", "BadRequest")
    assert parent["meta"]["failed"] == [1]
    ok = client.traces(kind="attempt", status="ok")
    assert len(ok) == 2 and set(ok["parent_id"]) == {parent_id.group(1)}

    kept = map_chunks(
        WORDS, template=TEMPLATE, model=M, client=client, chunk_tokens=100, overlap=0,
        on_error="keep",
    )  # fmt: skip
    assert not kept.ok and list(kept.errors) == [1] and kept.completions[1] is None
    assert kept.value == ["w0..w99", "w200..w299"]
    assert kept.totals.cache_hits == 2  # the answered chunks came back from the cache


def test_a_rerun_is_served_from_the_cache_and_traced_again(
    client: Client, fake: FakeBackend
) -> None:
    first = map_chunks(WORDS, template=TEMPLATE, model=M, client=client, chunk_tokens=100)
    calls = len(fake.history)
    again = map_chunks(WORDS, template=TEMPLATE, model=M, client=client, chunk_tokens=100)
    assert len(fake.history) == calls and again.value == first.value
    assert again.totals.cache_hits == len(again.chunks)
    assert again.parent_id != first.parent_id
    hits = client.traces(kind="cache_hit")
    assert set(hits["parent_id"]) == {again.parent_id}
    assert bool(parent_row(client, again.parent_id)["cache_hit"])


def test_bad_arguments_are_refused_before_anything_is_sent(
    client: Client, fake: FakeBackend
) -> None:
    with pytest.raises(InputError, match=r"no \{\{document\}\} placeholder"):
        map_chunks(WORDS, template="Summarise: {{text}}", model=M, client=client)
    with pytest.raises(InputError, match="overlap=100"):
        map_chunks(WORDS, template=TEMPLATE, model=M, client=client, chunk_tokens=100, overlap=100)
    with pytest.raises(InputError, match="context window is unknown"):
        map_chunks(WORDS, template=TEMPLATE, model="fake/doc-2", client=client)
    with pytest.raises(InputError, match="leave no room"):
        map_chunks(WORDS, template=TEMPLATE, model=M, client=client, max_tokens=290)
    assert fake.history == []


def test_nesting_an_alias_and_the_async_form(client: Client, fake: FakeBackend) -> None:
    async def main() -> Any:  # a foreign loop: the chunk calls hop to the client's loop
        return await amap_chunks(
            WORDS, template=TEMPLATE, model="ab", client=client, chunk_tokens=60,
            parent_id="outer", item_id="doc-7",
        )  # fmt: skip

    out = asyncio.run(main())
    assert len({r.model for r in fake.history}) == 1  # one A/B arm for the whole document
    parent = parent_row(client, out.parent_id)
    assert (parent["parent_id"], parent["item_id"], parent["alias"]) == ("outer", "doc-7", "ab")
    assert set(client.traces(kind="attempt")["item_id"]) == {"doc-7"}


def test_the_default_overlap_shrinks_for_small_chunks_and_an_explicit_one_is_kept(
    client: Client,
) -> None:
    small = map_chunks(WORDS, template=TEMPLATE, model=M, client=client, chunk_tokens=40)
    assert parent_row(client, small.parent_id)["meta"]["overlap"] == 10
    assert small.chunks[1].text.split()[0] == "w30"
    given = map_chunks(
        WORDS, template=TEMPLATE, model=M, client=client, chunk_tokens=40, overlap=20
    )
    assert given.chunks[1].text.split()[0] == "w20"


def test_an_empty_text_maps_to_nothing_but_is_still_traced(client: Client) -> None:
    out = map_chunks("  ", template=TEMPLATE, model=M, client=client, chunk_tokens=50)
    assert (out.value, out.chunks, out.completions) == ([], [], [])
    assert parent_row(client, out.parent_id)["meta"]["chunks"] == 0


# ----------------------------------------------------------------------------- local model


def test_the_local_model_chunks_by_its_own_tokenizer(local_client: Client) -> None:
    text = (
        "The harbour office opened at seven. Ships from Bergen unloaded fish and timber. "
        "Later the ferry to Oslo left half empty because of the storm warning. "
        "In the afternoon the mayor visited the new warehouse and praised the workers. "
        "By evening the wind had dropped and the fishing boats went out again."
    )
    out = map_chunks(
        text, template="Summarise in one sentence: {{document}}", client=local_client,
        model="local/smollm2-135m", chunk_tokens=48, overlap=8, max_tokens=24, temperature=0,
    )  # fmt: skip
    assert len(out.chunks) == 2 and {c.unit for c in out.chunks} == {"token"}
    assert all(not c.estimated and c.tokens <= 48 for c in out.chunks)
    assert out.chunks[1].start == out.chunks[0].end - 8
    assert all(isinstance(t, str) for t in out.value) and len(out.value) == 2
    parent = parent_row(local_client, out.parent_id)
    assert parent["meta"]["tokenizer"] == "model" and parent["status"] == "ok"
    linked = local_client.traces(kind="attempt", status="ok")
    linked = linked[linked["parent_id"] == out.parent_id]
    assert len(linked) == 2 and (linked["completion_tokens"] <= 24).all()
