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


def test_the_collector_is_paused_for_the_block_and_back_on_after_an_error_too(nothing_frozen: None) -> None:
    with collector.paused_collector():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector.paused_collector():
        raise KeyError("x")
    assert gc.isenabled()


def test_what_is_alive_is_frozen_for_the_block_and_unfrozen_after(nothing_frozen: None) -> None:
    kept = [[n] for n in range(1000)]  # containers the collector tracks
    with collector.frozen_heap():
        assert gc.get_freeze_count() >= len(kept)
        made_inside = [[n] for n in range(10)]
        assert all(gc.is_tracked(x) for x in made_inside)
    assert gc.get_freeze_count() == 0
    with pytest.raises(KeyError), collector.frozen_heap():
        raise KeyError("x")
    assert gc.get_freeze_count() == 0


def test_hands_off_when_the_application_froze_or_disabled_it_or_the_setting_says_so(
    nothing_frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.freeze()  # the application's own freeze (a pre-fork server does this)
    frozen = gc.get_freeze_count()
    with collector.frozen_heap(), collector.paused_collector():
        assert gc.get_freeze_count() == frozen and gc.isenabled()
    assert gc.get_freeze_count() == frozen, "the application's frozen objects stay frozen"
    gc.unfreeze()
    gc.disable()  # the application manages collections itself
    with collector.frozen_heap():
        assert gc.get_freeze_count() == 0
    with collector.paused_collector():
        pass
    assert not gc.isenabled(), "a collector the application disabled stays disabled"
    gc.enable()
    monkeypatch.setenv("TASKLOOM_GC_THRESHOLD", "0")
    with collector.frozen_heap(), collector.paused_collector():
        assert gc.get_freeze_count() == 0 and gc.isenabled()
