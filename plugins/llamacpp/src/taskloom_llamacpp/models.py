"""Loaded llama.cpp models, shared process-wide.

A model is loaded lazily, once per (file, context size, threads, mode), and shared by every
alias and kernel that points at the same file with the same settings. Each loaded model
runs one generation at a time: waiters queue in arrival order on a fair ``anyio.Lock`` of
their event loop, and a thread lock held for the whole generation keeps two event loops
(or plain threads) from ever using the llama.cpp context together.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from taskloom.errors import ConfigError

if TYPE_CHECKING:
    from llama_cpp import Llama


@dataclass(frozen=True)
class ModelKey:
    """What makes two deployments share one loaded model."""

    path: Path
    n_ctx: int
    n_threads: int | None
    embedding: bool = False
    verbose: bool = False


@dataclass
class LoadedModel:
    key: ModelKey
    llama: Llama
    generations: int = 0
    """Generations run so far (for tests and diagnostics)."""
    _thread_lock: threading.Lock = field(default_factory=threading.Lock)
    _loop_locks: dict[int, anyio.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def n_ctx(self) -> int:
        return int(self.llama.n_ctx())

    def _loop_lock(self) -> anyio.Lock:
        ident = threading.get_ident()  # one event loop runs per thread
        with self._guard:
            lock = self._loop_locks.get(ident)
            if lock is None:
                lock = self._loop_locks[ident] = anyio.Lock()
            return lock

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the model for one generation; waiters are served first come, first served."""
        async with self._loop_lock():
            if not self._thread_lock.acquire(blocking=False):
                await self._acquire_off_loop()
            try:
                self.generations += 1
                yield
            finally:
                self._thread_lock.release()

    async def _acquire_off_loop(self) -> None:
        """Another event loop or thread holds the model: wait in a worker thread."""
        taken: list[bool] = []

        def take() -> None:
            self._thread_lock.acquire()
            taken.append(True)

        try:
            await anyio.to_thread.run_sync(take)
        except BaseException:
            if taken:
                self._thread_lock.release()
            raise

    @contextlib.contextmanager
    def exclusive_sync(self) -> Any:
        with self._thread_lock:
            yield


_registry: dict[ModelKey, LoadedModel] = {}
_registry_lock = threading.Lock()
_loading: dict[ModelKey, threading.Lock] = {}
loads = 0
"""How many times a model file was actually loaded in this process."""


def get_model(key: ModelKey) -> LoadedModel:
    """The loaded model for ``key``, loading it on first use (blocking; call off the loop)."""
    model = _registry.get(key)
    if model is not None:
        return model
    with _registry_lock:
        per_key = _loading.setdefault(key, threading.Lock())
    with per_key:
        model = _registry.get(key)
        if model is None:
            model = LoadedModel(key, _load(key))
            with _registry_lock:
                _registry[key] = model
    return model


def cached(key: ModelKey) -> LoadedModel | None:
    return _registry.get(key)


def _load(key: ModelKey) -> Llama:
    global loads
    from llama_cpp import Llama

    kwargs: dict[str, Any] = {"model_path": str(key.path), "n_ctx": key.n_ctx, "verbose": key.verbose}
    if key.n_threads is not None:
        kwargs["n_threads"] = key.n_threads
        kwargs["n_threads_batch"] = key.n_threads
    if key.embedding:
        kwargs["embedding"] = True
    try:
        llama = Llama(**kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ConfigError(f"llama.cpp could not load the model file {key.path}: {exc}") from None
    loads += 1
    return llama


def unload_all() -> None:
    """Drop every loaded model (for tests; the models are freed when unreferenced)."""
    with _registry_lock:
        for model in _registry.values():
            close = getattr(model.llama, "close", None)
            if close is not None:
                with model.exclusive_sync():
                    close()
        _registry.clear()
        _loading.clear()


# Free the models while llama.cpp's bindings still exist (not in __del__ at interpreter exit).
atexit.register(unload_all)
