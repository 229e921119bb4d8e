"""``memory-store``: a run store kept in process memory. Nothing outlives the process;
use the SQLite store for resumable runs.

Runs and checkpoints are kept as copies, and handed out as copies, so neither the caller's
later changes nor a reader's reach the store. The copies are cheap: a record is copied
field by field, values that cannot change (strings, numbers, ``Decimal``) are shared, nested
models are copied the same way, and containers (inputs, the workflow spec, outputs) go
through pickle, which is exact and many times faster than ``copy.deepcopy`` (the fallback
for what pickle refuses). A checkpoint costs a few microseconds, not a deep copy's fifty.

A checkpoint is kept packed: one tuple of plain values (its usage and cost as nested tuples,
a structured output as pickled bytes), rebuilt into a :class:`TaskRecord` when read. The
garbage collector does not track such tuples, so a 10,000-task run does not leave some
90,000 objects (records, their usage and cost, their dicts and field sets) for every full
collection to walk. A run is kept with its spec and inputs serialised (marshal for plain
data, pickle for the rest), for the same reason.
``runs`` and ``tasks`` still show them as records.
"""

from __future__ import annotations

import copy
import marshal
import operator
import pickle
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

from taskloom import hookimpl
from taskloom.config import Settings
from taskloom.records import CallRecord, RunRecord, TaskRecord, ToolCallRecord
from taskloom.types import Event

_ATOMIC = frozenset({str, int, float, bool, type(None), Decimal, bytes})
M = TypeVar("M", bound=BaseModel)


_set = object.__setattr__


def _copy_value(value: Any) -> Any:
    kind = type(value)
    if kind in _ATOMIC:
        return value
    if isinstance(value, BaseModel):
        return _copy_model(value)
    try:
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:  # not picklable (a lambda in the inputs): the slow, general way
        return copy.deepcopy(value)


def _copy_model(model: M, given: dict[str, Any] | None = None) -> M:
    """An independent copy of ``model``, equal to ``model_copy(deep=True)``, without its cost
    (``given``: copies of some fields made already)."""
    if model.__pydantic_private__:  # private attributes: pydantic's own way (records have none)
        return model.model_copy(deep=True)
    cls = type(model)
    dup = cls.__new__(cls)
    fields = model.__dict__.copy()
    for key, value in fields.items():
        if given and key in given:
            fields[key] = given[key]
        elif type(value) not in _ATOMIC:
            fields[key] = _copy_value(value)
    extra = model.__pydantic_extra__
    _set(dup, "__dict__", fields)
    _set(dup, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    _set(dup, "__pydantic_extra__", None if extra is None else _copy_value(extra))
    _set(dup, "__pydantic_private__", None)
    return dup


# Packed records: ("m", kind, fields-set mask, *values in field order), each value atomic, a
# packed model, or ("p", pickled bytes) for a container. ``kind`` indexes _KINDS.
_KINDS: list[type[BaseModel]] = []
_NAMES: list[tuple[str, ...]] = []
# Per model class: its kind, its number of fields, a getter of their values in field order
# (operator.itemgetter: one C call), their names as a set, one bit per name, every bit.
_Layout = tuple[int, int, Callable[[dict[str, Any]], tuple[Any, ...]], frozenset[str], dict[str, int], int]
_LAYOUTS: dict[type[BaseModel], _Layout] = {}


class _Refused(Exception):
    """A value that does not pack: the record is kept as a copied model instead."""


def _register(cls: type[BaseModel]) -> _Layout:
    names = tuple(cls.model_fields)
    kind = len(_KINDS)
    _KINDS.append(cls)
    _NAMES.append(names)
    getter = operator.itemgetter(*names) if len(names) > 1 else _one_or_none(names)
    layout = (
        kind,
        len(names),
        getter,
        frozenset(names),
        {n: 1 << i for i, n in enumerate(names)},
        (1 << len(names)) - 1,
    )
    _LAYOUTS[cls] = layout
    return layout


def _one_or_none(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The values getter of a model with one field or none (itemgetter returns a tuple only
    for two names or more)."""
    return lambda fields: tuple([fields[name] for name in names])


def _pack_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        packed = _pack(value)
        if packed is None:
            raise _Refused
        return packed
    try:
        return ("p", pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:
        raise _Refused from None


def _pack(model: BaseModel) -> tuple[Any, ...] | None:
    """``model`` as a tuple of plain values, or None when it does not pack (extra or private
    attributes, a value pickle refuses): it is then kept as a copied model."""
    if model.__pydantic_extra__ or model.__pydantic_private__:
        return None
    layout = _LAYOUTS.get(type(model))
    if layout is None:
        layout = _register(type(model))
    kind, size, values_of, names, bits, every = layout
    fields = model.__dict__
    if len(fields) != size:  # every field and nothing else (then the getter finds them all)
        return None
    try:
        values = values_of(fields)
    except KeyError:
        return None
    if not _ATOMIC.issuperset(map(type, values)):  # some values need packing (checked in C first)
        try:
            values = tuple([v if type(v) in _ATOMIC else _pack_value(v) for v in values])
        except _Refused:
            return None
    given = model.__pydantic_fields_set__
    if len(given) == size and names.issuperset(given):
        mask = every
    elif not given:
        mask = 0
    else:
        mask = sum([bits[name] for name in given if name in bits])
    return ("m", kind, mask, *values)


def _unpack(packed: tuple[Any, ...]) -> Any:
    kind, mask = packed[1], packed[2]
    cls, names = _KINDS[kind], _NAMES[kind]
    fields = dict(zip(names, packed[3:], strict=True))
    for name, value in fields.items():
        if type(value) is tuple:
            fields[name] = _unpack(value) if value[0] == "m" else pickle.loads(value[1])
    obj = cls.__new__(cls)
    _set(obj, "__dict__", fields)
    _set(obj, "__pydantic_fields_set__", {name for i, name in enumerate(names) if mask >> i & 1})
    _set(obj, "__pydantic_extra__", {} if cls.model_config.get("extra") == "allow" else None)
    _set(obj, "__pydantic_private__", None)
    return obj


def _kept(task: TaskRecord) -> tuple[Any, ...] | TaskRecord:
    return _pack(task) or _copy_model(task)


def _record(kept: tuple[Any, ...] | TaskRecord) -> TaskRecord:
    if isinstance(kept, tuple):
        record: TaskRecord = _unpack(kept)
        return record
    return _copy_model(kept)


# A run: the record without its spec and inputs, those two serialised (a workflow of 10,000
# tasks is 20,000 dicts and lists as a spec, one bytes object kept), and the objects they
# were serialised from. A value neither marshal nor pickle takes stays in the record,
# deep-copied.
_Blob = tuple[bool, bytes]  # (marshalled, the bytes): marshal for plain data, else pickle
_KeptRun = tuple[RunRecord, dict[str, _Blob], dict[str, Any]]
_BIG = ("spec", "inputs")


def _serialise(value: Any) -> _Blob:
    """``value`` as bytes: with marshal when it is built of plain JSON-like types only (a
    spec is: a third faster than pickle both ways, 5 ms instead of 7.5 for 10,000 tasks);
    anything else (a subclass, a Decimal, a model) with pickle. Marshal refuses what it
    cannot restore exactly, subclasses included."""
    try:
        return True, marshal.dumps(value)
    except ValueError:
        return False, pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _deserialise(blob: _Blob) -> Any:
    marshalled, data = blob
    return marshal.loads(data) if marshalled else pickle.loads(data)


def _keep_run(run: RunRecord, before: _KeptRun | None = None) -> _KeptRun:
    """``run`` as kept. An update that carries the very spec or inputs object serialised
    before keeps those bytes: a run's spec and inputs are fixed once it exists (the engine
    updates a run at its end; serialising a 10,000-task spec again would cost 5-15 ms)."""
    blobs: dict[str, _Blob] = {}
    sources: dict[str, Any] = {}
    for name in _BIG:
        value = getattr(run, name)
        if before is not None and before[2].get(name) is value:
            blobs[name] = before[1][name]
        else:
            try:
                blobs[name] = _serialise(value)
            except Exception:
                continue
        sources[name] = value
    return _copy_model(run, dict.fromkeys(blobs)), blobs, sources


def _run_record(kept: _KeptRun) -> RunRecord:
    light, blobs, _ = kept
    return _copy_model(light, {name: _deserialise(blob) for name, blob in blobs.items()})


class MemoryStore:
    def __init__(self, keep_events: int = 10_000) -> None:
        self._runs: dict[str, _KeptRun] = {}
        self._tasks: dict[str, dict[str, tuple[Any, ...] | TaskRecord]] = {}
        self.calls: list[CallRecord] = []
        self.tool_calls: list[ToolCallRecord] = []
        self.events: list[Event] = []
        self.keep_events = keep_events

    @property
    def runs(self) -> dict[str, RunRecord]:
        """Every run, by id (copies, rebuilt on each read)."""
        return {run_id: _run_record(kept) for run_id, kept in self._runs.items()}

    async def create_run(self, run: RunRecord) -> None:
        if run.id in self._runs:
            raise ValueError(f"run {run.id} already exists")
        self._runs[run.id] = _keep_run(run)
        self._tasks.setdefault(run.id, {})

    async def update_run(self, run: RunRecord) -> None:
        before = self._runs.get(run.id)
        if before is None:
            raise KeyError(f"unknown run {run.id}")
        self._runs[run.id] = _keep_run(run, before)

    async def get_run(self, run_id: str) -> RunRecord | None:
        kept = self._runs.get(run_id)
        return _run_record(kept) if kept else None

    async def list_runs(self, limit: int = 50) -> list[RunRecord]:
        kept = sorted(self._runs.values(), key=lambda k: k[0].started_at, reverse=True)
        return [_run_record(k) for k in kept[:limit]]

    @property
    def tasks(self) -> dict[str, dict[str, TaskRecord]]:
        """Every checkpoint, by run and task id (copies, rebuilt on each read)."""
        return {run: {tid: _record(t) for tid, t in kept.items()} for run, kept in self._tasks.items()}

    async def save_task(self, task: TaskRecord) -> None:
        kept = self._tasks.get(task.run_id)
        if kept is None:
            kept = self._tasks[task.run_id] = {}
        kept[task.task_id] = _kept(task)

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        return [_record(t) for t in self._tasks.get(run_id, {}).values()]

    async def record_call(self, call: CallRecord) -> None:
        # Kept as given: packing every call (as checkpoints are) would cost each model
        # call a few microseconds of the gateway's budget.
        self.calls.append(call)

    async def record_tool_call(self, call: ToolCallRecord) -> None:
        self.tool_calls.append(call)

    async def record_event(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) > self.keep_events:
            del self.events[: len(self.events) - self.keep_events]

    async def get_calls(self, run_id: str) -> list[CallRecord]:
        return [c for c in self.calls if c.run_id == run_id]

    async def get_tool_calls(self, run_id: str) -> list[ToolCallRecord]:
        return [c for c in self.tool_calls if c.run_id == run_id]

    async def get_events(self, run_id: str) -> list[Event]:
        return [e for e in self.events if e.run_id == run_id]

    async def aclose(self) -> None:
        return None


@hookimpl
def taskloom_register_stores(register: Callable[..., None], settings: Settings) -> None:
    register("memory", lambda settings: MemoryStore())
