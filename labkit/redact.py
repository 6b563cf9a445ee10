"""PII and secret redaction, applied before anything is written to the trace store.

Built-in rules: e-mail addresses, phone numbers, payment card numbers (Luhn-checked, so order
numbers survive), API keys of the common providers, bearer tokens and `api_key=...` pairs.
Users add regex patterns or a callable; the callable runs last on the already-redacted text.

Secrets are stricter than PII: `scrub_secrets` removes the key values this process was
configured with (`add_secret`, fed by the registry's `api_key_env` variables and `api_key=`
arguments) and key-shaped tokens from any text. It runs inside every `Redactor` (even with
`builtin=False`), in the constructor of every labkit error, on replies and on error rows, so
a key reaches no trace, cache entry, results file, export, log or exception message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

__all__ = ["Redactor", "add_secret", "map_strings", "scrub_secrets"]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")
_KEYS = re.compile(
    r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}"  # OpenAI / Anthropic
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_-]{30,}"  # Google
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|hf_[A-Za-z0-9]{30,})"  # Hugging Face
)
_KEY_PAIR = re.compile(
    r"(?i)\b((?:api[_-]?key|secret|token|password|passwd)\s*[\"']?\s*[:=]\s*[\"']?)([^\s\"',;]{6,})"
)
# Card candidates: 13-19 digits with optional single spaces/dashes, standing alone (a digit
# run inside a hex trace id, hash or UUID is not a card); confirmed by Luhn. The pattern opens
# with the digit, and checks what precedes it after, so `re` skips non-digits quickly.
_CARD = re.compile(r"\d(?<![0-9A-Za-z-]\d)(?:[ -]?\d){12,18}(?![0-9A-Za-z-])")
# Phone numbers: international or North-American style, at least 9 digits overall, standing
# alone. Written as three branches by first character ("+", "(", a digit), each checking what
# precedes it after that character, which `re` scans much faster than a leading lookbehind.
_PHONE = re.compile(
    r"(?:\+(?<![\w-]\+)\d{1,3}[\s.-]?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])"
    r"|\((?<![\w-]\()\d{2,4}\)[\s.-]?"
    r"|\d(?<![\w-]\d)\d{1,3}[\s.-])"
    r"\d{3,4}[\s.-]?\d{3,4}(?![\w-])"
)
# What any card or phone match contains, as ASCII classes (`\d` is a slow Unicode lookup per
# character): a run of 13 digits, spaces and dashes opening with a digit, or of 9 phone
# characters. Checked first in ASCII text (most prompts), where the digit classes agree.
_CARD_SPAN = re.compile(r"[0-9][0-9 -]{12}")
_PHONE_SPAN = re.compile(r"[+(0-9][0-9\s.()+-]{8}")


# Cheap containment checks that must hold for a rule to match anywhere in a text: most texts
# (a grid's prompts) hold none, and running every pattern over them was most of a trace row's
# cost. Keywords are checked in the case-folded text, with the dotless i folded too, which
# covers every letter `(?i)` lets match ("İ", "ı", "ſ" and the Kelvin sign).
_KEY_PREFIXES = ("sk-", "AKIA", "AIza", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "hf_")
_PAIR_WORDS = ("api", "secret", "token", "passw")


def _folded(text: str) -> str:
    return text.casefold().replace("ı", "i")


class _Known:
    """Key values seen by this process, as one alternation (longest first)."""

    values: ClassVar[set[str]] = set()
    pattern: ClassVar[re.Pattern[str] | None] = None
    generation: ClassVar[int] = 0  # bumped on every new value, so memoised redactions are dropped


def add_secret(value: object) -> None:
    """Remember a configured key value, so it is scrubbed from everything labkit keeps or
    raises. Values shorter than 8 characters are ignored (too likely to hit ordinary text)."""
    if not isinstance(value, str) or len(value) < 8 or value in _Known.values:
        return
    _Known.values.add(value)
    ordered = sorted(_Known.values, key=len, reverse=True)
    _Known.pattern = re.compile("|".join(map(re.escape, ordered)))
    _Known.generation += 1


def scrub_secrets(text: str, *, pairs: bool = True) -> str:
    """`text` without configured key values, provider keys, bearer tokens and (with `pairs`)
    the values of `api_key=` / `password:` pairs. Replies are scrubbed without `pairs`, so a
    JSON answer with a "token" field keeps its value."""
    if _Known.pattern is not None:
        text = _Known.pattern.sub("[API_KEY]", text)
    folded = _folded(text)
    if "bearer" in folded:
        text = _BEARER.sub("Bearer [SECRET]", text)
    if any(prefix in text for prefix in _KEY_PREFIXES):
        text = _KEYS.sub("[API_KEY]", text)
    if pairs and any(word in folded for word in _PAIR_WORDS):
        text = _KEY_PAIR.sub(lambda m: m.group(1) + "[SECRET]", text)
    return text


def secrets_generation() -> int:
    return _Known.generation


def map_strings(obj: Any, func: Callable[[str], str]) -> Any:
    """Apply `func` to every string inside nested dicts/lists, on copies (iterative: no
    recursion limit). Dict keys are left as they are."""
    if isinstance(obj, str):
        return func(obj)
    if not isinstance(obj, dict | list):
        return obj
    root: Any = dict(obj) if isinstance(obj, dict) else list(obj)
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in list(items):
            if isinstance(v, str):
                node[k] = func(v)
            elif isinstance(v, dict | list):
                copy = dict(v) if isinstance(v, dict) else list(v)
                node[k] = copy
                stack.append(copy)
    return root


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else m.group(0)


def _phone(m: re.Match[str]) -> str:
    return "[PHONE]" if len(re.sub(r"\D", "", m.group(0))) >= 9 else m.group(0)


class Redactor:
    """Callable text scrubber; `redact_obj` walks JSON-like data (messages, raw responses)."""

    def __init__(
        self,
        patterns: Iterable[str | re.Pattern[str]] = (),
        func: Callable[[str], str] | None = None,
        *,
        builtin: bool = True,
    ) -> None:
        self.patterns = [re.compile(p) if isinstance(p, str) else p for p in patterns]
        self.func = func
        self.builtin = builtin

        # Grids send the same prompt to several models and repeats: memoise per redactor.
        self._memo: dict[str, str] = {}
        self._generation = _Known.generation

    def __call__(self, text: str) -> str:
        if self._generation != _Known.generation:  # a key became known: redo everything
            self._memo.clear()
            self._generation = _Known.generation
        done = self._memo.get(text)
        if done is None:
            done = self._redact(text)
            if len(self._memo) >= 4096:
                self._memo.clear()
            self._memo[text] = done
        return done

    def _redact(self, text: str) -> str:
        text = scrub_secrets(text)  # always, whatever `builtin` says
        if self.builtin:
            if "@" in text:
                text = _EMAIL.sub("[EMAIL]", text)
            ascii_only = text.isascii()
            if not ascii_only or _CARD_SPAN.search(text):
                text = _CARD.sub(_card, text)
            if not ascii_only or _PHONE_SPAN.search(text):
                text = _PHONE.sub(_phone, text)
        for p in self.patterns:
            text = p.sub("[REDACTED]", text)
        if self.func is not None:
            text = self.func(text)
        return text

    def redact_obj(self, obj: Any) -> Any:
        """Redact every string inside nested dicts/lists."""
        return map_strings(obj, self)
