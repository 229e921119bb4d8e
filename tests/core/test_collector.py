"""The collector's pace while taskloom runs: the young generation's threshold raised for
the run, put back after, left alone when switched off or already higher."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from taskloom import collector, eventloop


@pytest.fixture(autouse=True)
def python_thresholds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TASKLOOM_GC_THRESHOLD", raising=False)
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_the_young_threshold_is_raised_for_the_block_and_put_back() -> None:
    with collector.paced_collector():
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_put_back_after_an_error_too() -> None:
    with pytest.raises(KeyError), collector.paced_collector():
        raise KeyError("x")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_or_a_switched_off_collector_is_kept() -> None:
    gc.set_threshold(50_000, 5, 5)
    with collector.paced_collector():
        assert gc.get_threshold() == (50_000, 5, 5)
    gc.set_threshold(0, 10, 10)  # threshold 0: the application disabled automatic collection
    assert collector.pace_collector() is None
    assert gc.get_threshold()[0] == 0


def test_the_environment_sets_or_switches_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_GC_THRESHOLD", "2500")
    with collector.paced_collector():
        assert gc.get_threshold()[0] == 2500
    monkeypatch.setenv("TASKLOOM_GC_THRESHOLD", "0")
    with collector.paced_collector():
        assert gc.get_threshold() == (700, 10, 10)


def test_a_bad_setting_warns_and_says_what_to_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_GC_THRESHOLD", "lots")
    with pytest.warns(RuntimeWarning, match=r"TASKLOOM_GC_THRESHOLD='lots' is not a whole number >= 0.*set 0"):
        assert collector.young_threshold() == collector.YOUNG_THRESHOLD


def test_eventloop_run_paces_the_collector_for_the_run() -> None:
    async def inside() -> tuple[int, int, int]:
        return gc.get_threshold()

    assert eventloop.run(inside)[0] == collector.YOUNG_THRESHOLD
    assert gc.get_threshold() == (700, 10, 10)


@pytest.fixture
def nothing_frozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_a_run_heap_pauses_the_collector_until_settled_then_freezes_what_is_alive(nothing_frozen: None) -> None:
    kept = [[n] for n in range(1000)]  # containers the collector tracks
    with collector.RunHeap() as heap:
        assert not gc.isenabled() and gc.get_freeze_count() == 0
        heap.settle()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(kept)
        made_after = [[n] for n in range(10)]
        assert all(gc.is_tracked(x) for x in made_after)
    assert gc.get_freeze_count() == 0 and gc.isenabled()


@pytest.mark.parametrize("settled", [False, True])
def test_a_run_heap_puts_the_collector_back_after_an_error(nothing_frozen: None, settled: bool) -> None:
    with pytest.raises(KeyError), collector.RunHeap() as heap:
        if settled:
            heap.settle()
        raise KeyError("x")
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_no_young_collection_walks_what_was_built_when_collections_resume(nothing_frozen: None) -> None:
    collections: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(note)
    try:
        with collector.RunHeap() as heap:
            built = [[n] for n in range(20_000)]  # far past the young threshold (700 here)
            heap.settle()
            after = [n for n in range(10)]
            assert collections == [], "frozen before collections resumed: nothing left to walk"
            assert len(built) + len(after) == 20_010
    finally:
        gc.callbacks.remove(note)


def test_hands_off_when_the_application_froze_or_disabled_it_or_the_setting_says_so(
    nothing_frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.freeze()  # the application's own freeze (a pre-fork server does this)
    frozen = gc.get_freeze_count()
    with collector.RunHeap() as heap:
        assert gc.isenabled()
        heap.settle()
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == frozen, "the application's frozen objects stay frozen"
    gc.unfreeze()
    gc.disable()  # the application manages collections itself
    with collector.RunHeap() as heap:
        heap.settle()
        assert gc.get_freeze_count() == 0
    assert not gc.isenabled(), "a collector the application disabled stays disabled"
    gc.enable()
    monkeypatch.setenv("TASKLOOM_GC_THRESHOLD", "0")
    with collector.RunHeap() as heap:
        assert gc.isenabled()
        heap.settle()
        assert gc.get_freeze_count() == 0


def test_what_a_lasting_block_builds_is_built_without_collections_and_frozen(nothing_frozen: None) -> None:
    collections: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    with collector.RunHeap() as heap:
        heap.settle()
        before = gc.get_freeze_count()
        gc.callbacks.append(note)
        try:
            with heap.lasting():
                assert not gc.isenabled()
                kept = [[n] for n in range(20_000)]  # far past the young threshold
        finally:
            gc.callbacks.remove(note)
        assert collections == [], "no collection walked them while they were built"
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before + len(kept), "frozen with the rest for the run"
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_a_lasting_block_leaves_the_collector_alone_where_the_heap_froze_nothing(nothing_frozen: None) -> None:
    unentered = collector.RunHeap()  # (as the engine's for a resumed run's own record)
    with unentered.lasting():
        assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the application's own freeze: the heap keeps its hands off
    frozen = gc.get_freeze_count()
    with collector.RunHeap() as heap:
        heap.settle()
        with heap.lasting():
            assert gc.isenabled()
            made = [[n] for n in range(100)]
        assert gc.get_freeze_count() == frozen and len(made) == 100
