"""What runs inside a Ray worker process: a kernel rebuilt from the driver's configuration
(once per process, kept in a module global), and the agent loop of one attempt.

In ``tasks`` mode :func:`run_task` is the Ray task (synchronous; the attempt runs on an
event loop the process keeps in a background thread, so providers' connections survive
between tasks). In ``actors`` mode :class:`KernelActor` is an async Ray actor: attempts
arrive in batches (through Ray's channels, or as Ray calls) and run concurrently on the
actor's own event loop.

Nothing here imports Ray when the module loads: the driver wraps these with ``ray.remote``
when it starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from taskloom.collector import pace_collector
from taskloom.eventloop import has_precise_timers, make_precise, new_event_loop

if TYPE_CHECKING:
    from taskloom.kernel import Kernel

log = logging.getLogger(__name__)

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
    from taskloom.errors import ConfigError
    from taskloom.workflow.executor import TaskOutcome, TaskSpec

    spec = TaskSpec.model_validate(spec_data)
    try:
        kernel = kernel_for(key, config)
        budget = None
        if spec.budget_usd_left is not None or spec.budget_tokens_left is not None:
            usd = Decimal(spec.budget_usd_left) if spec.budget_usd_left is not None else None
            budget = Budget(usd, spec.budget_tokens_left)
        outcome = await kernel.executor.run(spec, kernel, budget)  # the local executor (worker_config)
    except ConfigError as exc:
        outcome = TaskOutcome(ok=False, stop_reason="config", error=f"ConfigError on Ray worker: {exc}")
    outcome.charged = False
    return outcome.model_dump(mode="json")


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = new_event_loop()  # timers as precise as the driver's
            pace_collector()  # and the collector paced as in the driver (this process runs attempts)
            threading.Thread(target=loop.run_forever, name="taskloom-ray-loop", daemon=True).start()
            _loop = loop
        return _loop


def run_task(key: str, config: dict[str, Any] | list[Any], spec_data: dict[str, Any]) -> dict[str, Any]:
    """The Ray task of ``tasks`` mode (wrapped with ``ray.remote(max_retries=0)``).

    ``config`` is the worker configuration, or a one-item list with its Ray object
    reference (put once by the driver): it is fetched only when this process has no kernel
    for ``key`` yet, so the tasks after the first carry a reference and nothing else."""
    if isinstance(config, list):
        if key in _kernels:
            config = {}  # not needed: the kernel is built
        else:
            import ray

            config = ray.get(config[0])
    future = asyncio.run_coroutine_threadsafe(run_attempt(key, config, spec_data), _background_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # a (non-forced) ray.cancel interrupts this thread: stop the attempt too
        raise


# Seconds an actor goes on polling its channels with no attempt to run.
IDLE = 0.5


class DriverProxy:
    """An empty actor on the driver's node: it stands for the driver as the reader of the
    actors' outcome channels (Ray's channels are read by actors; a channel's writer calls
    its reader's node through it)."""


class StaleActorError(RuntimeError):
    """A call meant for an actor that Ray has restarted since: its attempts died with it."""


class KernelActor:
    """The actor of ``actors`` mode (wrapped with ``ray.remote``): async, so one actor runs
    many attempts at once on its event loop, with its kernel, providers and models warm.
    The configuration is given once, when the actor starts (and again when Ray restarts it).

    Attempts travel in batches, each attempt started as its own asyncio task (at most
    ``concurrency`` run at a time); each outcome goes back as soon as its attempt finished,
    with whatever else finished by then. Two transports:

    * channels (:meth:`open_channel`, :meth:`attach`): the actor polls the driver's channel
      for batches and writes outcomes to its own, until nothing has run for ``idle``
      seconds; then it tells the driver and stops, and :meth:`wake` (a Ray call with the
      driver's next batch) starts it again. :meth:`watch` stays open while the instance
      lives, so that the driver learns of its death.
    * calls: :meth:`exchange` takes a batch and is also the driver's long poll: it answers
      as soon as at least one attempt finished, with every attempt finished by then (a
      chain of tasks costs one call per task).

    Every call names the actor instance it was meant for (:meth:`hello` tells it): after a
    restart, calls for the dead instance raise :class:`StaleActorError`, so an attempt is
    never run by an instance the driver no longer waits on."""

    def __init__(self, key: str, config: dict[str, Any], concurrency: int = 64, idle: float = IDLE) -> None:
        self.key = key
        self.config = config
        self.instance = uuid.uuid4().hex
        self._concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        self._running: dict[int, asyncio.Task[None]] = {}
        self._cancelled: set[int] = set()  # cancels that arrived before their attempt
        self._done: list[tuple[int, str, Any]] = []
        self._wake: asyncio.Event | None = None
        self._polling = False  # an exchange call is waiting for outcomes
        # Channels (see taskloom_ray.channels): the two ends, the task polling them, the
        # seq of the last message read, and how long to go on polling with nothing to do.
        self._inbox: Any = None
        self._outbox: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._read_seq = 0
        self._idle = idle
        self._watch: asyncio.Event | None = None
        self._counts = {"exchange_calls": 0, "batches_read": 0, "wakes": 0}

    def _check(self, instance: str) -> None:
        if instance != self.instance:
            raise StaleActorError("this actor was restarted: the attempts sent to its previous instance are lost")

    async def hello(self) -> str:
        """This instance's id (a new one each time Ray restarts the actor)."""
        make_precise(asyncio.get_running_loop())  # Ray made this loop: give it precise timers too
        pace_collector()  # an actor's process runs attempts only: pace its collector as the driver's
        return self.instance

    async def exchange(self, instance: str, batch: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, str, Any]]:
        """Start the attempts of ``batch`` (``(key, TaskSpec as a dict)``) and answer with the
        attempts finished since the last answer: ``(key, "ok", outcome)`` or ``(key, "error",
        "Type: message")``.

        One call at a time is the long poll: it waits until at least one attempt finished.
        A call that arrives while another waits answers at once (with what finished, maybe
        nothing), so the driver never has more than one call waiting here."""
        self._check(instance)
        self._counts["exchange_calls"] += 1
        self._start(batch)
        if not self._done and not self._polling:
            if self._wake is None:
                self._wake = asyncio.Event()
            self._polling = True
            try:
                while not self._done:
                    self._wake.clear()
                    await self._wake.wait()
            finally:
                self._polling = False
        done, self._done = self._done, []
        return done

    def _start(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """Start each attempt of ``batch`` as an asyncio task (unless cancelled already)."""
        if not batch:
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        loop = asyncio.get_running_loop()
        for key, spec_data in batch:
            if key in self._cancelled:
                self._cancelled.discard(key)
                continue
            self._running[key] = loop.create_task(self._attempt(key, spec_data))

    async def _attempt(self, key: int, spec_data: dict[str, Any]) -> None:
        assert self._slots is not None
        item: tuple[int, str, Any]
        try:
            async with self._slots:
                item = (key, "ok", await run_attempt(self.key, self.config, spec_data))
        except asyncio.CancelledError:
            self._running.pop(key, None)
            return  # cancelled by the driver, which no longer waits for it
        except Exception as exc:
            item = (key, "error", f"{type(exc).__name__}: {exc}")
        self._running.pop(key, None)
        self._done.append(item)
        if self._inbox is not None:
            try:
                self._send_done()  # now, not at the next poll, if the driver read the last message
            except Exception as exc:  # the poller sees it too and stops
                log.debug("taskloom-ray: writing an outcome to the driver's channel failed: %s", exc)
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ channels

    async def open_channel(self, instance: str, proxy: Any, driver_node: str, size: int) -> tuple[str, Any]:
        """Make the channel this instance writes outcomes to (read by the driver, ``proxy``
        standing for it on node ``driver_node``); answer this actor's node id and the channel."""
        import ray

        from . import channels

        self._check(instance)
        self._outbox = await asyncio.to_thread(channels.to_driver, proxy, driver_node, size)
        return ray.get_runtime_context().get_node_id(), self._outbox

    async def attach(self, instance: str, inbox: Any) -> None:
        """Take the channel the driver writes attempts to, and start polling it."""
        self._check(instance)
        await asyncio.to_thread(inbox.ensure_registered_as_reader)
        self._inbox = inbox
        self._start_polling()

    async def wake(self, instance: str, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """The driver's doorbell, rung after this actor said it stopped polling: start the
        attempts of ``batch`` and poll the channels again."""
        self._check(instance)
        self._counts["wakes"] += 1
        self._start(batch)
        self._start_polling()

    async def watch(self, instance: str) -> None:
        """A call that stays open while this instance lives, so that the driver learns of
        its death (the call fails) without a call per batch. A newer watch ends the older."""
        self._check(instance)
        if self._watch is not None:
            self._watch.set()
        self._watch = event = asyncio.Event()
        await event.wait()

    def _start_polling(self) -> None:
        if self._inbox is not None and (self._poller is None or self._poller.done()):
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def _send_done(self) -> bool:
        from . import channels

        if not self._done or not channels.try_write(self._outbox, (self._done, None)):
            return False
        self._done = []
        return True

    async def _poll(self) -> None:
        """Read the driver's batches and write the finished attempts until nothing has run
        for ``idle`` seconds; then tell the driver so (with the seq of the last batch read)
        and stop: the driver rings :meth:`wake` with its next batch. A channel the driver
        closed (or whose reader died) stops it too."""
        from . import channels

        loop = asyncio.get_running_loop()
        backoff = channels.Backoff()
        busy_at = loop.time()
        inbox = None
        try:
            while True:
                inbox = self._inbox  # attach() may give a new one (the driver reconnected)
                message = channels.try_read(inbox)
                active = message is not None
                if message is not None:
                    self._read_seq, batch = message
                    self._counts["batches_read"] += 1
                    self._start(batch)
                active = self._send_done() or active
                if active or self._running or self._done:
                    busy_at = loop.time()
                elif loop.time() - busy_at >= self._idle and channels.try_write(self._outbox, ([], self._read_seq)):
                    return
                if active:
                    backoff.reset()
                await asyncio.sleep(backoff.next())
        except Exception as exc:  # closed by the driver, or its end died
            if self._inbox is inbox:
                self._inbox = None
            log.debug("taskloom-ray: actor stops polling its channels: %s", exc)

    async def transport(self) -> dict[str, Any]:
        """How batches reached this instance: ``exchange`` calls, batches read from the
        channel, doorbells (``wakes``), whether it polls the channel now (it stops after
        ``idle`` seconds with nothing to run), and the Ray node it runs on."""
        import ray

        polling = self._poller is not None and not self._poller.done()
        return {**self._counts, "polling": polling, "node": ray.get_runtime_context().get_node_id()}

    async def cancel(self, instance: str, keys: list[int]) -> None:
        """Cancel these attempts (the driver gave up on them: timeout, fail-fast, Ctrl-C)."""
        self._check(instance)
        for key in keys:
            task = self._running.get(key)
            if task is not None:
                task.cancel()
            else:  # not submitted yet (or finished already)
                if len(self._cancelled) > 10_000:
                    self._cancelled.clear()
                self._cancelled.add(key)

    async def pid(self) -> int:
        return os.getpid()

    async def precise_timers(self) -> bool:
        """Whether this actor's event loop has taskloom's precise timers (:meth:`hello` gives them)."""
        return has_precise_timers(asyncio.get_running_loop())


__all__ = ["DriverProxy", "KernelActor", "StaleActorError", "kernel_for", "run_attempt", "run_task", "worker_config"]
