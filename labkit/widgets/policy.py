"""Circuit-breaker and rate-limit panel: each model's state, live while a run is going.

Why: when a grid slows down or fills with errors, the first question is whether a provider is
rate-limiting us or a breaker has opened and the calls are being failed fast (or served by a
fallback). `client.policy.breaker_states()` and `limiter_states()` are cheap snapshots, so the
panel polls them on a daemon thread while "live" is on, and redraws only when something changed.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ._common import Notice, esc, guarded, html_table

if TYPE_CHECKING:
    import pandas as pd

    from ..client import Client

__all__ = ["PolicyPanel"]

_STATE_COLORS = {"closed": "#2e7d32", "half_open": "#e69500", "open": "#c62828"}


class PolicyPanel:
    """Breaker state, failures, cooldown, concurrency and rate-limit headroom per model."""

    def __init__(self, client: Client | None = None, *, interval: float = 1.0, live: bool = False):
        import ipywidgets as w

        from ..client import default_client

        self.client = client or default_client()
        self.interval = interval
        self.notice = Notice()
        self.table = w.HTML()
        self.refresh_button = w.Button(
            description="Refresh", icon="refresh", layout=w.Layout(width="100px")
        )
        self.live = w.Checkbox(
            value=False, description="live", indent=False, layout=w.Layout(width="80px")
        )
        self.refresh_button.on_click(guarded(self.notice, lambda _: self.refresh()))
        self.live.observe(guarded(self.notice, self._live_changed), names="value")
        self.widget = w.VBox(
            [
                w.HBox(
                    [
                        w.HTML("<b>Circuit breakers and rate limits</b>"),
                        self.refresh_button,
                        self.live,
                    ]
                ),
                self.notice.widget,
                self.table,
                w.HTML(
                    "<div style='font-size:11px;color:#777'>failures: consecutive failed calls "
                    "(the breaker opens at its threshold) · failure_rate: share of failed calls in "
                    "the sliding window, which starts afresh when the breaker opens</div>"
                ),
            ],
            layout=w.Layout(border="1px solid #ddd", padding="6px"),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        guarded(self.notice, self.refresh)()
        if live:
            self.live.value = True

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def states(self) -> pd.DataFrame:
        """One row per model the policy has seen: breaker and limiter snapshots side by side."""
        import pandas as pd

        breakers = self.client.policy.breaker_states()
        limiters = self.client.policy.limiter_states()
        rows = []
        for model in sorted(set(breakers) | set(limiters)):
            b: dict[str, Any] = breakers.get(model, {})
            lim: dict[str, Any] = limiters.get(model, {})
            rows.append(
                {
                    "model": model,
                    "breaker": b.get("state", "closed"),
                    "failures": b.get("failures", 0),
                    "failure_rate": _window_rate(b),
                    "retry_in_s": b.get("retry_in"),
                    "opens": b.get("opens", 0),
                    "in_flight": lim.get("in_flight", 0),
                    "queued": lim.get("queued", 0),
                    "concurrency": lim.get("concurrency_limit"),
                    "rpm_left": _headroom(lim.get("rpm_available"), lim.get("rpm")),
                    "tpm_left": _headroom(lim.get("tpm_available"), lim.get("tpm")),
                    "blocked_s": lim.get("blocked_for", 0.0),
                }
            )
        return pd.DataFrame(rows)

    def render(self) -> str:
        df = self.states()
        return html_table(
            df,
            max_rows=100,
            formats={
                "breaker": lambda s: (
                    f"<b style='color:{_STATE_COLORS.get(str(s), '#333')}'>{esc(s)}</b>"
                ),
                "failure_rate": lambda v: esc(v),
                "retry_in_s": lambda v: "" if not v else f"{float(v):.1f}",
                "blocked_s": lambda v: "" if not v else f"{float(v):.1f}",
                "concurrency": lambda v: "unlimited" if v is None else esc(v),
            },
            empty="no model called yet: states appear after the first call",
        )

    def refresh(self) -> None:
        markup = self.render()
        if markup != self.table.value:
            self.table.value = markup

    # ----------------------------------------------------------------- live
    def _live_changed(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.start()
        else:
            self.stop()

    def start(self) -> None:
        """Poll every `interval` seconds on a daemon thread until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="labkit-policy-panel", daemon=True)
        self._thread.start()
        if not self.live.value:
            self.live.value = True

    def stop(self) -> None:
        self._stop.set()
        if self.live.value:
            self.live.value = False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # keep polling; say what went wrong once
                self.notice.error(exc)


def _window_rate(b: dict[str, Any]) -> str:
    """The breaker's windowed failure rate with its base; "—" when the window is empty (it
    restarts when the breaker opens, which is why 3 failures can sit beside no rate)."""
    calls = int(b.get("window_calls") or 0)
    if not calls:
        return "— (no calls in the window)" if b.get("failures") else ""
    return f"{float(b.get('failure_rate') or 0):.0%} of {calls} calls"


def _headroom(available: Any, limit: Any) -> str:
    if limit is None:
        return ""
    return f"{float(available or 0):.0f}/{float(limit):.0f}"
