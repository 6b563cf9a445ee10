"""The prompt-variant editor of the experiment builder: named templates, checked as you type.

Why live: a `{{variable}}` the dataset has no column for, an empty prompt or two variants with
the same name would each fail the run (or worse, run and measure nothing). Checking on every
keystroke against the loaded dataset's columns puts the message under the very line to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from ._common import Notice, esc, guarded

__all__ = ["PromptEditor", "PromptRow"]


class PromptRow:
    """One prompt variant: name, template, and the live check line under it."""

    def __init__(self, name: str, template: str, on_change: Any, on_remove: Any) -> None:
        import ipywidgets as w

        self.name = w.Text(value=name, description="name", layout=w.Layout(width="260px"))
        self.template = w.Textarea(
            value=template,
            placeholder="Template with {{column}} placeholders, e.g. Classify: {{review}}",
            layout=w.Layout(width="100%", height="90px"),
            continuous_update=True,
        )
        self.check = w.HTML()
        self.remove = w.Button(description="remove", icon="trash", layout=w.Layout(width="90px"))
        self.name.observe(on_change, names="value")
        self.template.observe(on_change, names="value")
        self.remove.on_click(lambda _: on_remove(self))
        self.widget = w.VBox(
            [w.HBox([self.name, self.remove]), self.template, self.check],
            layout=w.Layout(border="1px solid #eee", padding="4px", margin="2px 0"),
        )


class PromptEditor:
    """Rows of named templates; `columns()` gives the dataset's input columns (None: no data)."""

    def __init__(self, columns: Callable[[], list[str] | None], notice: Notice) -> None:
        import ipywidgets as w

        self.columns = columns
        self.notice = notice
        self.on_checked: Callable[[], Any] | None = None
        """Called after every check (the builder re-validates its Run button)."""
        self.rows: list[PromptRow] = []
        self.box = w.VBox()
        self.add_button = w.Button(
            description="add variant", icon="plus", layout=w.Layout(width="120px")
        )
        self.add_button.on_click(guarded(notice, lambda _: self.add_variant()))
        self.widget = w.VBox([self.box, self.add_button])

    def set_prompts(self, prompts: Mapping[str, str]) -> None:
        """Replace the variants with {name: template}."""
        for row in self.rows:
            row.widget.close()
        self.rows = []
        for name, template in prompts.items():
            self._add_row(name, template)
        self._sync()

    def add_variant(self, name: str | None = None, template: str = "") -> None:
        names = {r.name.value for r in self.rows}
        n = len(self.rows) + 1
        while name is None or name in names:
            name, n = f"variant{n}", n + 1
        self._add_row(name, template)
        self._sync()

    def _add_row(self, name: str, template: str) -> None:
        on_change = guarded(self.notice, lambda _: self.check())
        self.rows.append(PromptRow(name, template, on_change, self._remove_row))

    def _remove_row(self, row: PromptRow) -> None:
        if row in self.rows:
            self.rows.remove(row)
            row.widget.close()
        self._sync()

    def _sync(self) -> None:
        self.box.children = [r.widget for r in self.rows]
        self.check()

    def prompts(self) -> dict[str, str]:
        """The variants as {name: template}, as the form shows them."""
        return {r.name.value.strip(): r.template.value for r in self.rows}

    def problems(self) -> list[tuple[str, list[str]]]:
        """(name, what stops it from running) per row, in row order (empty list = fine)."""
        from ..prompts import template_variables

        columns = self.columns()
        names = [r.name.value.strip() for r in self.rows]
        out: list[tuple[str, list[str]]] = []
        for i, (row, name) in enumerate(zip(self.rows, names, strict=True), 1):
            problems: list[str] = []
            text = row.template.value
            if not name:
                problems.append("the variant needs a name")
            elif names.count(name) > 1:
                problems.append(f"another variant is also called {name!r}; names must differ")
            if not text.strip():
                problems.append("empty prompt: write a template using {{column}} placeholders")
            variables = sorted(template_variables(text))
            if columns is None:
                if variables:
                    problems.append("load a dataset to check the template variables")
            else:
                problems += _variable_problems(variables, columns)
                if text.strip() and not variables:
                    problems.append(
                        "no {{column}} placeholder: every item would get the same prompt"
                    )
            out.append((name or f"(unnamed #{i})", problems))
        return out

    def check(self) -> list[tuple[str, list[str]]]:
        """Recheck every row and redraw the line under each; returns `problems()`."""
        from ..prompts import template_variables

        problems = self.problems()
        for row, (_, issues) in zip(self.rows, problems, strict=True):
            if issues:
                row.check.value = "".join(
                    f"<div style='color:#a94442;font-size:12px'>✗ {esc(p)}</div>" for p in issues
                )
            else:
                used = sorted(template_variables(row.template.value))
                row.check.value = (
                    "<div style='color:#2e7d32;font-size:12px'>✓ variables: "
                    + ", ".join(f"<code>{{{{{esc(v)}}}}}</code>" for v in used)
                    + "</div>"
                )
        if self.on_checked is not None:
            self.on_checked()
        return problems


def _variable_problems(variables: list[str], columns: list[str]) -> list[str]:
    out = []
    for var in variables:
        root = var.split(".")[0]
        if root == "expected":
            out.append("{{expected}} would show the model the answer; use input columns only")
        elif root not in columns:
            close = difflib.get_close_matches(root, columns, n=1)
            hint = f"; did you mean {{{{{close[0]}}}}}?" if close else ""
            out.append(
                f"unknown template variable {{{{{var}}}}}: the dataset has no column "
                f"{root!r}{hint} (columns: {', '.join(columns)})"
            )
    return out
