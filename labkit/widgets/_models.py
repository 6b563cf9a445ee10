"""The builder's model notes: what each picked alias or id resolves to, its JSON mode, context
window and price, under the active profile, and after a run which models failed how often
(kept apart so the builder stays one screen of form logic)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import describe_error, esc

if TYPE_CHECKING:
    from ..client import Client


def models_html(client: Client, picked: list[str]) -> str:
    """HTML beside the model list: each pick's targets per profile, or its capabilities."""
    reg = client.registry
    try:
        active = reg.profile(client.profile)
    except Exception as exc:  # a bad LABKIT_PROFILE must not break the form
        return f"<span style='color:#a94442'>{esc(describe_error(exc))}</span>"
    if not picked:
        return (
            "<div style='font-size:12px;color:#777'>select one or more models "
            f"(ctrl/shift-click); active profile: <b>{esc(active)}</b></div>"
        )
    lines = [f"active profile: <b>{esc(active)}</b>"]
    for name in picked:
        if name in reg.aliases:
            cfg = reg.aliases[name]
            targets = " · ".join(
                f"{'<b>' if p == active else ''}{p}: {esc(_target(cfg.target(p)))}"
                f"{'</b>' if p == active else ''}"
                for p in ("dev", "staging", "prod")
            )
            lines.append(f"<code>{esc(name)}</code> (alias) → {targets}")
        else:
            info = reg.info(name)
            facts = [
                "JSON mode" if info.json_mode else "free text",
                f"context {info.context_window}" if info.context_window else "",
                _price(info.input_cost_per_token, info.output_cost_per_token),
            ]
            lines.append(f"<code>{esc(name)}</code>: " + ", ".join(esc(f) for f in facts if f))
    return (
        "<div style='font-size:12px;line-height:1.5;padding-left:8px'>"
        + "<br>".join(lines)
        + "</div>"
    )


def _target(target: Any) -> str:
    if isinstance(target, dict):
        return " / ".join(f"{m} {w:g}" for m, w in target.items())
    return str(target)


def _price(cost_in: float | None, cost_out: float | None) -> str:
    if cost_in is None and cost_out is None:
        return ""
    if not cost_in and not cost_out:
        return "free"
    return f"${(cost_in or 0) * 1e6:.2f} / ${(cost_out or 0) * 1e6:.2f} per 1M tokens in/out"


def error_summary(df: Any) -> str:
    """Which models failed how often, with the first message: what to fix, in one place."""
    failed = df[df["error"].notna()]
    lines = [f"{len(failed)} of {len(df)} calls failed (error rows count as failures):"]
    for model, rows in failed.groupby("model", sort=False):
        total = int((df["model"] == model).sum())
        first = " ".join(str(rows["error"].iloc[0]).split())[:200]
        lines.append(f"• {model}: {len(rows)}/{total} ({rows['error_type'].iloc[0]}: {first})")
    return "\n".join(lines)
