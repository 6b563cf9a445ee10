"""Hostile and unlucky input against labkit's data-safety promises (issue 13).

Each test plants what a user, a provider or a bad day can bring (a pickle in the cache, a
provider that echoes the API key, lone surrogates and NUL bytes, bad parameters, a non-UTF-8
file, a second process holding the trace database's write lock, a typo in a model id, a
SIGKILL mid-grid) and asserts the promise that must hold. The key test ends with a scan of
every file labkit wrote for the planted key.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ClientFactory

from labkit.cache import Cache, key_for
from labkit.cli import main
from labkit.client import Client
from labkit.errors import DatasetError, InvalidParameter, LabkitError, UnknownModel
from labkit.experiments import Experiment, load_dataset
from labkit.experiments.report import write_report
from labkit.models import Registry
from labkit.testing import FakeBackend, FakeOpenAIServer, Fault, provider_error
from labkit.tracing import TraceStore
from labkit.types import Completion

MINI = "openai/gpt-4o-mini-2024-07-18"
FULL = "openai/gpt-4o-2024-08-06"
KEY_ENV = "LABKIT_HOSTILE_KEY"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh key-shaped secret in the environment, named by the registry's api_key_env."""
    value = "sk-proj-" + secrets.token_hex(24)
    monkeypatch.setenv(KEY_ENV, value)
    return value


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every default path labkit might use lands under tmp_path, so the scans see it all."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def _holds(root: Path, needle: str) -> list[str]:
    """Files under root whose bytes contain needle (as UTF-8, or JSON-escaped)."""
    forms = {needle.encode(), json.dumps(needle)[1:-1].encode()}
    return [str(p) for p in _files(root) if any(f in p.read_bytes() for f in forms)]


# ------------------------------------------------------------------------- 1. planted pickle
class _Boom:
    """Unpickling this creates a marker file: proof that code ran."""

    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("size", ["row", "file"])
def test_a_planted_pickle_is_a_logged_miss_and_never_runs(
    workdir: Path, caplog: pytest.LogCaptureFixture, size: str
) -> None:
    import diskcache

    marker = workdir / "pwned"
    client = Client(registry=Registry(), cache_dir=workdir / "cache", traces=workdir / "t.db")
    client.add_backend("fake", FakeBackend(["honest answer"]))
    key = client.prepare("hello", model="fake/m").key
    boom = _Boom()
    boom.marker = str(marker)
    planted: Any = [boom, "x" * 40_000] if size == "file" else boom  # > 32 KB: a file
    with diskcache.Cache(str(workdir / "cache")) as raw:
        raw.set(key, planted)
    assert not marker.exists()

    with caplog.at_level(logging.WARNING, logger="labkit.cache"):
        done = client.generate("hello", model="fake/m")
    assert not marker.exists(), "unpickling ran the planted code"
    assert done.text == "honest answer" and not done.cache_hit  # a miss, then a real call
    assert "unreadable" in caplog.text and "pickle" in caplog.text
    again = client.generate("hello", model="fake/m")  # the real answer replaced the plant
    assert again.cache_hit and again.text == "honest answer"
    client.close()
    assert not marker.exists()


def test_the_cache_stores_json_text_only(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    with pytest.raises(TypeError, match="JSON text only"):
        cache._open().set("k", {"a": 1})  # would be pickled by a plain diskcache
    cache.close()


# ------------------------------------------------------------------ 2. a key echoed back
def test_an_echoed_api_key_reaches_no_file_frame_log_or_exception(
    client_factory: ClientFactory, workdir: Path, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    echo = "Incorrect API key provided: {api_key}. Authorization: Bearer {api_key}"
    caplog.set_level(logging.DEBUG, logger="labkit")
    with (
        FakeOpenAIServer(reply="fine", faults=[Fault(401, message=echo)] * 50) as bad,
        FakeOpenAIServer(reply='{"label": "ok"} (and I saw ' + key + ")") as good,
    ):
        client = client_factory({MINI: bad, FULL: good}, root=workdir, key_env=KEY_ENV)
        with pytest.raises(LabkitError) as raised:
            client.generate("one call", model=MINI, max_tokens=5)
        text = "".join(traceback.format_exception(raised.value))
        assert bad.count == 1 and "Incorrect API key provided" in text
        assert key not in text and key not in repr(raised.value.args)
        assert raised.value.trace_id is not None

        items = [
            {"id": f"i{i}", "text": f"item {i}", "expected": {"label": "ok"}} for i in range(3)
        ]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exp = Experiment(
                items, {"p": "Label {{text}}"}, [MINI, FULL], client=client,
                schema={"label": str}, params={"max_tokens": 20},
            )  # fmt: skip
            res = exp.run(progress=False)
        df = res.df
        assert df.loc[df["model"] == MINI, "error"].str.contains("Incorrect API key").all()
        assert not df["error"].fillna("").str.contains(key, regex=False).any()
        assert not df["output"].fillna("").str.contains(key, regex=False).any()
        assert all(key not in str(w.message) for w in caught)
        assert any("failed all" in str(w.message) for w in caught)
        (workdir / "out").mkdir()
        res.to_parquet(workdir / "out" / "r.parquet")
        res.to_csv(workdir / "out" / "r.csv")
        write_report(res, workdir / "out" / "report.html")
        res.export_config(workdir / "out" / "winner.yaml", f"p · {FULL}", suite_size=2)
        assert len(client.traces()) > 0
        client.close()

    assert key not in caplog.text
    leaked = _holds(workdir, key)
    assert leaked == [], f"the key is in {leaked}"
    assert len(list(_files(workdir))) >= 8  # cache, traces, results, report, config, history


# -------------------------------------------------------- 3. lone surrogates and NUL bytes
WEIRD = "bad \ud800 half and a NUL \x00 here"


def test_surrogates_and_nul_in_prompts_replies_and_fields_lose_nothing(
    client_factory: ClientFactory, workdir: Path, key: str
) -> None:
    def reply(body: dict[str, Any]) -> str:
        return f'{{"label": "ok"}} \ud800 {body["messages"][-1]["content"][-12:]} \x00'

    items = [{"id": f"i{i}", "text": f"{WEIRD} {i}", "expected": {"label": "ok"}} for i in range(7)]
    with FakeOpenAIServer(reply=reply) as server:
        client = client_factory({MINI: server, FULL: server}, root=workdir, key_env=KEY_ENV)
        prompts = {"plain": "Label: {{text}}", "odd": "\udfff Label \x00 {{text}}"}
        exp = Experiment(
            items, prompts, [MINI, FULL], client=client, schema={"label": str},
            params={"max_tokens": 20},
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # nothing is set aside here
            res = exp.run(progress=False)
        df = res.df
        assert df["error"].isna().all(), df["error"].dropna().iloc[0]
        assert len(df) == 28 == server.count
        assert df["error"].isna().all(), df["error"].dropna().head().tolist()
        # stored escaped: no UTF-8 sink (SQLite, parquet, Arrow strings) holds a lone surrogate
        assert df["parse_ok"].all() and df["output"].str.contains("\\ud800", regex=False).all()
        assert df["output"].str.contains("\x00", regex=False).all()  # NUL is text: kept

        again = exp.run(progress=False)  # cached and parsed like any other reply
        assert server.count == 28 and again.df["cache_hit"].all()
        assert list(again.df["output"]) == list(df["output"])

        one = client.generate(f"direct {WEIRD}", model=MINI, max_tokens=5)
        assert "\\ud800" in one.text
        assert client.generate(f"direct {WEIRD}", model=MINI, max_tokens=5).cache_hit

        traces = client.traces(run_id=exp.run_id, kind="attempt")
        assert len(traces) == 28 and (traces["status"] == "ok").all()
        notes = traces["meta"].map(lambda m: m.get("escaped", []))
        assert notes.map(lambda n: "response" in n).all()
        assert traces["response"].str.contains("\\ud800", regex=False).all()
        assert client.tracer.rejected == []
        client.close()  # never raises
    assert client.tracer._flusher is not None and client.tracer.pending == 0


def test_a_row_sqlite_refuses_is_set_aside_and_the_rest_land(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", flush_interval=0.05)
    for i in range(5):
        store.record(kind="attempt", model="m", status="ok", attempt=i)
    store.record(kind="attempt", model="m", status="ok", attempt=2**70)  # no SQLite integer
    store.record(kind="attempt", model="m", status="ok", response="bad \ud800 text")
    with pytest.warns(RuntimeWarning, match="set aside"):
        store.flush()
    rows = store.query()
    assert len(rows) == 6 and store.pending == 0
    assert [r["attempt"] for r in store.rejected] == [2**70]
    assert "OverflowError" in store.rejected[0]["_error"]
    store.record(kind="attempt", model="m", status="ok")  # the writer is still alive
    store.close()
    assert len(TraceStore(tmp_path / "t.db").query()) == 7


# -------------------------------------------------------------------- 4. owner-only files
def test_traces_cache_and_written_results_are_owner_only(
    client_factory: ClientFactory, workdir: Path, key: str
) -> None:
    with FakeOpenAIServer(reply="a reply with a prompt's secrets" + "x" * 40_000) as server:
        client = client_factory({MINI: server}, root=workdir, key_env=KEY_ENV)
        exp = Experiment([{"id": "a", "text": "t"}], "Say {{text}}", [MINI], client=client)
        res = exp.run(progress=False)
        assert res.df["error"].isna().all()
        res.to_parquet(workdir / "r.parquet")
        res.to_csv(workdir / "r.csv")
        write_report(res, workdir / "report.html")
        db = workdir / "traces.db"
        client.traces()
        for name in ("traces.db", "traces.db-wal", "traces.db-shm"):
            if (workdir / name).exists() or name == "traces.db":
                assert stat.S_IMODE((workdir / name).stat().st_mode) == 0o600, name
        cache = workdir / "cache"
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700
        files = list(_files(cache))
        assert any(f.suffix == ".val" for f in files)  # the 40 KB reply went to a value file
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        for name in ("r.parquet", "r.csv", "r.csv.meta.json", "report.html"):
            assert stat.S_IMODE((workdir / name).stat().st_mode) == 0o600, name
        client.close()
        assert db.exists()


# ------------------------------------------------------------- 5. error rows join traces
def test_error_rows_of_a_grid_carry_their_trace_id(workdir: Path) -> None:
    client = Client(
        registry=Registry(policy={"retry": {"max_attempts": 2, "base_delay": 0.001}}),
        cache_dir=workdir / "cache",
        traces=workdir / "t.db",
    )
    client.add_backend("fake", FakeBackend([provider_error(500)] * 10 + [provider_error(400)] * 10))
    exp = Experiment(
        [{"id": f"i{i}", "q": "x"} for i in range(3)], "Q {{q}}", ["fake/m"], client=client
    )
    with pytest.warns(RuntimeWarning, match="failed all"):
        df = exp.run(progress=False).df
    assert df["error"].notna().all() and df["trace_id"].notna().all()
    for trace_id in df["trace_id"]:
        rows = client.traces(call_id=trace_id)
        assert len(rows) >= 1 and (rows.loc[rows["kind"] == "attempt", "status"] == "error").all()
    client.close()


# ---------------------------------------------------------------- 6. generation parameters
@pytest.mark.parametrize(
    ("param", "value", "allowed"),
    [
        ("max_tokens", -1, "positive int"),
        ("max_tokens", 0, "positive int"),
        ("max_tokens", "lots", "positive int"),
        ("max_tokens", True, "positive int"),
        ("temperature", -5, "[0, 2]"),
        ("temperature", float("nan"), "[0, 2]"),
        ("top_p", 0, "(0, 1]"),
        ("top_p", 1.5, "(0, 1]"),
        ("presence_penalty", 3, "[-2, 2]"),
        ("n", 0, "positive int"),
        ("stop", 5, "string"),
    ],
)
def test_bad_generation_parameters_fail_before_any_request(
    client_factory: ClientFactory, workdir: Path, key: str, param: str, value: Any, allowed: str
) -> None:
    with FakeOpenAIServer(reply="never") as server:
        client = client_factory({MINI: server}, root=workdir, key_env=KEY_ENV)
        with pytest.raises(InvalidParameter) as raised:
            client.generate("hi", model=MINI, **{param: value})
        err = raised.value
        assert err.param == param and (err.value == value or value != value)
        assert allowed in str(err) and param in str(err)
        with pytest.raises(InvalidParameter):
            Experiment(
                [{"id": "a", "q": "x"}], "{{q}}", [MINI], client=client, params={param: value}
            )
        assert server.count == 0
        client.close()


def test_good_parameters_and_registry_defaults_are_checked_alike(workdir: Path) -> None:
    client = Client(registry=Registry(models={"fake/m": {"params": {"temperature": 9}}}),
                    cache_dir=None, traces=workdir / "t.db")  # fmt: skip
    client.add_backend("fake", FakeBackend(["ok"]))
    with pytest.raises(InvalidParameter, match="temperature"):
        client.generate("hi", model="fake/m")  # a registry default is checked like an argument
    client.close()
    fine = Client(registry=Registry(), cache_dir=None, traces=workdir / "u.db")
    fine.add_backend("fake", FakeBackend(["fine"]))
    done = fine.generate("hi", model="fake/x", temperature=0, top_p=1, max_tokens=1, stop=["\n"])
    assert done.text == "fine"
    fine.close()


# --------------------------------------------------------------------- 7. non-UTF-8 files
@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_non_utf8_dataset_names_file_and_byte_offset(
    workdir: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    if kind == "jsonl":
        good = b'{"id": "a", "text": "fine"}\n'
        bad, before = '{"id": "c", "text": "caf\xe9"}\n', b'{"id": "c", "text": "caf'
        head = good + good.replace(b"a", b"b")
    else:
        head, bad, before = b"id,text\na,fine\n", "c,caf\xe9\n", b"c,caf"
    path = workdir / f"latin1.{kind}"
    path.write_bytes(head + bad.encode("latin-1"))
    offset = len(head) + len(before)
    with pytest.raises(DatasetError) as raised:
        load_dataset(path)
    assert raised.value.path == str(path)
    assert f"byte offset {offset}" in str(raised.value) and "line 3" in str(raised.value)
    assert "UTF-8" in str(raised.value)

    cfg = workdir / "cfg.yaml"
    from labkit.deploy import DeployedConfig, save_config

    save_config(
        cfg,
        DeployedConfig.model_validate({"name": "c", "prompt": "Say {{text}}", "model": "fake/m"}),
    )
    code = main(["run", str(cfg), "--data", str(path), "--no-progress", "--cache-dir",
                 str(workdir / "c"), "--traces", str(workdir / "t.db")])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert f"byte offset {offset}" in err and str(path) in err


# -------------------------------------------------------- 8. a lock held by another process
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_a_second_process_holding_the_write_lock_loses_no_row(
    client_factory: ClientFactory, workdir: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No trace write runs on the event loop's thread (where it would wait for the lock and
    stall every call in flight), the grid finishes, and every row lands after the release.
    How long the grid takes with and without the lock is measured in bench_tracelock.py."""
    db = workdir / "traces.db"
    writers: set[str] = set()
    real_write = TraceStore._write

    def spy(self: TraceStore, batch: list[dict[str, Any]]) -> None:
        writers.add(threading.current_thread().name)
        real_write(self, batch)

    monkeypatch.setattr(TraceStore, "_write", spy)
    with (
        FakeOpenAIServer(reply='{"label": "ok"}', latency=0.01) as server,
        FakeOpenAIServer(reply="never", fault_rates={"400": 1.0}) as failing,  # error rows too
    ):
        client = client_factory({MINI: server, FULL: failing}, root=workdir, key_env=KEY_ENV)
        client.traces()  # the database exists before the other process locks it
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db), "3"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            items = [{"id": f"i{i}", "text": str(i)} for i in range(20)]
            exp = Experiment(items, {"a": "A {{text}}", "b": "B {{text}}"}, [MINI, FULL],
                             client=client, concurrency=8, params={"max_tokens": 5})  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # "not writable" while locked
                res = exp.run(progress=False)
            assert len(res.df) == 80 and server.count == 40 == failing.count
            assert res.df.loc[res.df["model"] == MINI, "error"].isna().all()
            assert res.df.loc[res.df["model"] == FULL, "error_type"].eq("BadRequest").all()
        finally:
            locker.wait(timeout=30)
        assert locker.returncode == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rows = client.traces(run_id=exp.run_id, kind="attempt")
        assert len(rows) == 80 and client.tracer.pending == 0
        assert (rows["status"] == "error").sum() == 40
        assert "labkit-traces" in writers and "labkit-loop" not in writers
        client.close()


# ------------------------------------------------------------------ 9. model id typos
def test_a_typo_in_a_hosted_model_id_fails_before_the_run_with_the_nearest_id(
    workdir: Path,
) -> None:
    client = Client(registry=Registry(), cache_dir=None, traces=workdir / "t.db")
    with pytest.raises(UnknownModel) as raised:
        Experiment(
            [{"id": "a", "q": "x"}], "{{q}}", ["openai/gpt-4o-mini-2024-07-1"], client=client
        )
    assert "openai/gpt-4o-mini-2024-07-18" in raised.value.suggestions
    assert "openai/gpt-4o-mini-2024-07-18" in str(raised.value)
    with pytest.raises(UnknownModel):  # also as a fallback of a known model
        reg = Registry(fallbacks={MINI: ["anthropic/claude-3-5-sonet-20241022"]})
        reg.check_known(MINI)
    Registry().check_known(MINI)  # a real id passes
    Registry().check_known("ollama/my-own-model")  # an open catalogue passes
    custom = Registry(models={"openai/my-finetune-v1": {"api_base": "http://127.0.0.1:9/v1"}})
    exp = Experiment([{"id": "a", "q": "x"}], "{{q}}", ["openai/my-finetune-v1"],
                     client=Client(registry=custom, cache_dir=None, traces=workdir / "u.db"))  # fmt: skip
    assert exp.total == 1
    client.close()


# ------------------------------------------------------------------- 10. SIGKILL mid-grid
CHILD = """
import os, signal, sys
from labkit.client import Client
from labkit.experiments import Experiment
from labkit.models import Registry
url, tmp, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
reg = Registry(models={"MODEL": {"api_base": url, "api_key_env": "KEY_ENV"}})
client = Client(registry=reg, cache_dir=tmp + "/cache", traces=tmp + "/traces.db")
client.tracer.flush_interval = 3600  # every finished row is still queued at the kill
items = [{"id": f"i{i}", "text": str(i)} for i in range(20)]
exp = Experiment(items, "Say {{text}}", ["MODEL"], client=client, concurrency=1)
def kill(state):
    if state.done >= n:
        os.kill(os.getpid(), signal.SIGKILL)
exp.on_progress.append(kill)
exp.run(progress=False)
"""


def test_after_sigkill_a_resumed_grid_restores_the_lost_attempt_rows(
    client_factory: ClientFactory, workdir: Path, key: str
) -> None:
    child = CHILD.replace("MODEL", MINI).replace("KEY_ENV", KEY_ENV)
    with FakeOpenAIServer(reply="fine") as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", child, server.url, str(workdir), "6"], env=env, timeout=120
        )
        assert done.returncode == -9
        paid = server.count
        assert paid >= 6
        before = sqlite3.connect(workdir / "traces.db")
        lost = before.execute("SELECT count(*) FROM traces WHERE kind='attempt'").fetchone()[0]
        before.close()
        assert lost < paid  # the window: finished, cached calls without their row

        client = client_factory({MINI: server}, root=workdir, key_env=KEY_ENV)
        items = [{"id": f"i{i}", "text": str(i)} for i in range(20)]
        exp = Experiment(items, "Say {{text}}", [MINI], client=client, concurrency=1)
        res = exp.run(progress=False)
        assert res.df["error"].isna().all() and server.count == 20
        assert res.df["cache_hit"].sum() == paid
        rows = client.traces(run_id=exp.run_id, kind="attempt")
        assert len(rows) == 20 and (rows["status"] == "ok").all()
        assert rows["item_id"].nunique() == 20
        restored = rows[rows["meta"].map(lambda m: bool(m.get("restored")))]
        assert len(restored) == paid - lost
        again = client.traces(run_id=exp.run_id, kind="attempt")
        exp.run(progress=False)  # a second resume adds nothing
        assert len(client.traces(run_id=exp.run_id, kind="attempt")) == len(again) == 20
        client.close()


def test_completion_origin_round_trips_through_the_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    done = Completion(text="x", model="m", origin={"id": "r1", "call_id": "c1", "run_id": "run"})
    k = key_for("m", [{"role": "user", "content": "x"}], {}, None, False, 0)
    cache.set(k, done)
    got = cache.get(k)
    assert got is not None and got.origin == done.origin
    cache.close()
