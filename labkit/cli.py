"""The `labkit` command: run a config headless, report, gate a model upgrade, roll back.

Each subcommand is a thin layer over the library (`labkit.deploy`, `labkit.monitoring`,
`labkit.experiments`), so the command line and a notebook do the same thing.
Errors print one line naming the file/field and the fix, with exit status 2; `gate` exits 0
when the candidate is promoted (or would be, with --dry-run) and 1 when the current model is
kept, so CI can branch on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .artifact import measured_on, read_config, rollback
from .client import Client
from .deploy import gate, load_config
from .errors import ConfigError, LabkitError
from .evaluation import evaluator_from_spec
from .experiments import Experiment, load_dataset
from .experiments.report import write_report
from .monitoring import history, monitor
from .monitoring.sql import parse_duration, parse_time
from .testing import FakeOpenAIServer

if TYPE_CHECKING:
    from .client import Client

__all__ = ["build_parser", "main"]

_EPILOG = """\
examples:
  labkit run triage.yaml --data datasets/loan_triage.jsonl --out results.parquet
  labkit run triage.yaml --data new_rows.csv --model openai/gpt-4o-mini-2024-07-18 --out cmp.csv
  labkit report results.parquet -o report.html
  labkit gate triage.yaml --candidate openai/gpt-4o-2024-11-20 --margin 0.03
  labkit history triage.yaml
  labkit rollback triage.yaml --to 2
  labkit monitor .labkit/traces.db --since 7d --baseline previous
  labkit serve-fake --reply '{"label": "positive"}' --lifetime 300

A CONFIG is a file written by results.export_config(path); its versions live in
<name>.history/ beside it. Models, aliases and keys come from labkit.yaml (--registry), keys
only through environment variables.
"""


def _para(text: str) -> str:
    """Wrap a description to the terminal-friendly width argparse's raw formatter keeps."""
    return textwrap.fill(text, 88)


def _client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("call path")
    g.add_argument("--registry", metavar="YAML", help="labkit.yaml to use (default: found upward)")
    g.add_argument("--profile", choices=("dev", "staging", "prod"), help="registry profile")
    g.add_argument("--cache-dir", default=".labkit/cache", metavar="DIR", help="%(default)s")
    g.add_argument("--traces", default=".labkit/traces.db", metavar="DB", help="%(default)s")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="labkit",
        description=_para("Run, report on, gate and roll back labkit configs from the shell."),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    run = sub.add_parser(
        "run",
        help="run a config over a dataset (a headless grid); results to parquet or CSV",
        description=_para(
            "Run CONFIG's prompt over every row of --data through the cached, traced "
            "call path, score the answers with its evaluators and write the results frame. Add "
            "--model to run other models beside the config's (one grid, paired on the same rows). "
            "Finished calls come from the cache, so an interrupted run resumes where it stopped."
        ),
        epilog="example:\n  labkit run triage.yaml --data rows.jsonl --out results.parquet",
        formatter_class=fmt,
    )
    run.add_argument("config", metavar="CONFIG", help="exported config (YAML)")
    run.add_argument("--data", required=True, metavar="FILE", help="dataset: .jsonl/.json/.csv")
    run.add_argument("--out", metavar="FILE", help="results .parquet or .csv (default: "
                     "<config>-results.parquet beside the config)")  # fmt: skip
    run.add_argument("--model", action="append", default=[], metavar="MODEL",
                     help="another model to run beside the config's (repeatable)")  # fmt: skip
    run.add_argument("--repeats", type=int, default=1, help="samples per cell (%(default)s)")
    run.add_argument("--max-tokens", type=int, metavar="N", help="override params.max_tokens")
    run.add_argument("--concurrency", type=int, default=4, help="calls in flight (%(default)s)")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N rows")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _client_options(run)

    rep = sub.add_parser(
        "report",
        help="write a self-contained HTML report (every chart, works offline)",
        description=_para(
            "Read a results file (from `labkit run` or Results.to_parquet/to_csv) and "
            "write one HTML file: summary tables, paired comparisons and every chart, with "
            "plotly.js inlined so it opens without a network."
        ),
        epilog="example:\n  labkit report results.parquet -o report.html",
        formatter_class=fmt,
    )
    rep.add_argument("results", metavar="RESULTS", help="results .parquet or .csv")
    rep.add_argument("-o", "--out", metavar="HTML", help="default: RESULTS with .html")
    rep.add_argument("--title", help="report title")
    rep.add_argument("--baseline", metavar="VARIANT", help="compare every variant to this one")

    gate = sub.add_parser(
        "gate",
        help="promote a candidate model only if it is non-inferior on the regression suite",
        description=_para(
            "Run CONFIG's regression suite on its current model and on --candidate "
            "(pinned ids, same call path, no fallbacks), compare them item by item and promote the "
            "candidate (a new config version) only if the one-sided lower confidence bound of "
            "(candidate - current) pass rate is above -margin. Exit status: 0 promote, 1 keep."
        ),
        epilog="example:\n  labkit gate triage.yaml --candidate openai/gpt-4o-2024-11-20",
        formatter_class=fmt,
    )
    gate.add_argument("config", metavar="CONFIG")
    gate.add_argument("--candidate", required=True, metavar="MODEL", help="pinned model id")
    gate.add_argument("--margin", type=float, default=0.05, help="largest acceptable loss in "
                      "pass rate (%(default)s = 5 points)")  # fmt: skip
    gate.add_argument("--alpha", type=float, default=0.05, help="one-sided level (%(default)s)")
    gate.add_argument("--dry-run", action="store_true", help="give the verdict, write nothing")
    gate.add_argument("--note", default="", help="recorded in the history on promotion")
    gate.add_argument("--json", action="store_true", help="print the verdict as JSON")
    gate.add_argument("--no-progress", action="store_true")
    _client_options(gate)

    hist = sub.add_parser(
        "history",
        help="list a config's versions: who, what, when, evidence",
        epilog="example:\n  labkit history triage.yaml",
        formatter_class=fmt,
    )
    hist.add_argument("config", metavar="CONFIG")
    hist.add_argument("--json", action="store_true", help="one JSON object per line")
    hist.add_argument("--traces", metavar="DB", help="trace database: add the upgrade watch's "
                      "verdict (before vs after each version) beside each version")  # fmt: skip
    hist.add_argument("--window", default="day", help="calls compared on each side (%(default)s)")

    mon = sub.add_parser(
        "monitor",
        help="test each time window of the traces against a baseline; exit 1 on a shift",
        description=_para(
            "Aggregate the trace database per --window and per --by (pinned model by default), "
            "test every window against the --baseline window (two-proportion tests for error, "
            "parse, repair and success rates; KS and PSI for latency, length and confidence; "
            "Holm per window) and print the flagged shifts. Exit status: 0 none, 1 some, 2 error."
        ),
        epilog="examples:\n  labkit monitor .labkit/traces.db --since 7d\n"
        "  labkit monitor traces.db --since 2d --window hour --baseline 7d\n"
        "  labkit monitor traces.db --baseline 2026-11-01..2026-11-08 --json",
        formatter_class=fmt,
    )
    mon.add_argument("traces", metavar="DB", help="trace database (Client(traces=...))")
    mon.add_argument("--since", metavar="WHEN", help="start: '7d' (ago), an ISO date or time")
    mon.add_argument("--until", metavar="WHEN", help="end (default: now)")
    mon.add_argument("--window", default="day", help="hour, day, week, 30min, 6h... (%(default)s)")
    mon.add_argument("--by", action="append", metavar="COLUMN",
                     help="group column, repeatable (default: model)")  # fmt: skip
    mon.add_argument("--baseline", default="first", metavar="B", help="first (default), "
                     "previous, START..END, or a duration such as 14d: the 14 days before "
                     "--since")  # fmt: skip
    mon.add_argument("--alpha", type=float, default=0.01, help="false-alarm rate per window "
                     "(%(default)s)")  # fmt: skip
    mon.add_argument("--min-rate-change", type=float, default=0.02, metavar="D",
                     help="smallest rate change flagged (%(default)s = 2 points)")  # fmt: skip
    mon.add_argument("--min-psi", type=float, default=0.1, metavar="PSI",
                     help="smallest PSI flagged for a distribution (%(default)s)")  # fmt: skip
    mon.add_argument("--min-n", type=int, default=30, help="calls per window to test (%(default)s)")
    mon.add_argument("--config", metavar="CONFIG", help="mark this config's versions as switches")
    mon.add_argument("--json", action="store_true", help="one JSON object per flagged shift")

    back = sub.add_parser(
        "rollback",
        help="restore an earlier version as the new latest (history is kept)",
        description=_para(
            "Copy version N back as a new version, so the rollback itself is recorded "
            "and can be undone. `labkit history CONFIG` lists the versions."
        ),
        epilog="example:\n  labkit rollback triage.yaml --to 2",
        formatter_class=fmt,
    )
    back.add_argument("config", metavar="CONFIG")
    back.add_argument("--to", required=True, type=int, metavar="N", help="version to restore")
    back.add_argument("--note", default="", help="recorded in the history")

    fake = sub.add_parser(
        "serve-fake",
        help="serve the loopback OpenAI-compatible test server; prints its URL",
        description=_para(
            "Start labkit.testing.FakeOpenAIServer on 127.0.0.1 and print its base URL "
            "(first line of stdout). Point a registry entry at it: models: {openai/fake-2024-01-01: "
            "{api_base: URL, api_key_env: FAKE_KEY}}. Stops on Ctrl-C or after --lifetime seconds."
        ),
        epilog="example:\n  labkit serve-fake --reply 'Hello' --lifetime 60",
        formatter_class=fmt,
    )
    fake.add_argument("--reply", action="append", metavar="TEXT",
                      help="reply text; repeat for replies used in turn")  # fmt: skip
    fake.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    fake.add_argument("--latency", type=float, default=0.0, help="seconds per reply")
    fake.add_argument("--lifetime", type=float, default=600.0, help="seconds (%(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `labkit` script; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler = {
        "run": _run,
        "report": _report,
        "gate": _gate,
        "history": _history,
        "rollback": _rollback,
        "monitor": _monitor,
        "serve-fake": _serve_fake,
    }[args.command]
    try:
        return handler(args)
    except LabkitError as exc:
        print(f"labkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labkit {args.command}: interrupted", file=sys.stderr)
        return 130


def _client(args: argparse.Namespace) -> Client:
    return Client(
        registry=args.registry,
        cache_dir=args.cache_dir,
        traces=args.traces,
        profile=args.profile,
    )


# ----------------------------------------------------------------------------- commands


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else _default_out(Path(args.config))
    if out.suffix.lower() not in (".parquet", ".csv"):
        print(f"labkit run: error: --out must end in .parquet or .csv, got {out}", file=sys.stderr)
        return 2
    client = _client(args)
    try:
        cfg = load_config(args.config, client=client).config
        data = load_dataset(args.data)
        if args.limit:
            data = data.head(args.limit)
        params = dict(cfg.params)
        if args.max_tokens is not None:
            params["max_tokens"] = args.max_tokens
        models = list(dict.fromkeys([cfg.model, *args.model]))
        exp = Experiment(
            data,
            {f"v{cfg.version}": cfg.prompt},
            models,
            schema=cfg.output_schema,
            evaluators=[evaluator_from_spec(s) for s in cfg.evaluators] or None,
            system=cfg.system,
            params=params,
            repeats=args.repeats,
            concurrency=args.concurrency,
            client=client,
            name=Path(args.config).stem,
            confidence=cfg.confidence.requested,
        )
        results = exp.run(progress=not args.no_progress)
        if out.suffix.lower() == ".csv":
            results.to_csv(out)
        else:
            results.to_parquet(out)
        table = results.summary()
        cols = [c for c in ("variant", "n", "rate", "ci_low", "ci_high", "errors") if c in table]
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {len(results.df)} rows to {out}")
    finally:
        client.close()
    return 0


def _default_out(config: Path) -> Path:
    return config.with_name(f"{config.stem}-results.parquet")


def _report(args: argparse.Namespace) -> int:
    src = Path(args.results)
    out = Path(args.out) if args.out else src.with_suffix(".html")
    kwargs: dict[str, Any] = {}
    if args.title:
        kwargs["title"] = args.title
    if args.baseline:
        kwargs["baseline"] = args.baseline
    write_report(src, out, **kwargs)
    print(f"wrote {out}")
    return 0


def _gate(args: argparse.Namespace) -> int:
    client = _client(args)
    bar = None if args.no_progress else _Bar("gate")
    try:
        verdict = gate(
            args.config,
            args.candidate,
            margin=args.margin,
            alpha=args.alpha,
            client=client,
            promote=not args.dry_run,
            note=args.note,
            progress=bar.update if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()
        client.close()
    if args.json:
        print(json.dumps(verdict.to_dict(), default=str, indent=1))
    else:
        print(verdict)
        if args.dry_run and verdict.decision == "promote":
            print("  (dry run: nothing written)")
    return 0 if verdict.decision == "promote" else 1


def _history(args: argparse.Namespace) -> int:
    versions = history(args.config, traces=args.traces, window=args.window)
    if not versions:
        read_config(args.config)  # a clear error if the file is missing or broken
        raise ConfigError("no saved versions yet (written by export_config)", where=args.config)
    bases: set[tuple[Any, Any]] = set()
    for v in versions:
        if args.json:
            print(json.dumps(v.model_dump(mode="json")))
            continue
        ev, on = v.evidence or {}, measured_on(v)
        shown = f"{ev.get('metric')} {ev['value']:.3f} on n={on[0]} of {on[1]}" if on else "-"
        if on:
            bases.add(on)
        extra = f" from v{v.restored_from}" if v.restored_from else ""
        print(
            f"v{v.version:<3} {v.created_at}  {v.author:<10} {v.action}{extra:<8} {v.model}  "
            f"{shown}  {v.note}".rstrip()
        )
        if v.watch is not None:
            print(f"     watch: {v.watch['summary']}")
    if len(bases) > 1:
        print(
            "note: these rates were measured on different item sets (sizes or data differ), so "
            "they are not comparable row to row; compare versions on one suite with "
            "`labkit gate`"
        )
    return 0


def _monitor(args: argparse.Namespace) -> int:
    baseline: Any = args.baseline
    if ".." in baseline:
        baseline = tuple(baseline.split("..", 1))
    elif baseline not in ("first", "previous"):
        if args.since is None:
            print("labkit monitor: error: a duration --baseline needs --since (the baseline is "
                  "the span just before it)", file=sys.stderr)  # fmt: skip
            return 2
        start = parse_time(args.since)
        assert start is not None
        baseline = (start - parse_duration(baseline), start)
    report = monitor(
        args.traces, by=args.by or "model", window=args.window, baseline=baseline,
        since=args.since, until=args.until, alpha=args.alpha,
        min_rate_change=args.min_rate_change, min_psi=args.min_psi, min_n=args.min_n,
        config=args.config,
    )  # fmt: skip
    if args.json:
        for row in report.shifts.drop(columns=["_w", "_bw"]).to_dict("records"):
            print(json.dumps(row, default=str))
    else:
        print(report)
    return 1 if report.flagged else 0


def _rollback(args: argparse.Namespace) -> int:
    cfg = rollback(args.config, to=args.to, note=args.note)
    print(f"restored v{args.to} as v{cfg.version} ({cfg.model}) in {args.config}")
    return 0


def _serve_fake(args: argparse.Namespace) -> int:
    replies = args.reply or ["Hello from the fake server."]
    server = FakeOpenAIServer(
        reply=replies[0] if len(replies) == 1 else replies,
        latency=args.latency,
        max_lifetime=args.lifetime,
        port=args.port,
    )
    server.start()
    print(server.url, flush=True)
    print(
        f"labkit serve-fake: listening on {server.url} for {args.lifetime:g} s (Ctrl-C stops). "
        "Any API key works.",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + args.lifetime
    try:
        while time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        print("labkit serve-fake: stopped", file=sys.stderr)
    finally:
        server.stop()
        print(f"labkit serve-fake: served {server.count} request(s)", file=sys.stderr)
    return 0


class _Bar:
    """A one-line `\\r` progress bar on stderr for the gate's suite calls."""

    def __init__(self, label: str, width: int = 24) -> None:
        self.label = label
        self.width = width
        self._started = time.monotonic()
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        filled = round(self.width * done / total) if total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self._started
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{total} calls · {elapsed:.1f} s")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
