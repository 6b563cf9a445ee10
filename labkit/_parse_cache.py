"""Parse results cached beside the answers they were parsed from.

A cached grid re-run spent a fifth of its time re-parsing replies it had parsed before. The
parse result is stored as JSON (never pickle) under the answer's key plus a fingerprint of
what the result depends on besides the reply: the schema, the parser's version and labkit's.
The entry also names the reply text it was made from (a hash), so an answer refreshed since is
parsed anew. Anything that would not come back identical through JSON is not stored.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from ._version import __version__
from .structured import Parsed
from .structured.schema import normalise
from .types import Completion

__all__ = ["PARSE_CACHE_VERSION", "parse_entry", "parse_print", "stored_parse"]

# Bump when the parser's output for the same text and schema may change: cached parse results
# made by an older parser are then ignored (the labkit version is in the fingerprint too).
PARSE_CACHE_VERSION = 1


def parse_print(schema: Any) -> str | None:
    """A fingerprint of everything a parse result depends on besides the text: the schema (as
    normalised JSON Schema), the parser's version and labkit's. None for a pydantic class:
    its validators are code, which no fingerprint of the schema sees, so it is parsed anew."""
    if isinstance(schema, type):
        return None
    try:
        blob = json.dumps(
            [PARSE_CACHE_VERSION, __version__, normalise(schema)],
            sort_keys=True,
            ensure_ascii=False,
        )
    except Exception:  # a schema that is not plain JSON: not cached
        return None
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _text_print(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def parse_entry(done: Completion) -> str | None:
    """The parse result as JSON text for the cache, tied to the exact reply text; None when
    JSON would not give back the same result (NaN, a lone surrogate, a value that is not plain
    JSON). Written and checked by pydantic: what `stored_parse` reads must equal the result."""
    parsed = done.parsed
    if parsed is None:
        return None
    try:
        data = parsed.model_dump_json()
        if type(parsed).model_validate_json(data) != parsed:
            return None
    except Exception:
        return None
    return f'{{"text":"{_text_print(done.text)}","parsed":{data}}}'


def stored_parse(stored: str | None, text: str) -> Any:
    """The cached parse result of `text`, validated as a `Parsed`; None when there is none or
    it was made for another text (the entry was refreshed since)."""
    if stored is None:
        return None
    try:  # one pass of pydantic's own JSON parser, not json.loads and then validation
        entry = _Entry.model_validate_json(stored)
    except Exception:
        return None
    return entry.parsed if entry.text == _text_print(text) else None


class _Entry(BaseModel):
    """A stored parse result: the reply text's fingerprint and the result."""

    text: str
    parsed: Parsed
