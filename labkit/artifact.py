"""Deployed configs: the winner of an experiment as one YAML file, validated and versioned.

A config file holds everything production needs to reproduce the winning variant through the
same call path as the notebook (prompt template, pinned model and fallbacks, generation
params, output JSON Schema, the low-confidence routing rule, evaluators, a regression suite)
and the evidence it won with. It never holds an API key: keys stay in the environment, named
by `api_key_env` in `labkit.yaml`.

Versions live next to the file, append-only::

    triage.yaml                 the current version (what `load_config` reads)
    triage.history/v0001.yaml   every version ever saved, byte for byte
    triage.history/history.jsonl  one JSON line per version: who, what, when, evidence

Every write goes to a temporary file that is renamed over the target, so a failed export,
promotion or rollback leaves the current file untouched. A current file edited by hand is
recorded as an "edit" version before anything overwrites it.

This module is the contract between the notebook and production: `labkit.experiments`
writes a config (`export_config`), `labkit.deploy` loads, runs and gates one, and
`labkit.monitoring` reads its versions. It sits below all three and imports none of them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import getpass
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._version import __version__
from .client import default_client
from .errors import ConfigError, UnknownModel
from .models import UnpinnedModelWarning
from .prompts import template_variables
from .redact import scrub_secrets
from .types import OUTPUT_PARAMS

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "ConfidencePolicy",
    "DeployedConfig",
    "Evidence",
    "SuiteItem",
    "VersionInfo",
    "atomic_write",
    "check_models",
    "history_dir",
    "measured_on",
    "read_config",
    "rollback",
    "save_config",
    "versions",
]

Action = Literal["export", "promote", "rollback", "edit"]

_SECRET = re.compile(
    r"(^|_)(api_?key|secret|secret_key|token|access_token|password|passwd|authorization|"
    r"auth|bearer|credentials?|private_key|access_key)($|_)"
)


def is_secret_name(name: str) -> bool:
    """True for parameter names that hold credentials (api_key, client_secret, token, ...).

    Matched on whole name segments, so `max_tokens` is not mistaken for a token.
    """
    return bool(_SECRET.search(name.lower().replace("-", "_")))


# ----------------------------------------------------------------------------- the schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ConfidencePolicy(_Strict):
    """When an answer is trusted automatically and when it goes to a person."""

    requested: bool = True
    """Whether the prompt asks the model for per-field confidences (part of the cache key)."""
    review_below: Annotated[float | None, Field(ge=0, le=1)] = None
    """Answers whose confidence is below this go to review; None routes only failed parses."""
    field: str | None = None
    """The schema field whose confidence is compared; None = the mean over all fields."""
    route: Literal["human_review"] = "human_review"
    """Where low-confidence answers go (`Output.needs_review` is set for them)."""
    target_accuracy: Annotated[float | None, Field(ge=0, le=1)] = None
    """The accuracy the threshold was chosen to reach on the experiment's rows, if chosen."""
    expected_coverage: Annotated[float | None, Field(ge=0, le=1)] = None
    """Share of the experiment's answers the threshold accepted automatically."""


class SuiteItem(_Strict):
    """One regression-suite case: inputs for the template and the values expected back."""

    id: str
    """Dataset item id, so a failing case can be found in the original data."""
    inputs: dict[str, Any]
    """Template variables."""
    expected: dict[str, Any]
    """Expected output fields (compared by the config's evaluators)."""


class Evidence(_Strict):
    """Why this version is the one deployed: the measurement it won (or passed the gate) with."""

    metric: str
    """What was compared, e.g. 'success_rate'."""
    value: float | None = None
    ci_low: float | None = None
    """Lower end of the 95% interval of `value` (Wilson for rates), when there is one."""
    ci_high: float | None = None
    n: int = 0
    """Rows the value was measured on."""
    n_items: int | None = None
    """Distinct dataset items among those rows."""
    dataset: str | None = None
    dataset_fingerprint: str | None = None
    """sha256 of the dataset rows (`labkit.datasets.Dataset.fingerprint`)."""
    created_at: str
    """UTC ISO-8601 time the evidence was produced."""
    labkit_version: str
    run_id: str | None = None
    """Experiment run (or gate run) id; its calls are in the trace store under this id."""
    constraints: dict[str, Any] = Field(default_factory=dict)
    """Constraints the winner had to meet, e.g. {'cost_per_success': {'max': 0.01}}."""
    compared_to: list[dict[str, Any]] = Field(default_factory=list)
    """The other variants (or the previous model): their value and the paired difference."""
    gate: dict[str, Any] | None = None
    """The promotion gate's verdict, when this version was written by `gate`."""


class DeployedConfig(_Strict):
    """One deployable version of a prompt: what to ask, of which pinned model, judged how."""

    version: int = Field(1, ge=1)
    """Position in the file's history (set when the version is saved)."""
    name: str
    """The variant's name, e.g. 'terse · local/smollm2-135m-json'."""
    prompt: str
    """The user-message template, with `{{name}}` placeholders."""
    system: str | None = None
    """The system message template, if any."""
    model: str
    """Pinned 'provider/model' id (never a floating alias)."""
    fallbacks: list[str] = Field(default_factory=list)
    """Models tried in order when `model` fails (retries exhausted, breaker open)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Output-affecting generation parameters (temperature, max_tokens, seed, ...)."""
    output_schema: dict[str, Any] | None = Field(None, alias="schema")
    """JSON Schema of the answer; None for free text."""
    confidence: ConfidencePolicy = Field(default_factory=lambda: ConfidencePolicy())
    """Confidence threshold and routing for low-confidence answers."""
    evaluators: list[dict[str, Any]] = Field(default_factory=list)
    """Evaluator specs (`labkit.evaluation.evaluator_from_spec`) scoring the suite."""
    suite: list[SuiteItem] = Field(default_factory=list)
    """Regression suite: representative items with expected values, run by the gate."""
    evidence: Evidence | None = None
    """The measurement behind this version."""

    def dump(self) -> dict[str, Any]:
        """JSON-safe dict in file order, with `schema` under its file name."""
        return self.model_dump(mode="json", by_alias=True)


class VersionInfo(_Strict):
    """One line of `history.jsonl`: who saved which version, when, why, with what evidence."""

    version: int
    created_at: str
    author: str
    action: Action
    model: str
    name: str
    note: str = ""
    restored_from: int | None = None
    """For a rollback: the version whose content was restored."""
    evidence: dict[str, Any] | None = None
    """metric, value, ci_low, ci_high, n, dataset_fingerprint of the version's evidence."""
    sha256: str
    """Of the version file's bytes."""
    file: str
    """The version file, relative to the history folder."""
    watch: dict[str, Any] | None = Field(default=None, exclude=True)
    """With `history(path, traces=...)`: the upgrade watch's verdict on this version (before
    vs after it was saved) and, when worse, the rollback to run. Shown, never written."""


# ----------------------------------------------------------------------------- files


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, then rename it over `path`.

    Readers see the old content or the new, never half a file, and a failure leaves `path`
    as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600  # holds prompts
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def history_dir(path: str | Path) -> Path:
    """`triage.yaml` -> `triage.history/` beside it."""
    p = Path(path)
    return p.with_name(f"{p.stem}.history")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise writers of one config (two exports must not take the same version number).

    A history folder this call created is removed again if nothing was saved in it.
    """
    folder = history_dir(path)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(folder / ".lock", "a") as handle:
            try:
                import fcntl
            except ImportError:  # Windows: no advisory lock; the O_EXCL version claim holds
                yield
                return
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        if created and [p.name for p in folder.iterdir()] == [".lock"]:
            with contextlib.suppress(OSError):
                (folder / ".lock").unlink()
                folder.rmdir()


class _Dumper(yaml.SafeDumper):
    """Safe dumper that writes multi-line strings (prompts) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(cfg: DeployedConfig) -> str:
    """The file text: a short header comment, then the config in field order."""

    name = " ".join(cfg.name.split())  # a newline in the name must not end the comment
    head = (
        f"# labkit deployed config: {name} (version {cfg.version})\n"
        f"# Written by labkit {__version__}. Load with labkit.load_config(path); history,\n"
        "# rollback and model upgrades: `labkit --help`. Never put API keys in this file.\n"
    )
    body = yaml.dump(cfg.dump(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return head + body


# ----------------------------------------------------------------------------- reading


def locate(path: str | Path, text: str, loc: Sequence[Any]) -> str:
    """'file, line N, field a.b[2].c' for a location inside the YAML document."""
    dotted = _dotted(loc)
    line = _line_of(text, loc)
    parts = (
        [str(path)] + ([f"line {line}"] if line else []) + ([f"field {dotted}"] if dotted else [])
    )
    return ", ".join(parts)


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(text: str, loc: Sequence[Any]) -> int | None:
    """1-based line of the deepest node of `loc` present in the document."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    nxt, line = value, key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


def parse_config(text: str, path: str | Path = "<config>") -> DeployedConfig:
    """Validate config text: YAML (safe_load), the schema (extra fields forbidden), then
    consistency (template variables, schema vs expected fields, no secrets)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"invalid YAML ({problem}); fix the file by hand or restore a saved version with "
            f"`labkit rollback {path} --to N` (see `labkit history {path}`)",
            where=where,
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping of config fields at the top level, got {type(data).__name__}",
            where=str(path),
        )
    try:
        cfg = DeployedConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A typo ("modle:") is both an unknown field and a missing one: name the typo first.
        errors.sort(key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        hint = ""
        if first["type"] == "extra_forbidden":
            import difflib

            allowed = _allowed(first["loc"])
            close = difflib.get_close_matches(str(first["loc"][-1]), allowed, n=1, cutoff=0.6)
            hint = (f"; did you mean {close[0]!r}?" if close else "") + (
                "; fields allowed here: " + ", ".join(allowed)
            )
            first = {**first, "msg": f"unknown field {str(first['loc'][-1])!r} ({first['msg']})"}
        raise ConfigError(
            f"{first['msg']}{hint}{more}", where=locate(path, text, first["loc"])
        ) from exc
    problems = consistency_problems(cfg)
    if problems:
        loc, msg = problems[0]
        more = (
            "; also: " + "; ".join(f"{_dotted(lc)}: {m}" for lc, m in problems[1:])
            if len(problems) > 1
            else ""
        )
        raise ConfigError(msg + more, where=locate(path, text, loc))
    return cfg


def _allowed(loc: Sequence[Any]) -> list[str]:
    """Field names valid at the parent of `loc` (for 'unknown field' messages)."""
    model: Any = DeployedConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        ann = getattr(info, "annotation", None)
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        nested = next((a for a in inner if issubclass(a, BaseModel)), None)
        if nested is None:
            return []
        model = nested
    return [f.alias or name for name, f in model.model_fields.items()]


def consistency_problems(cfg: DeployedConfig) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-field problems a schema cannot express, each with its location."""
    out: list[tuple[tuple[Any, ...], str]] = []

    def add(*loc: Any, msg: str) -> None:
        out.append((loc, msg))

    secret = "looks like a credential; keys never go in a config file (name the environment "
    secret += "variable with `api_key_env` in labkit.yaml)"
    for key in cfg.params:
        if is_secret_name(key):
            add("params", key, msg=f"{key!r} {secret}")
        elif key not in OUTPUT_PARAMS:
            allowed = ", ".join(sorted(OUTPUT_PARAMS))
            add("params", key, msg=f"unknown generation parameter {key!r}; allowed: {allowed}")
    for i, spec in enumerate(cfg.evaluators):
        if not isinstance(spec.get("type"), str):
            add("evaluators", i, msg="an evaluator spec needs a 'type' (write it with .spec())")
        for key in spec:
            if is_secret_name(str(key)):
                add("evaluators", i, key, msg=f"{key!r} {secret}")
        named = spec.get("fields") or ([spec["field"]] if spec.get("field") else [])
        props_ = _properties(cfg.output_schema)
        unknown = [f for f in named if props_ is not None and str(f).split(".")[0] not in props_]
        if unknown:
            add(
                "evaluators",
                i,
                msg=f"evaluator {spec.get('name') or spec.get('type')!r} reads "
                f"field(s) {unknown} that the output schema ({', '.join(props_ or [])}) lacks",
            )
    if cfg.model in cfg.fallbacks:
        add("fallbacks", msg=f"the model {cfg.model!r} is listed as its own fallback")
    needed = template_variables(cfg.prompt) | template_variables(cfg.system or "")
    if not needed and cfg.suite:
        add("prompt", msg="the template has no {{placeholders}}: every suite item gets one prompt")
    props = _properties(cfg.output_schema)
    if cfg.output_schema is not None and props is None:
        add("schema", msg="the output schema must be a JSON Schema object with `properties`")
    field_ = cfg.confidence.field
    if field_ is not None and props is not None and field_ not in props:
        add("confidence", "field", msg=f"{field_!r} is not in the schema ({', '.join(props)})")
    seen: set[str] = set()
    for i, item in enumerate(cfg.suite):
        if item.id in seen:
            add("suite", i, "id", msg=f"duplicate suite item id {item.id!r}")
        seen.add(item.id)
        missing = sorted(needed - set(item.inputs))
        if missing:
            add(
                "suite",
                i,
                "inputs",
                msg=f"suite item {item.id!r} lacks the template "
                f"variable(s) {missing} the prompt uses",
            )
        extra = [k for k in item.expected if props is not None and k not in props]
        if extra:
            add(
                "suite",
                i,
                "expected",
                extra[0],
                msg=f"expected field(s) {extra} of suite item "
                f"{item.id!r} are not in the output schema ({', '.join(props or [])}), so the "
                "prompt never asks for them",
            )
    return out


def _properties(schema: Mapping[str, Any] | None) -> list[str] | None:
    if not isinstance(schema, Mapping):
        return None
    props = schema.get("properties")
    return [str(k) for k in props] if isinstance(props, Mapping) and props else None


def read_config(path: str | Path) -> DeployedConfig:
    """Read and validate a config file (no registry needed); errors name file, line, field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            "no such config file; export one with `results.export_config(path)`", where=str(p)
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc}", where=str(p)) from exc
    return parse_config(text, p)


# ----------------------------------------------------------------------------- history


def now_utc() -> str:
    """UTC time as ISO-8601 seconds, the timestamp of every history line and evidence."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _read_log(path: Path) -> list[VersionInfo]:
    log = history_dir(path) / "history.jsonl"
    if not log.exists():
        return []
    out = []
    for n, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(VersionInfo.model_validate(json.loads(line)))
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"unreadable history line: {exc}", where=f"{log}, line {n}") from exc
    return out


def versions(path: str | Path) -> list[VersionInfo]:
    """Every saved version of a config, oldest first: who saved what, when, with which evidence
    (`labkit.history` adds the upgrade watch's verdicts from production traces)."""
    return _read_log(Path(path))


def measured_on(info: VersionInfo) -> tuple[int | None, str] | None:
    """(n, what) a version's rate was measured on; None when it carries no rate. Two versions
    with different (n, what) measured different item sets: their rates are not comparable."""
    ev = info.evidence or {}
    if ev.get("value") is None:
        return None
    where = ev.get("dataset") or ("the regression suite" if info.action != "export" else "?")
    return ev.get("n"), str(where)


def _summary(ev: Evidence | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    keys = ("metric", "value", "ci_low", "ci_high", "n", "dataset", "dataset_fingerprint", "run_id")
    return {k: getattr(ev, k) for k in keys}


def save_config(
    path: str | Path,
    cfg: DeployedConfig,
    *,
    action: Action = "export",
    note: str = "",
    author: str | None = None,
    restored_from: int | None = None,
    expect_version: int | None = None,
) -> DeployedConfig:
    """Save `cfg` as the next version of `path`, keeping every earlier one.

    The text is validated by reading it back before anything is written; the version file and
    the history line are written before the current file is replaced, each atomically. With
    `expect_version`, refuse if the current file is no longer that version (someone saved
    meanwhile). Returns the config as saved (with its version number).
    """
    p = Path(path)
    folder = history_dir(p)
    with _locked(p):
        if expect_version is not None:
            now = read_config(p).version if p.exists() else None
            if now != expect_version:
                raise ConfigError(
                    f"the config changed while this ran (now version {now}, expected "
                    f"{expect_version}); nothing was written. Run it again on the new version",
                    where=str(p),
                )
        log = _read_log(p)
        _record_hand_edit(p, log)
        log = _read_log(p)
        taken = {v.version for v in log} | _version_files(folder)
        number = max(taken, default=0) + 1
        cfg = cfg.model_copy(update={"version": number})
        text = to_yaml(cfg)
        check = parse_config(text, p)  # never write a file load_config would refuse
        if check.dump() != cfg.dump():
            raise ConfigError("the config does not survive a YAML round trip", where=str(p))
        _refuse_secrets(text, p)
        info = _write_version(p, number, text, cfg, action, note, author, restored_from)
        atomic_write(p, text)
        del info
    return cfg


def _version_files(folder: Path) -> set[int]:
    out = set()
    for f in folder.glob("v[0-9]*.yaml"):
        with contextlib.suppress(ValueError):
            out.add(int(f.stem[1:]))
    return out


def _write_version(
    p: Path,
    number: int,
    text: str,
    cfg: DeployedConfig,
    action: Action,
    note: str,
    author: str | None,
    restored_from: int | None,
) -> VersionInfo:
    folder = history_dir(p)
    name = f"v{number:04d}.yaml"
    target = folder / name
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # claim the number
    os.close(fd)
    try:
        atomic_write(target, text)
        info = VersionInfo(
            version=number,
            created_at=now_utc(),
            author=author or _user(),
            action=action,
            model=cfg.model,
            name=cfg.name,
            note=note,
            restored_from=restored_from,
            evidence=_summary(cfg.evidence),
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            file=name,
        )
        log = folder / "history.jsonl"
        old = log.read_text(encoding="utf-8") if log.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        atomic_write(log, old + json.dumps(info.model_dump(mode="json"), allow_nan=False) + "\n")
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    return info


def _record_hand_edit(p: Path, log: list[VersionInfo]) -> None:
    """Keep the current file as a version when it is not already the latest saved one."""
    if not p.exists():
        return
    text = p.read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if log and log[-1].sha256 == digest:
        return
    try:
        current = parse_config(text, p)
    except ConfigError as exc:
        if not log:  # not ours: never overwrite someone's file (labkit.yaml, say) by mistake
            detail = str(exc).replace(f"{p}, ", "", 1)
            raise ConfigError(
                f"exists and is not a labkit config; nothing was written ({detail}). Choose "
                "another path, or move the file away",
                where=str(p),
            ) from exc
        current = None
    folder = history_dir(p)
    number = max({v.version for v in log} | _version_files(folder), default=0) + 1
    name = current.name if current else p.stem
    model = current.model if current else "?"
    note = "the file as found before this save" + ("" if current else " (it did not validate)")
    stub = current or DeployedConfig.model_validate({"name": name, "prompt": "", "model": model})
    _write_version(p, number, text, stub, "edit", note, None, None)


def _refuse_secrets(text: str, p: Path) -> None:
    """Refuse to write any credential-looking environment value, configured key or key-shaped
    token (`labkit.redact.scrub_secrets`) that slipped into the text."""
    if scrub_secrets(text) != text:
        raise ConfigError(
            "the config would contain an API key or token (in the prompt, params, evaluators "
            "or suite inputs); nothing was written. Remove it, or export with suite_size=0 if "
            "it comes from a dataset item",
            where=str(p),
        )
    for name, value in os.environ.items():
        if len(value) >= 8 and is_secret_name(name) and value in text:
            raise ConfigError(
                f"the config would contain the value of the environment variable {name}; "
                "nothing was written. Remove it from the params, evaluators or suite inputs",
                where=str(p),
            )


def rollback(
    path: str | Path, to: int, *, note: str = "", author: str | None = None
) -> DeployedConfig:
    """Restore version `to` as a new latest version (history stays append-only)."""
    p = Path(path)
    log = _read_log(p)
    known = {v.version: v for v in log}
    if to not in known:
        have = ", ".join(f"v{v.version} ({v.action}, {v.model}, {v.created_at})" for v in log)
        raise ConfigError(
            f"there is no version {to}; saved versions: {have or 'none'}",
            where=f"{p}, --to {to}",
        )
    old = history_dir(p) / known[to].file
    try:
        cfg = parse_config(old.read_text(encoding="utf-8"), old)
    except (OSError, ConfigError) as exc:
        raise ConfigError(f"version {to} cannot be restored: {exc}", where=str(old)) from exc
    return save_config(
        p,
        cfg,
        action="rollback",
        note=note or f"rollback to v{to}",
        author=author,
        restored_from=to,
    )


def check_models(cfg: DeployedConfig, client: Client | None, p: Path | str) -> None:
    """Model and fallbacks must be known pinned ids (aliases are resolved at export time)."""
    reg = (client or default_client()).registry
    text = Path(p).read_text(encoding="utf-8") if Path(p).exists() else ""
    for loc, name in [
        (("model",), cfg.model),
        *((("fallbacks", i), m) for i, m in enumerate(cfg.fallbacks)),
    ]:
        where = locate(p, text, loc)
        if name in reg.aliases:
            raise ConfigError(
                f"{name!r} is an alias; a deployed config pins a model id. Use "
                f"{reg.resolve(name).model!r} (what it resolves to now)",
                where=where,
            )
        if not reg.is_model(name):
            err = UnknownModel(name, difflib.get_close_matches(name, reg.names(), n=3, cutoff=0.5))
            err.where = where
            err.args = (f"{where}: {err.args[0]}",)
            raise err
        if not reg.info(name).pinned:
            warnings.warn(
                f"{where}: {name!r} is a floating model name; pin a dated version so a provider "
                "update cannot change the outputs under you",
                UnpinnedModelWarning,
                stacklevel=3,
            )
