"""Model registry: aliases -> pinned model versions per profile, A/B splits, capabilities.

Prompts name an alias ("triage"), never a vendor model; the active profile (argument, then
`LABKIT_PROFILE`, then the file's `profile:`, then "dev") picks the pinned version, so dev can
run the free local model while prod runs a dated hosted one, and a rollback is a one-line edit.

`labkit.yaml`::

    profile: dev
    models:                        # capabilities and transport; override litellm's model info
      openai/gpt-4o-mini-2024-07-18: {api_key_env: OPENAI_API_KEY}
      openai/gpt-4o-2024-08-06: {transport: litellm}   # force litellm over the lean transport
    aliases:
      triage:
        default: local/smollm2-135m-json
        prod: openai/gpt-4o-2024-08-06
        staging: {openai/gpt-4o-2024-08-06: 0.9, openai/gpt-4o-mini-2024-07-18: 0.1}   # A/B
    fallbacks:
      openai/gpt-4o-2024-08-06: [openai/gpt-4o-mini-2024-07-18, local/smollm2-135m]
    policy: {...}                  # labkit.resilience.PolicyConfig
    cache: redis://cache.internal:6379/0   # or {url:, ttl:, password_env:} / a folder (cache_stores)
    otel: {endpoint: http://127.0.0.1:6006}  # OTLP/HTTP trace export (labkit.otel.OtelConfig)
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, UnknownModel
from .resilience import PolicyConfig

__all__ = [
    "LOCAL_MODELS",
    "PROFILES",
    "AliasConfig",
    "ModelInfo",
    "Registry",
    "Resolution",
    "UnpinnedModelWarning",
]

PROFILES = ("dev", "staging", "prod")
DEFAULT_MODEL = "local/smollm2-135m"

# Providers litellm routes by prefix; known statically so resolving a name never imports litellm.
_PROVIDERS = frozenset(
    (
        "openai azure azure_ai anthropic gemini vertex_ai bedrock mistral groq together_ai "
        "ollama ollama_chat openrouter deepseek cohere cohere_chat huggingface fireworks_ai xai "
        "perplexity hosted_vllm vllm databricks sagemaker replicate ai21 nvidia_nim cerebras "
        "sambanova watsonx deepinfra anyscale cloudflare text-completion-openai lm_studio llamafile "
        # labkit.testing.FakeBackend, registered on a client with add_backend("fake", ...)
        "fake"
    ).split()
)
# Providers whose model list is closed and fully in litellm's model map: an id missing there is
# a typo, worth failing before a run. Open catalogues (ollama, openrouter, azure deployments,
# hosted_vllm, ...) take any name and are never checked.
_CATALOGUED = frozenset(("openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "groq"))
_KNOWN_IDS: dict[str, frozenset[str]] = {}
# Providers whose servers speak OpenAI's chat-completions protocol given an `api_base` (openai
# and azure without one too): they take the lean transport (labkit.backends.openai_compat).
# The rest (anthropic, gemini, bedrock, ollama's native API, ...) keep litellm's translation.
_OPENAI_COMPATIBLE = frozenset(
    (
        "openai azure hosted_vllm openrouter together_ai groq deepseek fireworks_ai xai "
        "perplexity deepinfra lm_studio llamafile nvidia_nim cerebras sambanova anyscale"
    ).split()
)
_PINNED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}$|@|:\d|-v\d|-\d{3,4}$|-\d{2}-\d{4})")


class UnpinnedModelWarning(UserWarning):
    """An alias resolves to a floating model name whose behaviour can change under you."""


class ModelInfo(BaseModel):
    """What labkit knows about one pinned model. Unset fields come from litellm's model info."""

    model_config = ConfigDict(extra="forbid")

    id: str
    """Pinned 'provider/model' id, e.g. 'openai/gpt-4o-mini-2024-07-18'."""
    context_window: int | None = Field(None, gt=0)
    """Input window in tokens (prompt plus output must fit)."""
    max_output_tokens: int | None = Field(None, gt=0)
    """Most tokens the model will write in one reply (often far below the window)."""
    json_mode: bool | None = None
    """Whether the provider has a native JSON mode / response_format."""
    input_cost_per_token: float | None = Field(None, ge=0)
    output_cost_per_token: float | None = Field(None, ge=0)
    cached_input_cost_per_token: float | None = Field(None, ge=0)
    """Price of a prompt token served from the provider's prompt cache (None: full price)."""
    api_base: str | None = None
    """Endpoint override (a proxy, a self-hosted server, the loopback test server)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the key. The key itself never goes in a file."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Default generation parameters for this model (merged under the call's own)."""

    transport: Literal["auto", "litellm", "openai_compat"] = "auto"
    """How to reach a hosted model: "auto" takes the lean OpenAI-compatible transport for
    openai/, azure/ and OpenAI-compatible `api_base` servers, litellm for the rest; "litellm"
    forces litellm (e.g. for a provider quirk it handles); "openai_compat" forces the lean one."""

    @property
    def backend(self) -> str:
        """Which backend serves this model: local, fake, openai_compat or litellm."""
        provider = self.id.split("/", 1)[0]
        if provider in ("local", "fake"):
            return provider
        if self.transport == "auto":
            lean = provider in ("openai", "azure") or bool(
                self.api_base and (provider in _OPENAI_COMPATIBLE or provider not in _PROVIDERS)
            )
            return "openai_compat" if lean else "litellm"
        return self.transport

    @property
    def pinned(self) -> bool:
        return self.backend in ("local", "fake") or bool(_PINNED.search(self.id.split("/", 1)[-1]))


LOCAL_MODELS: dict[str, ModelInfo] = {
    "local/smollm2-135m": ModelInfo(
        id="local/smollm2-135m",
        context_window=8192,
        max_output_tokens=2048,
        json_mode=False,
        input_cost_per_token=0.0,
        output_cost_per_token=0.0,
    ),
    "local/smollm2-135m-json": ModelInfo(
        id="local/smollm2-135m-json",
        context_window=8192,
        max_output_tokens=2048,
        json_mode=True,
        input_cost_per_token=0.0,
        output_cost_per_token=0.0,
    ),
}


class AliasConfig(BaseModel):
    """Per-profile targets of one alias: a model id, or {model id: weight} for an A/B split."""

    model_config = ConfigDict(extra="forbid")

    default: str | dict[str, float]
    """Used by any profile not listed below."""
    dev: str | dict[str, float] | None = None
    staging: str | dict[str, float] | None = None
    prod: str | dict[str, float] | None = None

    @field_validator("default", "dev", "staging", "prod")
    @classmethod
    def _weights(cls, v: Any) -> Any:
        if isinstance(v, dict):
            if not v:
                raise ValueError("an A/B split needs at least one model")
            bad = {m: w for m, w in v.items() if not (isinstance(w, int | float) and w > 0)}
            if bad:
                raise ValueError(f"A/B weights must be positive numbers, got {bad}")
        return v

    def target(self, profile: str) -> str | dict[str, float]:
        value = getattr(self, profile, None) if profile in PROFILES else None
        return value if value is not None else self.default


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    asked: str
    alias: str | None
    model: str
    info: ModelInfo
    chain: list[str]
    """model first, then its fallbacks."""
    profile: str


def ab_bucket(key: str, alias: str) -> float:
    """Deterministic position in [0, 1) for an A/B split: same key, same arm, every run."""
    digest = hashlib.sha256(f"{alias}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Registry:
    """Aliases, model capabilities and fallback chains. Build from code or `Registry.load()`."""

    def __init__(
        self,
        models: Mapping[str, ModelInfo | Mapping[str, Any]] | None = None,
        aliases: Mapping[str, AliasConfig | Mapping[str, Any] | str] | None = None,
        fallbacks: Mapping[str, list[str]] | None = None,
        *,
        profile: str | None = None,
        policy: PolicyConfig | Mapping[str, Any] | None = None,
        source: str | None = None,
        cache: Any = None,
        otel: Any = None,
    ) -> None:
        self.source = source
        self.team: dict[str, Any] = {
            k: v for k, v in (("cache", cache), ("otel", otel)) if v is not None
        }
        """The file's `cache:` and `otel:` settings, read by the Client (team set-up)."""
        where = source or "registry"
        self.models: dict[str, ModelInfo] = dict(LOCAL_MODELS)
        for mid, info in (models or {}).items():
            data = (
                info.model_dump(exclude_unset=True) if isinstance(info, ModelInfo) else dict(info)
            )
            data.setdefault("id", mid)
            base = self.models.get(mid)
            merged = {**(base.model_dump(exclude_none=True) if base else {}), **data}
            self.models[mid] = _validate(ModelInfo, merged, f"{where}: models.{mid}")
        self.aliases: dict[str, AliasConfig] = {}
        for name, cfg in (aliases or {}).items():
            if isinstance(cfg, str):
                cfg = {"default": cfg}
            self.aliases[name] = (
                cfg
                if isinstance(cfg, AliasConfig)
                else _validate(AliasConfig, cfg, f"{where}: aliases.{name}")
            )
        self.fallbacks = {k: list(v) for k, v in (fallbacks or {}).items()}
        self.policy = (
            policy
            if isinstance(policy, PolicyConfig)
            else _validate(PolicyConfig, dict(policy or {}), f"{where}: policy")
        )
        self._default_profile = profile
        self._resolved: dict[tuple[str, str], Resolution] = {}
        self._capabilities: dict[str, tuple[ModelInfo | None, ModelInfo]] = {}
        self._defaults: dict[str, ModelInfo] = {}  # the entries of ids not in `models`
        self._check()

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path | None = None, *, profile: str | None = None) -> Registry:
        """Read `labkit.yaml` (or `path`); a missing default file means built-ins only."""
        if path is None:
            found = _find_project_file()
            if found is None:
                return cls(profile=profile)
            path = found
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the registry file: {exc}", where=str(path)) from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"invalid YAML{line}: {exc}", where=str(path)) from exc
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping at the top level", where=str(path))
        unknown = set(data) - {
            "profile",
            "models",
            "aliases",
            "fallbacks",
            "policy",
            "cache",
            "otel",
        }
        if unknown:
            raise ConfigError(
                f"unknown top-level key(s) {sorted(unknown)}; expected profile, models, "
                "aliases, fallbacks, policy, cache, otel",
                where=str(path),
            )
        return cls(
            data.get("models"),
            data.get("aliases"),
            data.get("fallbacks"),
            profile=profile or data.get("profile"),
            policy=data.get("policy"),
            source=str(path),
            cache=data.get("cache"),
            otel=data.get("otel"),
        )

    def _check(self) -> None:
        where = self.source or "registry"
        for name, cfg in self.aliases.items():
            for prof in ("default", *PROFILES):
                target = getattr(cfg, prof)
                for mid in [target] if isinstance(target, str) else list(target or {}):
                    if not self.is_model(mid):
                        raise self._unknown(mid, where=f"{where}: aliases.{name}.{prof}")
        from .resilience import validate_fallbacks

        validate_fallbacks(self.fallbacks, self.is_model)
        default = self._default_profile
        if default is not None and default not in PROFILES:
            raise ConfigError(f"profile {default!r} is not one of {PROFILES}", where=where)

    # --------------------------------------------------------------- resolving
    def profile(self, profile: str | None = None) -> str:
        prof = profile or os.environ.get("LABKIT_PROFILE") or self._default_profile or "dev"
        if prof not in PROFILES:
            raise ConfigError(
                f"profile {prof!r} is not one of {PROFILES} (set by argument or LABKIT_PROFILE)"
            )
        return prof

    def is_model(self, name: str) -> bool:
        if name in self.models:
            return True
        provider, _, rest = name.partition("/")
        return bool(rest) and provider in _PROVIDERS

    def info(self, model: str) -> ModelInfo:
        """The registry's entry for `model`, else its defaults (built once per id: two
        look-ups per call, and building one cost more than the rest of both)."""
        found = self.models.get(model) or self._defaults.get(model)
        if found is None:
            if len(self._defaults) >= 1024:
                self._defaults.clear()
            found = self._defaults[model] = ModelInfo(id=model)
        return found

    def resolve(
        self, name: str | None, *, profile: str | None = None, ab_key: str = ""
    ) -> Resolution:
        """Alias or id -> pinned model and its fallback chain for the active profile."""
        asked = name or DEFAULT_MODEL
        prof = self.profile(profile)
        memo_key = (asked, prof)
        if memo_key in self._resolved:
            return self._resolved[memo_key]
        alias = None
        model = asked
        if asked in self.aliases:
            alias = asked
            target = self.aliases[asked].target(prof)
            model = target if isinstance(target, str) else _pick(target, ab_bucket(ab_key, asked))
        elif not self.is_model(asked):
            raise self._unknown(asked)
        info = self.info(model)
        if alias is not None and not info.pinned:
            warnings.warn(
                f"alias {alias!r} resolves to {model!r}, a floating model name; pin a dated "
                "version (e.g. 'gpt-4o-2024-08-06') so provider updates cannot change outputs.",
                UnpinnedModelWarning,
                stacklevel=3,
            )
        res = Resolution(
            asked=asked,
            alias=alias,
            model=model,
            info=info,
            chain=self._chain(model, alias),
            profile=prof,
        )
        if alias is None or isinstance(self.aliases[alias].target(prof), str):
            self._resolved[memo_key] = res  # A/B splits depend on the key: never memoised
        return res

    def _chain(self, model: str, alias: str | None) -> list[str]:
        """The model, then its fallbacks (and theirs), else the alias's fallbacks."""
        from .resilience import expand_chain

        chain = expand_chain(model, self.fallbacks)
        if len(chain) == 1 and alias in self.fallbacks:
            chain += [m for m in expand_chain(alias, self.fallbacks)[1:] if m != model]
        return chain

    def names(self) -> list[str]:
        return sorted({*self.aliases, *self.models})

    def _unknown(self, name: str, where: str | None = None) -> UnknownModel:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        err = UnknownModel(name, close)
        if where:
            err.where = where
            err.args = (f"{where}: {err.args[0]}",)
        return err

    def register(self, model: str | ModelInfo, **fields: Any) -> ModelInfo:
        """Add or update one model's capabilities/transport from code."""
        info = model if isinstance(model, ModelInfo) else ModelInfo(id=model, **fields)
        base = self.models.get(info.id)
        merged = {
            **(base.model_dump(exclude_none=True) if base else {}),
            **info.model_dump(exclude_unset=True),
        }
        self.models[info.id] = ModelInfo(**merged)
        self._resolved.clear()
        return self.models[info.id]

    def alias(
        self, name: str, default: str | dict[str, float], **profiles: str | dict[str, float]
    ) -> None:
        """Define an alias from code: `reg.alias("triage", "local/smollm2-135m", prod="openai/...")`."""
        cfg = AliasConfig(default=default, **profiles)
        for target in [cfg.target(p) for p in PROFILES]:
            for mid in [target] if isinstance(target, str) else list(target):
                if not self.is_model(mid):
                    raise self._unknown(mid, where=f"aliases.{name}")
        self.aliases[name] = cfg
        self._resolved.clear()

    def check_known(self, name: str, *, profile: str | None = None) -> None:
        """Raise `UnknownModel` (nearest ids suggested) when `name`, any model it resolves to
        for the profile (every arm of an A/B split) or any of their fallbacks is a hosted id
        that litellm's model map does not list. Offline (labkit keeps litellm's map local);
        imports litellm only when such an id is present. Models with an `api_base` (a proxy, a
        self-hosted or test server), with their own `context_window`, or fine-tuned (`ft:`)
        are allowed: the map cannot know them."""
        targets: list[str] = [name]
        if name in self.aliases:
            target = self.aliases[name].target(self.profile(profile))
            targets = [target] if isinstance(target, str) else list(target)
        for model in targets:
            for mid in self._chain(model, name if name in self.aliases else None):
                self._check_hosted(mid)

    def _check_hosted(self, model: str) -> None:
        provider, _, rest = model.partition("/")
        info = self.info(model)
        if (
            provider not in _CATALOGUED
            or info.api_base
            or info.context_window is not None
            or rest.startswith("ft:")
        ):
            return
        known = _known_ids(provider)
        if not known or rest in known:
            return
        close = difflib.get_close_matches(rest, sorted(known), n=3, cutoff=0.6)
        raise UnknownModel(model, [f"{provider}/{c}" for c in close])

    def capabilities(self, model: str) -> ModelInfo:
        """Registry entry merged over litellm's model info (imports litellm for remote models)."""
        info = self.info(model)
        if info.backend in ("local", "fake") or None not in (
            info.context_window,
            info.max_output_tokens,
            info.json_mode,
        ):
            return info
        entry = self.models.get(model)
        memo = self._capabilities.get(model)
        if memo is not None and memo[0] is entry:  # litellm asked once per model and entry
            return memo[1]
        from .backends.litellm_backend import litellm_model_info

        found = litellm_model_info(model)
        merged = {
            **{k: v for k, v in found.items() if v is not None},
            **info.model_dump(exclude_none=True),
        }
        caps = ModelInfo(**merged)
        self._capabilities[model] = (entry, caps)
        return caps


def _known_ids(provider: str) -> frozenset[str]:
    """Model names litellm's (local) model map lists for `provider`, without the prefix."""
    if provider not in _KNOWN_IDS:
        from .backends.litellm_backend import model_map

        names: set[str] = set()
        for key, entry in model_map().items():
            if isinstance(entry, Mapping) and entry.get("litellm_provider") == provider:
                names.add(key.split("/", 1)[1] if key.startswith(f"{provider}/") else key)
        _KNOWN_IDS[provider] = frozenset(names)
    return _KNOWN_IDS[provider]


def _pick(weights: dict[str, float], u: float) -> str:
    total = sum(weights.values())
    acc = 0.0
    for mid, w in sorted(weights.items()):
        acc += w / total
        if u < acc:
            return mid
    return sorted(weights)[-1]


def _validate(model: type[Any], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{first['msg']}" + (f" (field {loc})" if loc else ""), where=where
        ) from exc


def _find_project_file() -> Path | None:
    env = os.environ.get("LABKIT_CONFIG")
    if env:
        return Path(env)
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / "labkit.yaml"
        if candidate.is_file():
            return candidate
        if (folder / ".git").exists():
            break
    return None
