"""Structured output: a reply's JSON found, repaired and validated against a schema, with
per-field confidence, and the prompt side that asks for it.

    extract.py       parse(text, schema) -> Parsed: candidates, repair, validation, confidence
    repair.py        the lenient JSON decoder (fences, prose, trailing commas, quotes)
    schema.py        pydantic model or dict -> JSON Schema; the guide that coerces to it
    instructions.py  the format instructions and response_format a request carries

Pure functions of text and schema: no model calls, no I/O. That is why this stage sits below
the client (which parses every structured reply) rather than above it.
"""

from .extract import MAX_TEXT, Parsed, Repair, parse
from .instructions import copies_example, format_line, json_instructions, response_format
from .repair import MAX_DEPTH, MAX_LENIENT, MAX_SPAN
from .schema import SchemaLike, to_json_schema

__all__ = [
    "MAX_DEPTH",
    "MAX_LENIENT",
    "MAX_SPAN",
    "MAX_TEXT",
    "Parsed",
    "Repair",
    "SchemaLike",
    "copies_example",
    "format_line",
    "json_instructions",
    "parse",
    "response_format",
    "to_json_schema",
]
