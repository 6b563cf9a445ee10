"""Trace rows as OpenTelemetry spans, exported over OTLP/HTTP (Phoenix, Langfuse, Jaeger, Tempo).

One redaction path: spans are built from the rows the SQLite trace store has just redacted
(`SpanSink`, a `tracing.TraceSink` fed by its writer thread), so a span holds exactly what the
row holds, never the raw prompt or a key. SQLite stays the local record; export runs beside it.

Out of the process: building spans and encoding them (the SDK's Python protobuf encoder,
~0.3 ms a span, two spans a call) would compete with the grid for the GIL. So the writer
thread only writes each batch of rows as one line of compact JSON to the pipe of an exporter
child (`python -m labkit.otel_export`, started on the first row), which builds the spans and
posts them with the SDK's `BatchSpanProcessor` (the span tree and attributes: that module).

- The child dies with its owner (`_child`: PR_SET_PDEATHSIG on Linux; its stdin is the data
  pipe, so an owner's death is also its EOF).
- `close()` (from `Client.close()` or at exit) closes the pipe and waits up to 10 s for the
  child to post what it holds, then kills it: nothing is lost in the normal case.
- Pipe writes never block the writer thread: the pipe is non-blocking and at most `MAX_PENDING`
  bytes wait for it. A child that died, or a backlog past that, drops rows (one warning, a
  count in `dropped`); calls and SQLite rows are never touched.
- The child's stderr (the SDK's export errors, e.g. a collector that is down) goes to an
  owner-only `otel-export.log` beside the trace database; an abnormal exit names it.
- Its environment is the OTEL_* variables plus what an HTTP client needs (PATH, locale, CA
  bundle, proxies): no API key rides along; header values from `headers_env` travel in the
  pipe's first line, not on argv or in env.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import subprocess
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from ._child import popen_owned, signal_name
from ._files import private_dir, private_file
from .errors import ConfigError

__all__ = ["OtelConfig", "SpanSink", "configured", "otel_sink", "span_sink"]

_log = logging.getLogger("labkit.otel")
_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PACKAGES = ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")
_CHILD_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TEMP", "TMP",
              "SYSTEMROOT", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "SSL_CERT_FILE",
              "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY",
              "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}  # fmt: skip
MAX_PENDING = 8 << 20
"""Bytes of rows that may wait for a full pipe; past that, batches are dropped."""
CLOSE_TIMEOUT_S = 10.0
PIPE_SIZE = 1 << 20


class OtelConfig(BaseModel):
    """The `otel:` section of `labkit.yaml` (or `Client(otel=OtelConfig(...))`). Every field
    left unset falls back to the standard OTEL_* environment variables."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None
    """OTLP/HTTP base URL, e.g. "http://127.0.0.1:6006" (Phoenix) or
    "https://cloud.langfuse.com/api/public/otel"; "/v1/traces" is appended. None: the
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT variables."""
    headers_env: dict[str, str] = Field(default_factory=dict)
    """Header name -> name of the environment variable holding its value (an Authorization
    token stays out of the file). OTEL_EXPORTER_OTLP_HEADERS works too."""
    service_name: str | None = None
    """`service.name` of the exported resource (default: OTEL_SERVICE_NAME, else "labkit")."""
    project: str | None = None
    """Phoenix project the spans go to (`openinference.project.name`); None: Phoenix's
    "default"."""
    content: bool = True
    """Export the redacted prompt and reply text (False: ids, models, usage and timings only)."""
    grace_s: float = Field(2.0, gt=0)
    """A call whose last attempt failed is sent after this long without a retry."""
    timeout_s: float = Field(10.0, gt=0)
    """HTTP timeout of one export request."""

    @classmethod
    def parse(cls, value: Any, where: str = "otel") -> OtelConfig | None:
        """From `Client(otel=...)` or labkit.yaml: True/False, an endpoint URL or a mapping."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, OtelConfig):
            return value
        if isinstance(value, str):
            return cls(endpoint=value)
        if isinstance(value, Mapping):
            from .models import _validate

            cfg: OtelConfig = _validate(cls, {**value}, where)
            return cfg
        raise ConfigError(
            f"expected true/false, an OTLP endpoint URL or a mapping, got {type(value).__name__}",
            where=where,
        )


def configured() -> OtelConfig | None:
    """Export settings from the environment alone: on when an OTLP endpoint is set (and
    OTEL_SDK_DISABLED is not true)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if any(os.environ.get(name) for name in _ENDPOINT_ENVS):
        return OtelConfig()
    return None


def otel_sink(
    value: Any, where: str = "otel", unset: bool = False, log_dir: str | Path | None = None
) -> SpanSink | None:
    """The sink for `Client(otel=...)` (or, when `unset`, labkit.yaml's `otel:` else the
    environment); None when export is off. `log_dir`: where the exporter's log goes."""
    cfg = OtelConfig.parse(value, where)
    if cfg is None and unset and value is None:
        cfg = configured()
        return None if cfg is None else span_sink(cfg, required=False, log_dir=log_dir)
    return None if cfg is None else span_sink(cfg, log_dir=log_dir)


def span_sink(
    cfg: OtelConfig, *, required: bool = True, log_dir: str | Path | None = None
) -> SpanSink | None:
    """A `SpanSink` for `cfg`. Without the OpenTelemetry packages: ConfigError with the install
    hint when `required` (export was asked for in code or labkit.yaml), else a warning (only
    the environment asked) and None."""
    try:
        return SpanSink(cfg, log_dir)
    except ImportError as exc:
        hint = "pip install 'labkit[otel]'"
        if required:
            raise ConfigError(f"OpenTelemetry export needs its packages: {hint} ({exc})") from exc
        import warnings

        warnings.warn(
            f"labkit: an OTLP endpoint is set in the environment but OpenTelemetry is not "
            f"installed ({hint}); traces stay in SQLite only.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in _CHILD_ENV or k.startswith("OTEL_")}


class SpanSink:
    """A `tracing.TraceSink` writing redacted rows to the exporter child (see the module doc)."""

    def __init__(self, cfg: OtelConfig, log_dir: str | Path | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        for package in _PACKAGES:  # checked without importing: the owner never loads the SDK
            try:
                version(package)
            except PackageNotFoundError:
                raise ImportError(f"{package} is not installed") from None
        self.cfg = cfg
        self._headers = {k: os.environ.get(env, "") for k, env in cfg.headers_env.items()}
        if self._headers:
            from .redact import add_secret

            for value in self._headers.values():
                add_secret(value)
        self.log_path = Path(".labkit" if log_dir is None else log_dir) / "otel-export.log"
        self.sent = 0
        """Rows handed to the exporter."""
        self.dropped = 0
        """Rows not exported: the exporter was gone or too far behind."""
        self.spans = 0
        """Spans the exporter reported posted (at its last flush or close)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._pending = bytearray()
        self._lock = threading.Lock()  # guards the pipe and `_pending`
        self._acks = threading.Condition()
        self._acked = self._asked = 0
        self._ready = threading.Event()
        self._exited = threading.Event()
        self._stopped: str | None = None  # why export stopped
        self._spawn_error: str | None = None
        self._closed = False
        self._warned = False
        atexit.register(self.close)  # after the trace store's last flush (registered later)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ------------------------------------------------------------------ rows in
    def export(self, rows: list[dict[str, Any]]) -> None:
        """Called in the trace writer thread: one pipe write, never blocking, never raising."""
        if not rows:
            if self._pending:
                with self._lock:
                    self._drain()
            return
        line = json.dumps(rows, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            if self._closed:
                return
            if self._proc is None and self._stopped is None:
                self._start()
            if self._stopped is None and self._exited.is_set():
                self._stop(self._exit_text())
            if self._stopped is not None:
                self.dropped += len(rows)
                return
            if len(self._pending) > MAX_PENDING:  # dropped while the backlog lasts
                self.dropped += len(rows)
                self._warn(
                    f"it is {len(self._pending) >> 20} MB of rows behind (a collector too slow "
                    "for this grid?); rows are dropped until it catches up",
                )
                return
            self._pending += line
            self.sent += len(rows)
            self._drain()

    def _start(self) -> None:
        """Spawn the exporter from a thread that lives as long as it (see `_child`)."""
        first = {"config": self.cfg.model_dump(), "headers": self._headers}
        self._pending += json.dumps(first).encode() + b"\n"
        try:
            private_dir(self.log_path.parent)
            private_file(self.log_path)
            log = self.log_path.open("ab")
        except OSError as exc:
            self._stop(f"its log {self.log_path} cannot be written ({exc})")
            return
        thread = threading.Thread(target=self._run, args=(log,), name="labkit-otel", daemon=True)
        thread.start()
        self._ready.wait(30)
        if self._proc is None:
            self._stop(self._spawn_error or "it did not start within 30 s")

    def _run(self, log: IO[bytes]) -> None:
        try:
            with log:
                proc = popen_owned(
                    "labkit.otel_export", [], env=_child_env(), stdout=subprocess.PIPE, stderr=log
                )
        except OSError as exc:
            self._spawn_error = f"the exporter process could not start ({exc})"
            self._ready.set()
            self._exited.set()
            return
        assert proc.stdin is not None and proc.stdout is not None
        self._fd = proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        with contextlib.suppress(Exception):  # a bigger pipe absorbs a burst (Linux)
            import fcntl

            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._proc = proc
        self._ready.set()
        for raw in proc.stdout:  # "flushed <n> <spans>" and "closed <spans>"
            words = raw.split()
            with self._acks:
                if len(words) == 3 and words[0] == b"flushed":
                    self._acked, self.spans = int(words[1]), int(words[2])
                elif len(words) == 2 and words[0] == b"closed":
                    self.spans = int(words[1])
                self._acks.notify_all()
        proc.wait()
        self._exited.set()
        with self._acks:
            self._acks.notify_all()

    def _drain(self) -> None:
        """Write what the pipe takes now (the caller holds `_lock`)."""
        while self._pending and self._fd >= 0 and self._stopped is None:
            try:
                n = os.write(self._fd, self._pending)
            except BlockingIOError:
                return
            except OSError:  # EPIPE: the exporter is gone
                self._exited.wait(1.0)
                self._stop(self._exit_text())
                return
            del self._pending[:n]

    def _exit_text(self) -> str:
        proc = self._proc
        code = proc.poll() if proc is not None else None
        how = f"was killed by {signal_name(code)}" if signal_name(code) else f"exited ({code})"
        tail = ""
        with contextlib.suppress(OSError):
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                lines = f.read().decode(errors="replace").strip().splitlines()
            tail = f" (its log ends: {lines[-1][-300:]!r})" if lines and code else ""
        return f"the exporter process (pid {self.pid}) {how}{tail}"

    def _stop(self, why: str) -> None:
        """Stop exporting for this client; rows from now on are counted in `dropped`."""
        self._stopped = why
        self._pending.clear()
        self._warn(
            f"{why}; spans of later calls are not exported (a new Client starts a fresh "
            f"exporter). Its log: {self.log_path}"
        )

    def _warn(self, why: str) -> None:
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            f"labkit: OpenTelemetry export: {why}. Every trace row stays in SQLite; rows not "
            "exported are counted in SpanSink.dropped.",
            RuntimeWarning,
            stacklevel=2,
        )

    # -------------------------------------------------------------------- end
    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the exporter has posted every row written so far (calls still open
        stay open); False if it could not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._proc is None or self._stopped is not None:
                return self._proc is None and self._stopped is None
            self._asked += 1
            asked = self._asked
            self._pending += b'{"flush":%d}\n' % asked
            self._drain()
        while time.monotonic() < deadline:
            with self._acks:
                if self._acked >= asked:
                    return True
                if self._exited.is_set():
                    return False
                self._acks.wait(0.05)
            if self._pending:
                with self._lock:
                    self._drain()
        return False

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close the pipe and let the exporter post what it holds (ending the calls still
        open), for at most `timeout_s`, then kill it. Idempotent, never raises."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._closed:
                return
            self._closed = True
            proc = self._proc
            if proc is None:
                return
            while self._pending and self._stopped is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [self._fd], [], 0.1)
                self._drain()
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        if not self._exited.wait(max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            self._exited.wait(5.0)
            _log.warning(
                "labkit otel: the exporter did not finish posting within %.0f s (a collector "
                "down or slow?) and was stopped; see %s",
                timeout_s,
                self.log_path,
            )
        elif proc.returncode and self._stopped is None:
            _log.warning("labkit otel: %s; see %s", self._exit_text(), self.log_path)
        if self.dropped:
            _log.warning("labkit otel: %d trace row(s) were not exported", self.dropped)
