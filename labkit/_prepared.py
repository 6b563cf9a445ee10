"""`Prepared`: one call worked out before any I/O, by `Client.prepare`.

A grid prepares its cells in bulk and keeps them: a re-run reuses each call (`renew`) while
everything it came from is unchanged, and reads its cache entries ahead in one query
(`Client.prefetch` fills `found`, and keeps in `decoded` what the entry decoded to).
"""

from __future__ import annotations

from typing import Any

from .models import Resolution
from .tracing import new_id
from .types import Completion, Message

__all__ = ["Prepared"]


class Prepared:
    """Everything known before any I/O: what to ask, of which model, under which cache key."""

    __slots__ = (
        "call_id",
        "decoded",
        "found",
        "json_schema",
        "key",
        "messages",
        "meta",
        "params",
        "parse_print",
        "resolution",
        "sample",
        "schema",
        "transport",
    )

    def __init__(self, **kw: Any) -> None:
        self.found: tuple[Completion | None] | None = None
        self.decoded: list[tuple[str, Completion] | None] = [None]
        self.parse_print: str | None = None
        for k, v in kw.items():
            setattr(self, k, v)

    def renew(self) -> Prepared:
        """The same call prepared again, for another run: a new call id, nothing fetched yet.
        What it shares with this one (messages, params, meta) is never changed in place, but
        for `decoded`, whose one item is replaced whole."""
        twin = Prepared.__new__(Prepared)
        for name in _SHARED:
            setattr(twin, name, getattr(self, name))
        twin.call_id, twin.found = new_id(), None
        return twin

    call_id: str
    messages: list[Message]
    params: dict[str, Any]
    transport: dict[str, Any]
    schema: Any
    json_schema: dict[str, Any] | None
    resolution: Resolution
    sample: int
    key: str
    meta: dict[str, Any]
    found: tuple[Completion | None] | None
    """(entry or None,) fetched ahead by `Client.prefetch`; None: not fetched yet."""
    decoded: list[tuple[str, Completion] | None]
    """[(entry text, what it decoded to)] of the last hit `Client.prefetch` read for this call
    or its twins (`renew`), kept unmodified; [None] before any."""
    parse_print: str | None
    """The fingerprint its cached parse record must carry (None: not cacheable, see
    `_parse_cache`)."""


_SHARED = tuple(n for n in Prepared.__slots__ if n not in ("call_id", "found"))
