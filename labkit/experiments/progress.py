"""Progress of a grid run: the numbers (`ProgressState`) and two ways to show them.

A Jupyter kernel gets an ipywidgets bar (`IntProgress` + an HTML label, and a Stop button when
the run can be stopped); anything else gets one `\\r`-rewritten line on stderr. Both redraw at
most every `min_interval` seconds, so a 2,000-call grid does not spend its time drawing, and
always draw the final state. ipywidgets is imported only when a kernel is detected.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from ..usage import money

__all__ = ["ProgressBar", "ProgressState", "TextBar", "WidgetBar", "in_notebook", "make_bar"]


@dataclass(frozen=True)
class ProgressState:
    """A snapshot of a run, passed to every `Experiment.on_progress` callback."""

    done: int
    """Cells finished (answered or failed)."""
    total: int
    """Cells planned."""
    errors: int
    """Cells that ended in an error row."""
    cost_usd: float
    """Cost of the finished cells (cache hits report their original cost)."""
    cache_hits: int
    """Cells answered from labkit's cache."""
    elapsed_s: float
    """Seconds since the run started."""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        """Naive remaining time at the rate so far; None before the first cell finishes."""
        if self.done == 0 or self.elapsed_s <= 0:
            return None
        return (self.total - self.done) * self.elapsed_s / self.done

    def describe(self) -> str:
        """One line: '37/120 · 2 errors · $0.0123 · 10 cached · 4.2 s'."""
        parts = [f"{self.done}/{self.total}"]
        parts.append(f"{self.errors} error{'s' if self.errors != 1 else ''}")
        parts.append(money(self.cost_usd, zero="$0"))
        parts.append(f"{self.cache_hits} cached")
        parts.append(f"{self.elapsed_s:.1f} s")
        eta = self.eta_s
        if eta is not None and self.done < self.total:
            parts.append(f"~{eta:.0f} s left")
        return " · ".join(parts)


class ProgressBar(Protocol):
    """What the runner drives: `update` after each cell, `close` once at the end."""

    def update(self, state: ProgressState) -> None: ...

    def close(self, state: ProgressState, status: str = "done") -> None: ...


class TextBar:
    """A single-line text bar rewritten with `\\r` (stderr by default). When the stream is not
    a terminal (CI logs, files), it writes a plain line every `log_interval` seconds instead, so
    logs stay readable."""

    def __init__(
        self, label: str = "", *, stream: TextIO | None = None, width: int = 24,
        min_interval: float = 0.1, log_interval: float = 10.0,
    ) -> None:  # fmt: skip
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.min_interval = min_interval if self.tty else log_interval
        self._last = 0.0
        self._drawn = 0

    def _draw(self, state: ProgressState, status: str = "") -> None:
        filled = round(self.width * state.fraction)
        bar = "#" * filled + "." * (self.width - filled)
        head = f"{self.label} " if self.label else ""
        tail = f" · {status}" if status else ""
        line = f"{head}[{bar}] {state.describe()}{tail}"
        pad = " " * max(0, self._drawn - len(line))
        self._drawn = len(line)
        text = f"\r{line}{pad}" if self.tty else f"{line}\n"
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream must not fail the run
            pass

    def update(self, state: ProgressState) -> None:
        now = time.monotonic()
        if self._last == 0.0 and not self.tty:  # in a log, the first line after log_interval
            self._last = now
        if now - self._last >= self.min_interval or (self.tty and state.done >= state.total):
            self._last = now
            self._draw(state)

    def close(self, state: ProgressState, status: str = "done") -> None:
        self._draw(state, status)
        if not self.tty:
            return
        try:
            self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


class WidgetBar:
    """ipywidgets bar for notebooks: progress, a label with errors and cost, an optional Stop."""

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        on_stop: Callable[[], None] | None = None,
        min_interval: float = 0.1,
    ) -> None:
        import ipywidgets as w
        from IPython.display import display

        self.label = label
        self.min_interval = min_interval
        self._last = 0.0
        self.bar = w.IntProgress(value=0, min=0, max=max(total, 1), bar_style="info")
        self.text = w.HTML(value=html.escape(f"{label} 0/{total}"))
        children: list[Any] = [self.bar, self.text]
        self.stop_button: Any = None
        if on_stop is not None:
            self.stop_button = w.Button(
                description="Stop",
                icon="stop",
                tooltip="Finish the calls in flight, skip the rest (finished rows are kept)",
                layout=w.Layout(width="80px"),
            )

            def clicked(_: Any) -> None:
                self.stop_button.disabled = True
                self.stop_button.description = "Stopping"
                on_stop()

            self.stop_button.on_click(clicked)
            children.append(self.stop_button)
        self.box = w.HBox(children)
        display(self.box)

    def _draw(self, state: ProgressState, status: str = "") -> None:
        self.bar.value = state.done
        head = f"<b>{html.escape(self.label)}</b> " if self.label else ""
        tail = f" · {html.escape(status)}" if status else ""
        self.text.value = f"{head}{html.escape(state.describe())}{tail}"

    def update(self, state: ProgressState) -> None:
        now = time.monotonic()
        if now - self._last >= self.min_interval or state.done >= state.total:
            self._last = now
            self._draw(state)

    def close(self, state: ProgressState, status: str = "done") -> None:
        self._draw(state, status)
        ok = status == "done" and state.errors == 0
        self.bar.bar_style = "success" if ok else ("warning" if status == "done" else "danger")
        if self.stop_button is not None:
            self.stop_button.disabled = True


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not plain IPython in a terminal, not a script)."""
    ipython_mod = sys.modules.get("IPython")
    if ipython_mod is None:
        return False
    try:
        shell = ipython_mod.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def make_bar(
    total: int, label: str = "", *, on_stop: Callable[[], None] | None = None
) -> ProgressBar:
    """A widget bar in a kernel (text bar if ipywidgets is missing), else a text bar."""
    if in_notebook():
        try:
            return WidgetBar(total, label, on_stop=on_stop)
        except ImportError:
            pass
    return TextBar(label)
