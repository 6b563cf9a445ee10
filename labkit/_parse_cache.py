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

from ._version import __version__
from .structured import Parsed, Repair
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
    when it would not come back identical: a NaN or infinity, a tuple, a key that is not a
    string, any value that is not plain JSON, or a lone surrogate (pydantic will not write it).
    Checked by walking the result: a tenth of the cost of writing it, reading it back and
    comparing, which the walk replaces."""
    parsed = done.parsed
    if type(parsed) is not Parsed:
        return None
    fields = parsed.__dict__
    if not all(type(r) is Repair and _exact(r.__dict__) for r in fields["repairs"]):
        return None
    if not all(_exact(v) for k, v in fields.items() if k != "repairs"):
        return None
    try:
        data = parsed.model_dump_json()
    except Exception:
        return None
    return f'{{"print":"{fingerprint}","result":{data}}}'


def _exact(obj: Any) -> bool:
    """Whether JSON gives `obj` back equal: dicts with string keys, lists, strings, ints,
    bools, None and finite floats, nothing else."""
    kind = type(obj)
    if kind is str or kind is int or kind is bool or obj is None:
        return True
    if kind is float:
        return obj - obj == 0.0  # NaN and the infinities give NaN
    if kind is dict:
        return all(type(k) is str and _exact(v) for k, v in obj.items())
    if kind is list:
        return all(map(_exact, obj))
    return False


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
