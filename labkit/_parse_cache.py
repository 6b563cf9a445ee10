"""Parse results cached inside the answers they were parsed from.

A cached grid re-run spent a fifth of its time re-parsing replies it had parsed before. The
parse result is stored as JSON (never pickle) in the answer's own cache entry, as its `parsed`
field: `{"print": ..., "result": ...}`, where the print fingerprints what the result depends on
besides the reply (the schema, the parser's version and labkit's). Kept in the same entry, it
is written and replaced together with the reply it was parsed from, and read in the same look-up.
Anything that would not come back identical through JSON is not stored.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import TypeAdapter

from ._version import __version__
from .structured import Parsed
from .structured.schema import normalise
from .types import Completion

__all__ = ["PARSE_CACHE_VERSION", "parse_print", "parse_record", "stored_parse"]

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


def parse_record(done: Completion, fingerprint: str) -> str | None:
    """The parse result of `done` as the JSON text its cache entry keeps in `parsed`; None
    when it would not come back identical (NaN, a lone surrogate, a value that is not plain
    JSON). Checked by reading it back as `stored_parse` will: pydantic's JSON reader (as for
    the entry's loosely typed `parsed` field), then validation."""
    parsed = done.parsed
    if parsed is None:
        return None
    try:
        data = parsed.model_dump_json()
        if type(parsed).model_validate(_PLAIN.validate_json(data)) != parsed:
            return None
    except Exception:
        return None
    return f'{{"print":"{fingerprint}","result":{data}}}'


def stored_parse(stored: Any, fingerprint: str | None) -> Any:
    """The parse result a cache entry kept (its `parsed` field, read as plain JSON data),
    validated as a `Parsed`; None when there is none or it was made for another schema or
    parser version."""
    if fingerprint is None or type(stored) is not dict or stored.get("print") != fingerprint:
        return None
    try:
        return Parsed.model_validate(stored.get("result"))
    except Exception:
        return None


_PLAIN: TypeAdapter[Any] = TypeAdapter(Any)
