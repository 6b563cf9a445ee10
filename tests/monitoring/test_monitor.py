"""labkit.monitor: windows and groups from SQL, shift tests at the right window, the
false-alarm rate by simulation, every kind of source, the upgrade watch, charts and the CLI."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from frames import make_results
from synthetic_traces import shifted, write_traces

import labkit
from labkit.cli import main
from labkit.client import Client
from labkit.deploy import DeployedConfig, save_config
from labkit.errors import InputError
from labkit.models import Registry
from labkit.monitoring import drift, history, monitor, parse_duration, upgrade_watch
from labkit.testing import FakeOpenAIServer

DAY = 86400.0

# ----------------------------------------------------------------------------- the statistics


@pytest.mark.parametrize(("n", "m", "shift"), [(40, 60, 0.0), (200, 150, 0.3), (1000, 800, 0.1)])
def test_ks_pvalue_matches_scipy(n: int, m: int, shift: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n)
    for _ in range(5):
        a, b = rng.normal(0, 1, n), rng.normal(shift, 1, m)
        d, p, _, _ = drift.ks_from_counts(np.sort(a), np.ones(n), np.sort(b), np.ones(m))
        ref = stats.ks_2samp(a, b, method="exact")
        assert d == pytest.approx(ref.statistic, abs=1e-12)
        assert p == pytest.approx(ref.pvalue, abs=0.01)  # Stephens' series vs the exact p


def test_ks_on_tied_histograms_matches_scipy_statistic() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a = np.round(rng.beta(8, 2, 300) * 20) / 20
    b = np.round(rng.beta(6, 3, 250) * 20) / 20
    ba, ca = np.unique(a, return_counts=True)
    bb, cb = np.unique(b, return_counts=True)
    d, p, n0, n1 = drift.ks_from_counts(ba, ca, bb, cb)
    assert (n0, n1) == (300, 250)
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert p < 1e-3


def test_two_proportions_matches_statsmodels() -> None:
    sm = pytest.importorskip("statsmodels.stats.proportion")
    for k0, n0, k1, n1 in [(6, 300, 30, 300), (50, 120, 44, 130), (0, 50, 3, 60)]:
        diff, p = drift.two_proportions(k0, n0, k1, n1)
        _, ref = sm.proportions_ztest([k1, k0], [n1, n0])
        assert diff == pytest.approx(k1 / n1 - k0 / n0)
        assert p == pytest.approx(ref, rel=1e-9)
    assert drift.two_proportions(0, 40, 0, 40) == (0.0, 1.0)


def test_psi_reads_zero_for_equal_and_large_for_moved() -> None:
    rng = np.random.default_rng(1)
    a = np.round(np.log(rng.lognormal(0, 0.3, 5000)) * 100).astype(int)
    b = np.round(np.log(rng.lognormal(0, 0.3, 5000)) * 100).astype(int)
    c = np.round(np.log(rng.lognormal(0.4, 0.3, 5000)) * 100).astype(int)
    hist = [np.unique(x, return_counts=True) for x in (a, b, c)]
    assert drift.psi(*hist[0], *hist[1]) < 0.02
    assert drift.psi(*hist[0], *hist[2]) > 0.5


# ----------------------------------------------------------------------------- known shifts


def _flagged(report: labkit.monitoring.watch.MonitorReport, metric: str) -> set[int]:  # type: ignore[name-defined]
    first = report.windows["window"].min()
    hits = report.shifts[report.shifts["metric"] == metric]
    return {int((w - first) / pd.Timedelta(days=1)) for w in hits["window"]}


@pytest.mark.parametrize(
    ("change", "metric", "direction"),
    [
        ({"error_rate": 0.12}, "error_rate", "worse"),
        ({"parse_fail": 0.2}, "parse_rate", "worse"),
        ({"conf_a": 5.0, "conf_b": 3.0}, "confidence.sentiment", "worse"),
        ({"latency_median": 1.3}, "latency_s", "worse"),
    ],
)
def test_a_planted_shift_is_flagged_at_its_window(
    tmp_path: Path, change: dict[str, float], metric: str, direction: str
) -> None:
    db = write_traces(tmp_path / "t.db", windows=8, per_window=300, seed=11,
                      shift=shifted(**change), shift_at=5)  # fmt: skip
    report = monitor(db, window="day")
    assert _flagged(report, metric) == {5, 6, 7}
    hits = report.shifts[report.shifts["metric"] == metric]
    assert set(hits["direction"]) == {direction}
    assert (hits["p_holm"] < 0.01).all() and (hits["p_value"] <= hits["p_holm"]).all()
    # the other metrics stay quiet before the shift
    early = report.shifts[
        report.shifts["window"] < report.windows["window"].min() + pd.Timedelta(days=5)
    ]
    assert early.empty


def test_previous_baseline_flags_the_step_once(tmp_path: Path) -> None:
    db = write_traces(tmp_path / "t.db", windows=8, per_window=300, seed=5,
                      shift=shifted(error_rate=0.12), shift_at=4)  # fmt: skip
    report = monitor(db, baseline="previous")
    assert _flagged(report, "error_rate") == {4}


def test_fixed_baseline_range(tmp_path: Path) -> None:
    start = (time.time() // DAY - 8) * DAY
    db = write_traces(tmp_path / "t.db", windows=8, per_window=200, seed=2, start=start,
                      shift=shifted(parse_fail=0.2), shift_at=6)  # fmt: skip
    report = monitor(db, since=start + 3 * DAY, baseline=(start, start + 3 * DAY))
    assert report.windows["window"].nunique() == 5
    assert set(report.tests["baseline"]) == {"baseline"}
    assert _flagged(report, "parse_rate") == {3, 4}  # days 6 and 7, counted from day 3


def test_groups_are_tested_separately(tmp_path: Path) -> None:
    db = write_traces(tmp_path / "t.db", windows=6, per_window=200, seed=9,
                      models=("m-a", "m-b"), shift=shifted(error_rate=0.15), shift_at=3,
                      shift_models=("m-b",))  # fmt: skip
    report = monitor(db)
    assert set(report.shifts["model"]) == {"m-b"}
    assert set(report.windows["model"]) == {"m-a", "m-b"}
    assert (report.windows["calls"] == 200).all()


def test_no_shift_no_alert_and_the_window_metrics(tmp_path: Path) -> None:
    db = write_traces(tmp_path / "t.db", windows=6, per_window=400, seed=4)
    report = monitor(db)
    assert not report.flagged and "no shift flagged" in str(report)
    w = report.windows
    assert len(w) == 6 and (w["calls"] == 400).all()
    assert w["error_rate"].between(0.0, 0.06).all()
    assert w["parse_rate"].between(0.9, 1.0).all()
    assert w["repair_rate"].between(0.12, 0.28).all()
    assert w["latency_p50"].between(0.7, 0.9).all() and (w["latency_p95"] > w["latency_p50"]).all()
    assert w["confidence.sentiment_mean"].between(0.7, 0.9).all()
    assert w["success_rate"].isna().all()  # no outcome recorded
    assert {"tokens", "cost_usd", "ttft_p50", "confidence_mean"} <= set(w.columns)


def test_latency_quantiles_match_the_exact_ones(tmp_path: Path) -> None:
    import sqlite3

    db = write_traces(tmp_path / "t.db", windows=1, per_window=3000, seed=8)
    report = monitor(db)
    with sqlite3.connect(db) as conn:
        lat = np.array([r[0] for r in conn.execute(
            "SELECT latency_s FROM traces WHERE status != 'error'")])  # fmt: skip
    for q in (50, 95):
        exact = np.quantile(lat, q / 100, method="inverted_cdf")
        assert report.windows[f"latency_p{q}"].iloc[0] == pytest.approx(exact, rel=0.006)


def test_false_alarm_rate_by_simulation(tmp_path: Path) -> None:
    """60 independent unchanged series x 8 windows: the share of windows with any alert
    (Holm over ~10 tests each, no effect-size floor) stays at or below alpha."""
    alpha = 0.05
    models = [f"m{i:02d}" for i in range(60)]
    db = write_traces(tmp_path / "t.db", windows=8, per_window=120, seed=21, models=models)
    report = monitor(db, alpha=alpha, min_rate_change=0.0, min_psi=0.0)
    per_window = report.tests.groupby(["window", "model"])["flagged"].any()
    assert len(per_window) == 60 * 7
    rate = per_window.mean()
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / len(per_window))
    assert rate <= bound, f"false-alarm rate {rate:.3f} above {alpha} (+3 SE = {bound:.3f})"
    # the raw (unadjusted) tests do fire at about their level: the check is not vacuous
    raw = (report.tests["p_value"] < alpha).mean()
    assert 0.005 < raw < 0.12
    # the default alpha (0.01) and effect floors hold their rate too
    default = monitor(db).tests.groupby(["window", "model"])["flagged"].any().mean()
    assert default <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / len(per_window))


# ----------------------------------------------------------------------------- sources


def test_a_client_traces_frame_and_path_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    replies = [
        '{"label": "spam", "label_confidence": 0.9}',
        '```json\n{"label": "ham", "label_confidence": 0.6}\n```',
    ]
    with FakeOpenAIServer(reply=replies, max_lifetime=600) as server:
        model = "openai/fake-2024-01-01"
        client = Client(
            registry=Registry(models={model: {"api_base": server.url, "api_key_env": "FAKE_KEY"}}),
            cache_dir=tmp_path / "cache", traces=tmp_path / "traces.db",
        )  # fmt: skip
        try:
            for i in range(8):
                client.generate(f"message {i}", model=model, schema={"label": ["spam", "ham"]})
            client.generate("message 0", model=model, schema={"label": ["spam", "ham"]})  # a hit
            by_client = monitor(client, min_n=5)
            by_path = monitor(tmp_path / "traces.db", min_n=5)
            by_frame = monitor(client.traces(), min_n=5)
            with_hits = monitor(client, cache_hits=True, min_n=5)
        finally:
            client.close()
    for report in (by_client, by_path, by_frame):
        w = report.windows
        assert list(w["model"]) == [model] and int(w["calls"].iloc[0]) == 8
        assert w["parse_rate"].iloc[0] == 1.0
        assert w["repair_rate"].iloc[0] == pytest.approx(0.5)
        assert w["confidence.label_mean"].iloc[0] == pytest.approx(0.75)
    assert int(with_hits.windows["calls"].iloc[0]) == 9


def test_a_results_frame_by_run_and_by_time() -> None:
    a, b = make_results(n_items=60, seed=1), make_results(n_items=60, seed=2)
    b["run_id"] = "run-2"
    report = monitor(pd.concat([a, b]), by=["model", "prompt_version"], min_n=20)
    assert report.window == "run"
    assert set(report.windows["window"]) == {"run-1", "run-2"}
    assert set(report.windows["prompt_version"]) == {"terse", "cot"}
    assert report.windows["success_rate"].notna().all()
    assert {"confidence.name", "confidence.date", "confidence.amount"} <= set(
        report.tests["metric"]
    )
    frame = pd.concat([a, b]).assign(
        ts=[pd.Timestamp("2026-01-01")] * len(a) + [pd.Timestamp("2026-01-02")] * len(b)
    )
    by_day = monitor(frame, min_n=20)
    assert by_day.windows["window"].nunique() == 2


def test_outcomes_give_a_success_rate(tmp_path: Path) -> None:
    db = write_traces(tmp_path / "t.db", windows=4, per_window=200, seed=3)
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT call_id, ts FROM traces WHERE status = 'ok' ORDER BY ts"
        ).fetchall()
    cut = rows[len(rows) // 2][1]
    rng = np.random.default_rng(0)
    outcomes = {c: bool(rng.random() < (0.9 if ts < cut else 0.6)) for c, ts in rows}
    report = monitor(db, outcomes=outcomes)
    assert report.windows["success_rate"].notna().all()
    hits = report.shifts[report.shifts["metric"] == "success_rate"]
    assert len(hits) >= 1 and set(hits["direction"]) == {"worse"}


# ----------------------------------------------------------------------------- bad input


def test_bad_input_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no trace database"):
        monitor(tmp_path / "missing.db")
    db = write_traces(tmp_path / "t.db", windows=2, per_window=50)
    with pytest.raises(InputError, match="'30min'"):
        monitor(db, window="fortnight")
    with pytest.raises(InputError, match="'first', 'previous'"):
        monitor(db, baseline="last")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="plain name"):
        monitor(db, by="model'; DROP TABLE traces; --")
    with pytest.raises(InputError, match="ISO date"):
        monitor(db, since="yesterday-ish")
    with pytest.raises(InputError, match="alpha"):
        monitor(db, alpha=1.5)
    assert parse_duration("90min") == 5400 and parse_duration("week") == 7 * DAY
    assert monitor(db).windows["calls"].sum() == 100  # the database is untouched


# ----------------------------------------------------------------------------- upgrades


def test_upgrade_watch_and_history_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "triage.yaml"
    save_config(cfg, DeployedConfig(name="triage", prompt="Classify {{x}}", model="m-old"))
    save_config(cfg, DeployedConfig(name="triage", prompt="Classify {{x}}", model="m-new"),
                action="promote")  # fmt: skip
    t = pd.Timestamp(history(cfg)[1].created_at).timestamp()
    db = tmp_path / "t.db"
    write_traces(db, windows=1, per_window=400, start=t - DAY, models=("m-old",), seed=1)
    write_traces(db, windows=1, per_window=400, start=t, models=("m-new",), seed=2,
                 base=shifted(parse_fail=0.2, conf_a=5.0, conf_b=3.0))  # fmt: skip
    verdicts = upgrade_watch(cfg, db)
    assert len(verdicts) == 1
    v = verdicts[0]
    assert (v.verdict, v.calls_before, v.calls_after) == ("worse", 400, 400)
    assert {s["metric"] for s in v.shifts} >= {"parse_rate", "confidence.sentiment"}
    assert v.rollback == f"labkit.rollback({str(cfg)!r}, to=1)"
    versions = labkit.history(cfg, traces=db)
    assert versions[0].watch is None and versions[1].watch["verdict"] == "worse"
    assert "rollback" in versions[1].watch["suggest"]
    # the verdict is shown, never written: the history file is unchanged
    assert "watch" not in (tmp_path / "triage.history" / "history.jsonl").read_text()
    assert main(["history", str(cfg), "--traces", str(db)]) == 0
    out = capsys.readouterr().out
    assert "watch: v2 (m-old -> m-new" in out and "worse" in out and "to=1)" in out


def test_an_upgrade_without_change_is_no_change(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    save_config(cfg, DeployedConfig(name="c", prompt="Classify {{x}}", model="m-old"))
    save_config(cfg, DeployedConfig(name="c", prompt="Classify {{x}}", model="m-new"))
    t = pd.Timestamp(history(cfg)[1].created_at).timestamp()
    db = tmp_path / "t.db"
    write_traces(db, windows=1, per_window=300, start=t - DAY, models=("m-old",), seed=1)
    write_traces(db, windows=1, per_window=300, start=t, models=("m-new",), seed=2)
    assert upgrade_watch(cfg, db)[0].verdict == "no change"
    write_traces(tmp_path / "few.db", windows=1, per_window=5, start=t, models=("m-new",))
    assert upgrade_watch(cfg, tmp_path / "few.db")[0].verdict == "too few calls"


# ----------------------------------------------------------------------------- charts, CLI


def test_charts_mark_switches_and_flagged_windows(tmp_path: Path) -> None:
    db = write_traces(tmp_path / "t.db", windows=6, per_window=200, seed=7,
                      models=("m-a", "m-b"), shift=shifted(parse_fail=0.25), shift_at=3,
                      shift_models=("m-b",))  # fmt: skip
    report = monitor(db)
    fig = report.chart("parse_rate")
    names = [t.name for t in fig.data]
    assert {"m-a", "m-b", "flagged shift"} <= set(names)
    flagged = next(t for t in fig.data if t.name == "flagged shift")
    assert len(flagged.x) == 3
    assert len(report.switches) == 1  # m-b first answered for the alias after m-a
    assert any(s.type == "line" for s in fig.layout.shapes)
    dist = report.distribution_chart("confidence", group="m-b")
    assert next(t.name for t in dist.data) == "baseline"
    assert math.isclose(sum(dist.data[0].y), 1.0, abs_tol=1e-9)
    with pytest.raises(InputError, match="choose from"):
        report.chart("nope")


def test_importing_the_module_keeps_labkit_monitor_the_function(tmp_path: Path) -> None:
    import importlib

    db = write_traces(tmp_path / "t.db", windows=2, per_window=40)
    importlib.import_module("labkit.monitoring")
    assert labkit.monitor(db).windows["calls"].sum() == 80


def test_cli_monitor_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calm = write_traces(tmp_path / "calm.db", windows=5, per_window=200, seed=1)
    assert main(["monitor", str(calm), "--since", "30d"]) == 0
    assert "no shift flagged" in capsys.readouterr().out
    bad = write_traces(tmp_path / "bad.db", windows=5, per_window=200, seed=1,
                       shift=shifted(error_rate=0.2), shift_at=3)  # fmt: skip
    assert main(["monitor", str(bad), "--since", "30d"]) == 1
    out = capsys.readouterr().out
    assert "error_rate worse" in out
    assert main(["monitor", str(bad), "--since", "30d", "--json"]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {x["metric"] for x in lines} >= {"error_rate"}
    assert main(["monitor", str(bad), "--since", "2d", "--baseline", "10d"]) == 1
    assert "error_rate worse" in capsys.readouterr().out
    assert main(["monitor", str(tmp_path / "none.db")]) == 2
    assert "no trace database" in capsys.readouterr().err
