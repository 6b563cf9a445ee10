"""The embedded SmolLM2 model for real, in its worker process, through the whole call path."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.client import Client

pytestmark = pytest.mark.local_model


def test_free_text_generation(local_client: Client) -> None:
    done = local_client.generate("Name one colour.", model="local/smollm2-135m", max_tokens=16)
    assert done.text.strip()
    assert done.model == "local/smollm2-135m" and done.cost_usd == 0.0
    assert done.usage.prompt_tokens > 5 and 0 < done.usage.completion_tokens <= 16
    assert done.ttft_s is not None and 0 < done.ttft_s <= done.latency_s
    row = local_client.traces(call_id=done.trace_id).iloc[0]
    assert row["context_tokens"] > 0 and row["context_limit"] == 8192


def test_json_mode_is_grammar_constrained(local_client: Client) -> None:
    done = local_client.generate(
        'Return a JSON object with a key "colour" naming a colour.',
        model="local/smollm2-135m-json",
        max_tokens=40,
    )
    assert isinstance(json.loads(done.text), dict)


def test_concurrent_calls_are_safe(local_client: Client) -> None:
    async def main() -> list[str]:
        outs = await asyncio.gather(
            *(
                local_client.agenerate(f"Count to {i}.", model="local/smollm2-135m", max_tokens=8)
                for i in range(2, 6)
            )
        )
        return [o.text for o in outs]

    texts = asyncio.run(main())
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)


def test_cache_hit_imports_neither_litellm_nor_llama(tmp_path: Path) -> None:
    script = f"""
import sys, labkit
from labkit.client import Client
from labkit.models import Registry
c = Client(registry=Registry(), cache_dir={str(tmp_path / "c")!r}, traces={str(tmp_path / "t.db")!r})
done = c.generate("Say yes.", model="local/smollm2-135m", max_tokens=4)
print(done.cache_hit, 'llama_cpp' in sys.modules, 'litellm' in sys.modules)
"""
    first = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    # The model runs in a worker process, reached by the lean OpenAI-compatible transport: the
    # caller loads neither llama.cpp nor litellm.
    assert first.stdout.split() == ["False", "False", "False"]
    second = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert second.stdout.split() == ["True", "False", "False"]
