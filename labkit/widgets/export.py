""" "Export winner": write the winning variant as a deployable config, with its evidence in view.

Why the evidence sits next to the button: exporting is a claim ("this prompt on this model is
the one to ship"), and the claim is only as good as the numbers behind it — the success rate
with its interval, how many items, and the paired difference to every other variant. The
panel shows them before the click, and the saved config carries them (`labkit.deploy`), so the
file that reaches production says why it won.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import Notice, esc, guarded, html_table, pre

if TYPE_CHECKING:
    from ..experiments.results import Results

__all__ = ["ExportPanel"]

BEST = "best variant"


class ExportPanel:
    """Pick the best (or any) variant, see its evidence, write the config to `path`."""

    def __init__(
        self,
        results: Results,
        *,
        path: str = "winner.yaml",
        metric: str = "success_rate",
        constraints: dict[str, Any] | None = None,
    ) -> None:
        import ipywidgets as w

        self.results = results
        self.metric = metric
        self.constraints = constraints
        self.notice = Notice()
        self.saved: Any = None
        """The config as saved by the last export (a `labkit.deploy.DeployedConfig`)."""
        self.winner: Any = None
        """The `labkit.gate.Winner` behind "best variant" (its `table` says why others lost)."""
        self.variant = w.Dropdown(
            description="variant",
            options=[BEST, *results.variants],
            value=BEST,
            layout=w.Layout(width="420px"),
        )
        self.path = w.Text(value=path, description="file", layout=w.Layout(width="320px"))
        self.export_button = w.Button(
            description="Export winner",
            icon="download",
            button_style="primary",
            layout=w.Layout(width="150px"),
        )
        self.allow = w.Checkbox(
            description="allow a degenerate variant (constant answers, no lift over the baseline)",
            value=False,
            indent=False,
            layout=w.Layout(width="520px"),
        )
        self.warnings = w.HTML()
        self.evidence = w.HTML()
        self.written = w.HTML()
        self._modes: Any = None
        self.variant.observe(guarded(self.notice, lambda _: self.show_evidence()), names="value")
        self.allow.observe(guarded(self.notice, lambda _: self.show_evidence()), names="value")
        self.export_button.on_click(guarded(self.notice, lambda _: self.export_clicked()))
        self.widget = w.VBox(
            [
                w.HTML("<b>Export winner</b>"),
                w.HBox([self.variant, self.path, self.export_button]),
                self.allow,
                self.notice.widget,
                self.warnings,
                self.evidence,
                self.written,
            ],
            layout=w.Layout(padding="6px"),
        )
        self.widget.add_class("labkit-export")
        guarded(self.notice, self.show_evidence)()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ----------------------------------------------------------------- choice
    def chosen(self) -> str:
        """The variant the export would write: the picked one, or `Results.best()`."""
        if self.variant.value != BEST:
            return str(self.variant.value)
        self.winner = self.results.best(
            metric=self.metric, constraints=self.constraints, allow_degenerate=self.allow.value
        )
        return str(self.winner.variant)

    def failure_modes(self) -> Any:
        """`labkit.experiments.diagnostics.failure_modes` of the results (computed once)."""
        if self._modes is None:
            from ..experiments.diagnostics import failure_modes

            own = getattr(self.results, "failure_modes", None)
            self._modes = own() if callable(own) else failure_modes(self.results)
        return self._modes

    def refuse_degenerate(self, variant: str) -> None:
        """Raise DegenerateVariant when `variant` is degenerate and the override is off."""
        from ..errors import DegenerateVariant

        reasons = self.failure_modes().reasons(variant)
        if reasons and not self.allow.value:
            raise DegenerateVariant(
                f"{variant!r} will not be exported: " + "; ".join(reasons) + ". Fix the "
                "prompt, pick another variant, or tick 'allow a degenerate variant'.",
                {variant: reasons},
            )

    def evidence_frame(self, variant: str) -> tuple[Any, Any]:
        """(success table of every variant, paired comparisons of `variant` vs each other)."""
        from ..experiments import stats
        from ..experiments.diagnostics import own_answers

        df = self.results.df
        rates = stats.success_rates(df)
        cost = stats.cost_summary(df)[["variant", "cost_per_success", "total_cost"]]
        table = rates.merge(cost, on="variant", how="left")
        pairs = None
        if len(self.results.variants) > 1:
            own, _ = own_answers(df, self.results.variants)  # as Results.compare does
            pairs = stats.pairwise_comparisons(own, baseline=variant)
        return table, pairs

    def show_evidence(self) -> None:
        if self.results.df.empty:
            self.evidence.value = "<i>no rows: nothing to export</i>"
            return
        self.warnings.value = ""
        modes = self.failure_modes()
        flagged = [
            f"<b>{esc(r['variant'])}</b>: " + "; ".join(esc(x) for x in r["warnings"])
            for r in modes.table.to_dict("records")
            if r["warnings"]
        ]
        if flagged:
            self.warnings.value = (
                "<div class='labkit-notice labkit-warn labkit-failure-modes' style='padding:4px 8px;"
                "border-left:3px solid #8a6d3b;background:#fcf8e3;color:#8a6d3b;font-size:12px'>"
                "⚠ " + "<br>⚠ ".join(flagged) + "</div>"
            )
        variant = self.chosen()  # raises DegenerateVariant when every variant is degenerate
        table, pairs = self.evidence_frame(variant)
        base = modes.table[["variant", "baseline"]]
        table = table.merge(base, on="variant", how="left")
        shown = table[
            ["variant", "n", "rate", "ci_low", "ci_high", "baseline", "errors", "cost_per_success"]
        ]
        parts = [
            f"<div style='font-size:12px'>candidate: <b>{esc(variant)}</b>"
            + (
                f" (best by {esc(self.metric)}"
                + (f" under {esc(self.constraints)}" if self.constraints else "")
                + ")"
                if self.variant.value == BEST
                else ""
            )
            + "</div>",
            html_table(
                shown,
                formats={
                    "rate": lambda v: f"{v:.0%}" if v == v else "",
                    "ci_low": lambda v: f"{v:.0%}" if v == v else "",
                    "ci_high": lambda v: f"{v:.0%}" if v == v else "",
                    "baseline": lambda v: f"{v:.0%}" if v == v else "",
                    "cost_per_success": lambda v: f"${v:.5f}" if v == v else "",
                },
                row_style=lambda r: (
                    "font-weight:bold;background:#eef6fb" if r["variant"] == variant else ""
                ),
            ),
        ]
        if pairs is not None and not pairs.empty:
            from ..experiments.diagnostics import significant

            lines = []
            for r in pairs.to_dict("records"):
                diff = -float(r["diff"])  # rows are (other − candidate); show candidate − other
                sig = significant({"ci_low": r["ci_low"], "ci_high": r["ci_high"]})
                lines.append(
                    f"vs {esc(r['a'])}: {diff:+.0%} (95% CI {-float(r['ci_high']):+.0%} to "
                    f"{-float(r['ci_low']):+.0%}) on {int(r['n_items'])} items · "
                    + ("✓ significant (the interval excludes 0)" if sig else "not significant")
                )
            parts.append(
                "<div style='font-size:12px;line-height:1.5;margin-top:4px'><i>paired "
                "differences (candidate − other):</i><br>" + "<br>".join(lines) + "</div>"
            )
        self.evidence.value = "".join(parts)
        self.notice.clear()
        try:
            self.refuse_degenerate(variant)
        except Exception as exc:  # shown before the click, and raised again on it
            self.notice.warn(str(exc))

    # ----------------------------------------------------------------- export
    def export_clicked(self) -> Any:
        """What the button does: write the config (a new version if the file exists)."""
        path = self.path.value.strip()
        if not path:
            raise ValueError("name the file to write, e.g. winner.yaml")
        from ..artifact import read_config

        variant = None if self.variant.value == BEST else str(self.variant.value)
        self.refuse_degenerate(variant or self.chosen())
        kwargs: dict[str, Any] = {"metric": self.metric, "allow_degenerate": self.allow.value}
        if variant is None and self.constraints:
            kwargs["constraints"] = self.constraints
        with warnings.catch_warnings(record=True) as caught:  # shown here, not in a log
            warnings.simplefilter("always")
            written = Path(self.results.export_config(path, variant=variant, **kwargs))
        saved = read_config(written)
        self.saved = saved
        notes = "".join(f"\nnote: {w.message}" for w in caught)
        self.notice.ok(
            f"wrote {written} (version {saved.version}, {saved.name} on {saved.model}); "
            f"load it in production with labkit.deploy.load_config{notes}"
        )
        parts = []
        if saved.evidence is not None:
            parts += [
                "<b style='font-size:12px'>evidence saved with it</b>",
                pre(saved.evidence.model_dump(exclude_none=True)),
            ]
        parts += [
            f"<b style='font-size:12px'>{esc(written)}</b>",
            pre(written.read_text(encoding="utf-8"), max_height="320px"),
        ]
        self.written.value = "".join(parts)
        return saved
