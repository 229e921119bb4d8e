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
(:func:`paused_collector`) and then, for the length of the run, moves every object alive
into the permanent generation (:func:`frozen_heap`, ``gc.freeze``), so the collections
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


@contextmanager
def paused_collector() -> Iterator[None]:
    """No collections in the block (it builds objects that live long: walking them finds no
    garbage); automatic collection back on afterwards."""
    if _hands_off():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Every object alive at the start of the block in the permanent generation for the
    block (``gc.freeze``), back in the oldest afterwards (``gc.unfreeze``)."""
    if _hands_off():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


__all__ = [
    "YOUNG_THRESHOLD",
    "frozen_heap",
    "pace_collector",
    "paced_collector",
    "paused_collector",
    "young_threshold",
]
