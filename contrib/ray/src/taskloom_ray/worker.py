"""What runs inside a Ray worker process: a kernel rebuilt from the driver's configuration
(once per process, kept in a module global), and the agent loop of one attempt.

In ``tasks`` mode :func:`run_task` is the Ray task (synchronous; the attempt runs on an
event loop the process keeps in a background thread, so providers' connections survive
between tasks). In ``actors`` mode :class:`KernelActor` is an async Ray actor: attempts
run concurrently on the actor's own event loop.

Nothing here imports Ray: the driver wraps these with ``ray.remote`` when it starts.
"""

from __future__ import annotations

import asyncio
import os
import threading
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskloom.kernel import Kernel

_kernels: dict[str, Kernel] = {}
_kernel_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def worker_config(data: dict[str, Any], worker_store: str | None) -> dict[str, Any]:
    """The driver's raw config as a worker kernel uses it: the local executor (a worker never
    schedules), and the ledger store the driver chose for workers."""
    config = dict(data)
    section = dict(config.get("taskloom") or {})
    section["executor"] = "local"
    if worker_store is not None:
        section["store"] = worker_store
    config["taskloom"] = section
    return config


def kernel_for(key: str, config: dict[str, Any]) -> Kernel:
    """This process's kernel for a configuration, built on first use."""
    kernel = _kernels.get(key)
    if kernel is None:
        with _kernel_lock:
            kernel = _kernels.get(key)
            if kernel is None:
                from taskloom import load_kernel

                kernel = _kernels[key] = load_kernel(config)
    return kernel


async def run_attempt(key: str, config: dict[str, Any], spec_data: dict[str, Any]) -> dict[str, Any]:
    """Run one attempt on this process's kernel; the :class:`TaskOutcome` as a dict.

    The run's budget is not shared across processes: the attempt gets what was left when it
    started (``budget_*_left``) and the driver charges the outcome (``charged`` is False).
    A configuration error is an outcome (``stop_reason = "config"``, not retried).
    """
    from taskloom.agent import Budget
    from taskloom.builtin.local_executor import LocalExecutor
    from taskloom.errors import ConfigError
    from taskloom.workflow.executor import TaskOutcome, TaskSpec

    spec = TaskSpec.model_validate(spec_data)
    try:
        kernel = kernel_for(key, config)
        budget = None
        if spec.budget_usd_left is not None or spec.budget_tokens_left is not None:
            usd = Decimal(spec.budget_usd_left) if spec.budget_usd_left is not None else None
            budget = Budget(usd, spec.budget_tokens_left)
        outcome = await LocalExecutor().run(spec, kernel, budget)
    except ConfigError as exc:
        outcome = TaskOutcome(ok=False, stop_reason="config", error=f"ConfigError on Ray worker: {exc}")
    outcome.charged = False
    return outcome.model_dump(mode="json")


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="taskloom-ray-loop", daemon=True).start()
            _loop = loop
        return _loop


def run_task(key: str, config: dict[str, Any], spec_data: dict[str, Any]) -> dict[str, Any]:
    """The Ray task of ``tasks`` mode (wrapped with ``ray.remote(max_retries=0)``)."""
    future = asyncio.run_coroutine_threadsafe(run_attempt(key, config, spec_data), _background_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # a (non-forced) ray.cancel interrupts this thread: stop the attempt too
        raise


class KernelActor:
    """The actor of ``actors`` mode (wrapped with ``ray.remote``): async, so one actor runs
    many attempts at once on its event loop, with its kernel, providers and models warm.
    The configuration is given once, when the actor starts (and again when Ray restarts it)."""

    def __init__(self, key: str, config: dict[str, Any]) -> None:
        self.key = key
        self.config = config

    async def run(self, spec_data: dict[str, Any]) -> dict[str, Any]:
        return await run_attempt(self.key, self.config, spec_data)

    async def pid(self) -> int:
        return os.getpid()


__all__ = ["KernelActor", "kernel_for", "run_attempt", "run_task", "worker_config"]
