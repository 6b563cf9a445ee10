"""The collector is relaxed for the length of a grid, and only then."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from labkit._gc import GRID_GEN0_THRESHOLD, relaxed_gc
from labkit.client import Client
from labkit.experiments import Experiment


@pytest.fixture(autouse=True)
def default_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    yield
    gc.set_threshold(*saved)
    gc.unfreeze()


def test_settings_apply_inside_and_come_back_after() -> None:
    with relaxed_gc():
        assert gc.get_threshold() == (GRID_GEN0_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0


def test_an_error_inside_still_restores() -> None:
    with pytest.raises(ValueError), relaxed_gc():
        raise ValueError("boom")
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0


def test_overlapping_grids_restore_when_the_last_ends() -> None:
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def first() -> None:
        with relaxed_gc():
            first_in.set()
            second_done.wait(10)
            seen.append(gc.get_threshold())  # the other grid ended: still relaxed here

    t = threading.Thread(target=first)
    t.start()
    first_in.wait(10)
    with relaxed_gc():
        pass
    second_done.set()
    t.join(10)
    assert seen == [(GRID_GEN0_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0


def test_a_process_that_froze_or_disabled_the_collector_is_left_alone() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with relaxed_gc():
        pass
    # Not unfrozen behind the owner's back (that would empty the permanent generation; frozen
    # objects that die meanwhile still leave it, so the count may drop a little).
    assert gc.get_freeze_count() > frozen // 2
    gc.unfreeze()
    gc.disable()
    try:
        with relaxed_gc():
            assert gc.get_threshold() == (700, 10, 10) and not gc.isenabled()
    finally:
        gc.enable()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_cyclic_garbage_made_during_a_grid_is_still_collected() -> None:
    with relaxed_gc():
        ref = weakref.ref(_Cycle())
        for _ in range(3):  # enough allocations for young collections at the grid threshold
            _ = [[i] for i in range(GRID_GEN0_THRESHOLD * 2)]
        assert ref() is None


def test_a_grid_runs_relaxed_and_restores(tmp_client: Client) -> None:
    during: list[tuple[tuple[int, int, int], int]] = []
    exp = Experiment(
        [{"id": f"i{i}", "text": f"item {i}"} for i in range(6)],
        {"p": "Say {{text}}"},
        ["fake/a"],
        client=tmp_client,
        concurrency=3,
    )
    exp.on_progress.append(lambda _: during.append((gc.get_threshold(), gc.get_freeze_count())))
    exp.run(progress=False)
    relaxed = [d for d in during if d[0][0] == GRID_GEN0_THRESHOLD]
    assert relaxed and all(count > 0 for _, count in relaxed)
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
