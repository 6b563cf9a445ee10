"""The prompt as sent: the messages a model will see for any item, before a single call.

Why: labkit appends JSON instructions to a structured prompt, and what the model reads is the
user's template *and* those instructions. A clash between the two ("Answer with one word" then
"Answer with one JSON object") or a format example the model copies is only visible in the
messages as sent, so the preview builds them with the call path's own `Client.prepare` (no
I/O, nothing sent) and marks labkit's part. Beside it: the grid's size, an estimate of its
input tokens (the call path's own estimator), the output-token bound (`max_tokens` per call),
and the cost that implies at the registry's prices ("free: local model" for the embedded one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._common import Notice, esc, guarded, html_table

if TYPE_CHECKING:
    import pandas as pd

    from ..client import Client

__all__ = ["PromptPreview", "grid_estimate", "messages_as_sent"]


def messages_as_sent(
    client: Client,
    template: str,
    variables: Mapping[str, Any],
    model: str,
    *,
    schema: Any = None,
    system: str | None = None,
    confidence: bool = True,
    params: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The messages `generate` would send for these arguments (nothing is sent)."""
    p = client.prepare(
        template=template,
        variables=dict(variables),
        model=model,
        schema=schema,
        system=system,
        confidence=confidence,
        **dict(params or {}),
    )
    return [dict(m) for m in p.messages]


@dataclass(frozen=True)
class _Row:
    variant: str
    calls: int
    input_tokens: int
    output_tokens_max: int
    cost: str


def grid_estimate(
    client: Client,
    records: Sequence[Mapping[str, Any]],
    prompts: Mapping[str, str],
    models: Sequence[str],
    *,
    schema: Any = None,
    system: str | None = None,
    params: Mapping[str, Any] | None = None,
    repeats: int = 1,
) -> pd.DataFrame:
    """Per variant: calls, estimated input tokens, output-token bound and the cost they imply.

    Input tokens use `labkit.context.estimate_tokens` on the messages as sent; the output
    bound is `max_tokens` per call (the most a run can be billed for).
    """
    import pandas as pd

    from ..context import estimate_tokens
    from ..experiments.runner import variant_name
    from ..usage import money

    params = dict(params or {})
    max_out = int(params.get("max_tokens") or 0)
    rows = []
    for model in models:
        info = client.registry.info(client.registry.resolve(model, profile=client.profile).model)
        for name, template in prompts.items():
            tokens = 0
            for rec in records:
                variables = {k: v for k, v in rec.items() if k not in ("id", "expected")}
                msgs = messages_as_sent(
                    client, template, variables, model, schema=schema, system=system, params=params
                )
                tokens += estimate_tokens(msgs)
            calls = len(records) * repeats
            tokens *= repeats
            price_in, price_out = info.input_cost_per_token, info.output_cost_per_token
            if price_in is None and price_out is None:
                cost = "unknown (no price in the registry)"
            elif not price_in and not price_out:
                cost = "free: local model" if model.startswith("local/") else "free"
            else:
                cost = "up to " + money(
                    tokens * (price_in or 0) + calls * max_out * (price_out or 0)
                )
            rows.append(_Row(variant_name(name, model), calls, tokens, calls * max_out, cost))
    return pd.DataFrame([r.__dict__ for r in rows])


class PromptPreview:
    """Pick an item, a prompt variant and a model; see the messages exactly as sent, labkit's
    JSON instructions marked, and the grid's size, token and cost estimate.

    `source` is a callable returning the current (client, records, prompts, models, schema,
    params) (the builder passes its form), or use `set(...)` directly.
    """

    def __init__(self, source: Any = None) -> None:
        import ipywidgets as w

        self.source = source
        self.notice = Notice()
        self.item = w.Dropdown(description="item", layout=w.Layout(width="220px"))
        self.prompt = w.Dropdown(description="prompt", layout=w.Layout(width="260px"))
        self.model = w.Dropdown(description="model", layout=w.Layout(width="320px"))
        self.refresh_button = w.Button(
            description="Refresh", icon="refresh", tooltip="rebuild from the form",
            layout=w.Layout(width="100px"),
        )  # fmt: skip
        self.messages = w.HTML()
        self.estimate = w.HTML()
        self._ctx: dict[str, Any] = {}
        show = guarded(self.notice, lambda _: self.show())
        for c in (self.item, self.prompt, self.model):
            c.observe(show, names="value")
        self.refresh_button.on_click(guarded(self.notice, lambda _: self.refresh()))
        self.widget = w.VBox(
            [
                w.HTML(
                    "<b>Prompt as sent</b> <span style='font-size:12px;color:#777'>the "
                    "messages the model will see, nothing is sent</span>"
                ),
                w.HBox([self.item, self.prompt, self.model, self.refresh_button]),
                self.notice.widget,
                self.messages,
                self.estimate,
            ],
            layout=w.Layout(padding="6px"),
        )
        self.widget.add_class("labkit-preview")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def refresh(self) -> None:
        """Re-read the source (the builder's form) and redraw."""
        if self.source is None:
            raise ValueError("nothing to preview: no form is connected")
        self.set(**self.source())

    def set(
        self,
        client: Client,
        records: Sequence[Mapping[str, Any]],
        prompts: Mapping[str, str],
        models: Sequence[str],
        schema: Any = None,
        params: Mapping[str, Any] | None = None,
        system: str | None = None,
        repeats: int = 1,
    ) -> None:
        """Preview these prompts on these records and models."""
        self._ctx = {
            "client": client, "records": list(records), "prompts": dict(prompts),
            "models": list(models), "schema": schema, "params": dict(params or {}),
            "system": system, "repeats": repeats,
        }  # fmt: skip
        self._quiet = True
        try:
            for box, options in (
                (self.item, [str(r.get("id", i)) for i, r in enumerate(self._ctx["records"])]),
                (self.prompt, list(self._ctx["prompts"])),
                (self.model, list(self._ctx["models"])),
            ):
                keep = box.value
                box.options = options
                box.value = keep if keep in options else (options[0] if options else None)
        finally:
            self._quiet = False
        self.show()
        table = grid_estimate(
            client, self._ctx["records"], self._ctx["prompts"], self._ctx["models"],
            schema=schema, system=system, params=params, repeats=repeats,
        )  # fmt: skip
        total = int(table["calls"].sum()) if len(table) else 0
        self.estimate.value = (
            f"<div style='font-size:12px;margin-top:6px'><b>grid</b>: {len(self._ctx['records'])} items × "
            f"{len(prompts)} prompts × {len(models)} models × {repeats} repeats = {total} calls. "
            "Input tokens are estimated from the text; output is bounded by max_tokens.</div>"
            + html_table(table)
        )

    _quiet = False

    def show(self) -> None:
        if self._quiet or not self._ctx:
            return
        ctx = self._ctx
        ids = list(self.item.options)
        if not ids or self.prompt.value is None or self.model.value is None:
            self.messages.value = "<i>nothing to preview: add a dataset, a prompt and a model</i>"
            return
        rec = ctx["records"][ids.index(self.item.value)]
        variables = {k: v for k, v in rec.items() if k not in ("id", "expected")}
        template = ctx["prompts"][self.prompt.value]
        msgs = messages_as_sent(
            ctx["client"], template, variables, str(self.model.value), schema=ctx["schema"],
            system=ctx["system"], params=ctx["params"],
        )  # fmt: skip
        self.messages.value = render_messages(msgs, ctx["schema"])


def render_messages(messages: Sequence[Mapping[str, Any]], schema: Any) -> str:
    """Messages as role + text blocks, labkit's JSON instructions marked off."""
    from ..structured import json_instructions

    added = json_instructions(schema) if schema is not None else ""
    blocks = []
    for m in messages:
        text = str(m.get("content", ""))
        body = esc(text)
        if added and text.endswith(added):
            own = esc(text[: -len(added)])
            body = (
                f"{own}<span class='labkit-instructions' style='background:#eef6fb;"
                "display:block;border-left:3px solid #31708f;padding-left:4px' "
                "title='added by labkit because a schema is set'>"
                f"{esc(added)}</span>"
            )
        blocks.append(
            f"<div style='font-size:11px;color:#777;margin-top:4px'>{esc(m.get('role'))}</div>"
            "<pre class='labkit-message' style='white-space:pre-wrap;margin:0;padding:4px;"
            f"background:#f7f7f7;font-size:12px'>{body}</pre>"
        )
    note = (
        "<div style='font-size:11px;color:#31708f'>blue: the JSON instructions labkit appends "
        "because an output schema is set</div>"
        if added
        else ""
    )
    return "".join(blocks) + note
