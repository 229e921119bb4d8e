"""How often the garbage collector looks at young objects while taskloom runs.

CPython collects its youngest generation every 700 (net) new container objects. An async
run makes many short-lived ones -- coroutines, futures, timer handles, request and
response models -- and every collection walks those still alive: the tasks in flight.
Each survivor is then walked again by the middle generation's collection. A 10,000-task
workflow run (``benchmarks/dag.py``) spent about 115 ms in young collections and 45 ms in
middle ones during its 4.2 s. Collecting the young every 10,000 new objects instead lets
most of them die by reference count first (a task finishes within milliseconds) and cut
its excess over the critical path by about a sixth (``docs/workflows.md#performance``).
Cycles are still found, a little later; the older generations keep Python's own pace.

:func:`paced_collector` does it for a block and puts the thresholds back after;
:func:`taskloom.eventloop.run` (every ``taskloom`` command) runs inside it. A threshold
that is already higher (set by the application) is kept. ``TASKLOOM_GC_THRESHOLD`` sets
the number; ``0`` leaves the collector as Python set it.

A run also builds structures it keeps to its end -- the graph, the spec as stored, the
run store's copy -- tens of thousands of containers for a 10,000-task workflow, none of
them garbage. The workflow engine builds them with the collector paused
and then, for the length of the run, moves every object alive into the permanent
generation (:class:`RunHeap`, ``gc.freeze``), so the collections
during the run walk only what the run makes: the 10,000-task run's one middle collection
had 65,000 objects to walk, 30,000 of them the stored spec. Frozen objects are still freed
when their last reference goes; only cycles among them wait for the run's end to be
collected. Neither is done when the application froze objects itself, disabled the
collector, or set ``TASKLOOM_GC_THRESHOLD=0``.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000
"""New container objects between two young collections while taskloom runs."""


def young_threshold() -> int:
    """The threshold to use: ``TASKLOOM_GC_THRESHOLD`` if set (0: leave Python's), else
    :data:`YOUNG_THRESHOLD`."""
    raw = os.environ.get("TASKLOOM_GC_THRESHOLD", "").strip()
    if not raw:
        return YOUNG_THRESHOLD
    try:
        value = int(raw)
        if value < 0:
            raise ValueError
    except ValueError:
        warnings.warn(
            f"TASKLOOM_GC_THRESHOLD={raw!r} is not a whole number >= 0; using {YOUNG_THRESHOLD} "
            "(set 0 to leave the garbage collector as Python set it)",
            RuntimeWarning,
            stacklevel=2,
        )
        return YOUNG_THRESHOLD
    return value


def pace_collector() -> tuple[int, int, int] | None:
    """Raise the young generation's threshold to :func:`young_threshold`; the thresholds
    before, or None when nothing changed (switched off, or already as high)."""
    wanted = young_threshold()
    before = gc.get_threshold()
    if wanted == 0 or before[0] >= wanted or before[0] == 0:  # (0: the application turned it off)
        return None
    gc.set_threshold(wanted, *before[1:])
    return before


@contextmanager
def paced_collector() -> Iterator[None]:
    """:func:`pace_collector` for the block; the thresholds it found afterwards."""
    before = pace_collector()
    try:
        yield
    finally:
        if before is not None:
            gc.set_threshold(*before)


def _hands_off() -> bool:
    """Whether to leave the collector as it is: switched off by the setting, disabled or
    frozen by the application."""
    return young_threshold() == 0 or not gc.isenabled() or gc.get_freeze_count() > 0


class RunHeap:
    """The collector around one run: paused from ``with`` until :meth:`settle` (the run
    builds what it keeps), then, from :meth:`settle` to the block's end, every object alive
    at :meth:`settle` frozen (``gc.freeze``); all as it was after the block, also when it
    raised. Freezing before collections resume matters: the first allocation after
    ``gc.enable()`` would set off a young collection walking everything built meanwhile.
    Does nothing where :func:`_hands_off` says so."""

    def __init__(self) -> None:
        self.paused = self.frozen = False

    def __enter__(self) -> RunHeap:
        if not _hands_off():
            gc.disable()
            self.paused = True
        return self

    def settle(self) -> None:
        """What the run keeps is built: freeze it, and collect again from here on."""
        if self.paused:
            gc.freeze()
            self.frozen = True
            gc.enable()
            self.paused = False

    @contextmanager
    def lasting(self) -> Iterator[None]:
        """A block, after :meth:`settle`, that builds more of what the run keeps to its end
        (the spec as stored, made once the first tasks run): built with the collector paused
        and frozen with the rest, so no collection walks it while the run lasts (a 10,000-task
        spec is 20,000 dicts and lists). As it is where this heap froze nothing."""
        if not self.frozen or not gc.isenabled():
            yield
            return
        gc.disable()
        try:
            yield
        finally:
            gc.freeze()
            gc.enable()

    def __exit__(self, *exc: object) -> None:
        if self.paused:
            gc.enable()
            self.paused = False
        if self.frozen:
            gc.unfreeze()
            self.frozen = False


__all__ = ["YOUNG_THRESHOLD", "RunHeap", "pace_collector", "paced_collector", "young_threshold"]
