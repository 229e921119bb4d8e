"""The driver side: submits each attempt's :class:`TaskSpec` to Ray and awaits its outcome.

The scheduler (retries, timeouts, checkpoints, compensation) stays in the driver. An
attempt crosses to Ray as plain data (the spec as JSON; the driver's configuration is
given to each actor once, and put in Ray's object store once for the Ray tasks, which
carry only its reference) and comes back as a :class:`TaskOutcome` dict.

In ``actors`` mode the attempts that become ready within a few turns of the event loop go
to an actor as one batch, and each outcome comes back as soon as its attempt finished,
with whatever else finished by then; so a dependant starts as soon as its own
dependencies are done. With ``transport = "channels"`` (default) batches and outcomes go
through two of Ray's shared-memory channels per actor, polled at both ends while there is
work (see :mod:`taskloom_ray.channels`; an actor idle for a while stops polling, and the
next batch goes with a Ray call that wakes it); with ``"calls"``, and for an actor whose
channels cannot be set up, each batch is one Ray call (``exchange``) that the actor
answers as a long poll (see :class:`~taskloom_ray.worker.KernelActor`). A Ray task
(``tasks`` mode, or an attempt that needs mapped resources) is one call per attempt.

Ray's own retries are off (``max_retries=0``, ``max_task_retries=0``), so the workflow's
retry policy is the only one: a worker that dies mid-attempt raises :class:`WorkerLost`,
which the scheduler counts as a failed attempt and retries (the driver learns of an actor's
death from a call that stays open while it lives, or from any call to it). Calls to an
actor name the actor instance they were meant for, and channels belong to one instance, so
after Ray restarted it, a batch meant for the dead instance is refused rather than run
behind the scheduler's back. Cancellation (the task's
timeout, fail-fast, Ctrl-C) cancels the Ray task (``ray.cancel(force=True)`` kills its
worker) or, on an actor, that one attempt on the actor's loop.

Ray is imported on the first attempt, not when the plugin loads.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
from typing import TYPE_CHECKING, Any

import anyio
from taskloom.workflow.executor import TaskOutcome, TaskSpec

from . import channels
from .config import RayConfig
from .errors import RayClusterError, RemoteTaskError, WorkerLost
from .worker import IDLE, worker_config

# Ray's switch for clusters of several machines; off, a head node binds to loopback.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

if TYPE_CHECKING:
    from taskloom.agent import Budget
    from taskloom.config import Settings
    from taskloom.kernel import Kernel


def loopback_only() -> None:
    """Make a local cluster this process starts live on 127.0.0.1.

    By default Ray gives a new head node the machine's network address, and its processes
    talk to each other through it. A cluster that taskloom starts is one machine's, so it
    uses the loopback address instead and nothing leaves the host. Ray reads the setting
    when it is first imported; a process that imported Ray already keeps Ray's default.
    """
    os.environ.setdefault(LOCAL_ONLY_ENV, "0")


log = logging.getLogger(__name__)

# Ray calls one actor runs at once: the driver's long poll, a few batches, a cancel, a ping.
_ACTOR_CALLS = 16

# Turns of the event loop a new attempt (or the poll that follows an answer) waits for
# others to join its call. Each Ray call costs the driver and the actor about 1 ms of CPU
# apiece on a 2-core machine, so fewer, fuller calls leave more CPU to everything else; a
# turn costs microseconds.
_FLUSH_TICKS = 4


class RayExecutor:
    """Executor ``ray``: one Ray task per attempt, or a pool of warm async actors."""

    name = "ray"
    # Seconds an actor goes on polling its channels with nothing to run (see KernelActor).
    actor_idle = IDLE

    def __init__(self, settings: Settings, config: RayConfig | None = None) -> None:
        self.settings = settings
        self.config = config or RayConfig()
        data = worker_config(settings.data, self.config.worker_store)
        self._config_data = data
        self._config_key = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self._started = False
        self._owns_cluster = False
        self._start_error: RayClusterError | None = None
        self._start_lock: anyio.Lock | None = None
        self._limit: anyio.Semaphore | None = None
        self._remote: Any = None  # the ray.remote task function
        self._config_ref: Any = None  # tasks: the worker config in Ray's object store, put once
        self._options: dict[tuple[tuple[str, int], ...], Any] = {}
        self._actors: list[Any] = []
        # Actors mode, per actor: attempts in flight, the instance Ray runs now (None while
        # it is (re)starting), the attempts waiting for their outcome (key -> future), and
        # those not sent yet (sent as one batch when the event loop comes round).
        self._load: list[int] = []
        self._instance: list[str | None] = []
        self._waiting: list[dict[int, asyncio.Future[tuple[str, Any]]]] = []
        self._outgoing: list[list[tuple[int, dict[str, Any]]]] = []
        self._calls: list[int] = []  # exchange calls not answered yet
        # Channels transport, per actor: the link with its instance (None: calls), the task
        # polling it; and the actor on this node that stands for the driver as a reader.
        self._links: list[channels.DriverLink | None] = []
        self._pumps: list[asyncio.Task[None] | None] = []
        self._proxy: Any = None
        self._keys = itertools.count()
        self._flush_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ start-up

    async def _start(self) -> None:
        if self._started:
            return
        if self._start_error is not None:
            raise self._start_error
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
        async with self._start_lock:
            if self._started:
                return
            if self._start_error is not None:
                raise self._start_error
            try:
                await anyio.to_thread.run_sync(self._start_sync)
            except RayClusterError as exc:
                self._start_error = exc
                raise
            if self.config.max_in_flight is not None:
                self._limit = anyio.Semaphore(self.config.max_in_flight)
            self._started = True

    def _start_sync(self) -> None:
        if self.config.address is None:
            loopback_only()
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a dependency of the distribution
            raise RayClusterError(f"executor 'ray' needs the ray package: pip install taskloom-ray ({exc})") from None
        cfg = self.config
        runtime_env = cfg.runtime_env
        if ray.is_initialized():
            # The application (or a test) connected already: use that cluster and give the
            # runtime environment to every task and actor instead of to the job.
            log.info("taskloom-ray: using the Ray cluster this process is already connected to")
        else:
            kwargs: dict[str, Any] = {
                "address": cfg.address,
                "include_dashboard": False,
                "log_to_driver": cfg.log_to_driver,
                "logging_level": logging.WARNING,
                "configure_logging": False,
            }
            if cfg.runtime_env is not None:
                kwargs["runtime_env"] = cfg.runtime_env
            if cfg.namespace is not None:
                kwargs["namespace"] = cfg.namespace
            if cfg.address is None:
                kwargs["num_cpus"] = cfg.local_num_cpus
                if cfg.local_resources:
                    kwargs["resources"] = dict(cfg.local_resources)
            where = f"the Ray cluster at {cfg.address!r}" if cfg.address else "a local Ray cluster"
            try:
                if cfg.address is not None:
                    _reachable(cfg.address, cfg.connect_timeout)
                ray.init(**kwargs)
            except Exception as exc:
                hint = (
                    "check [plugins.ray] address (a running cluster's GCS address, e.g. HOST:6379 or "
                    "ray://HOST:10001), or remove it to start a local cluster"
                    if cfg.address
                    else "see the Ray logs in /tmp/ray/session_latest/logs"
                )
                raise RayClusterError(
                    f"{self.settings.where}: cannot start {where}: {type(exc).__name__}: {exc}; {hint}"
                ) from None
            self._owns_cluster = True
            runtime_env = None  # job-level already
        from . import worker

        extra: dict[str, Any] = {"runtime_env": runtime_env} if runtime_env is not None else {}
        # Tasks mode runs every attempt as a Ray task; actors mode too, for the attempts of
        # tasks that need mapped resources (an actor call cannot take resources of its own).
        self._remote = ray.remote(max_retries=0, **extra)(worker.run_task)
        # Put once; each task carries only the reference, inside a list so that Ray does
        # not fetch the value for every task: a worker reads it only to build its kernel.
        self._config_ref = ray.put(self._config_data)
        if cfg.mode == "actors":
            actor_class = ray.remote(worker.KernelActor).options(
                max_restarts=-1,
                max_task_retries=0,
                # The attempts run as asyncio tasks the actor starts itself (at most
                # actor_concurrency at once); Ray's calls are the few batches in flight.
                max_concurrency=_ACTOR_CALLS,
                **cfg.base_options(),
                **extra,
            )
            self._actors = [
                actor_class.remote(self._config_key, self._config_data, cfg.actor_concurrency, self.actor_idle)
                for _ in range(cfg.actors)
            ]
            self._load = [0] * cfg.actors
            self._instance = [None] * cfg.actors
            self._waiting = [{} for _ in range(cfg.actors)]
            self._outgoing = [[] for _ in range(cfg.actors)]
            self._calls = [0] * cfg.actors
            self._links = [None] * cfg.actors
            self._pumps = [None] * cfg.actors
            if self._use_channels():
                self._proxy = _driver_proxy(ray, worker.DriverProxy)

    def _use_channels(self) -> bool:
        """Channels need the driver to be a worker of the cluster, which a Ray Client is not."""
        address = self.config.address or ""
        return self.config.transport == "channels" and not address.startswith("ray://")

    # ------------------------------------------------------------------ resources

    def _signature(self, spec: TaskSpec) -> tuple[tuple[str, int], ...]:
        """The attempt's workflow resources that ``resource_map`` requests from Ray, sorted."""
        if not self.config.resource_map:
            return ()
        return tuple(sorted((k, v) for k, v in spec.resources.items() if k in self.config.resource_map and v))

    def _submit_task(self, spec: TaskSpec, signature: tuple[tuple[str, int], ...]) -> Any:
        remote = self._options.get(signature)
        if remote is None:
            remote = self._options[signature] = self._remote.options(**self.config.task_options(dict(signature)))
        return remote.remote(self._config_key, [self._config_ref], spec.model_dump(mode="json"))

    # ------------------------------------------------------------------ one attempt

    async def run(self, spec: TaskSpec, kernel: Kernel, budget: Budget | None = None) -> TaskOutcome:
        await self._start()
        if self._limit is None:
            return await self._run(spec, kernel)
        async with self._limit:
            return await self._run(spec, kernel)

    async def _run(self, spec: TaskSpec, kernel: Kernel) -> TaskOutcome:
        signature = self._signature(spec)
        if self._actors and not signature:
            return await self._run_on_actor(spec)
        return await self._run_as_task(spec, signature)

    async def _run_as_task(self, spec: TaskSpec, signature: tuple[tuple[str, int], ...]) -> TaskOutcome:
        import ray
        from ray import exceptions as rex

        ref = self._submit_task(spec, signature)
        try:
            data = await ref
        except BaseException as exc:
            if isinstance(exc, rex.RayTaskError):
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                raise _remote_error(spec, f"{type(cause).__name__}: {cause}") from None
            lost = (rex.WorkerCrashedError, rex.RayActorError, rex.ObjectLostError, rex.NodeDiedError)
            oom = getattr(rex, "OutOfMemoryError", None)
            if isinstance(exc, lost) or (oom is not None and isinstance(exc, oom)):
                raise _worker_lost(spec, type(exc).__name__) from None
            if isinstance(exc, rex.TaskCancelledError):
                raise WorkerLost(f"task {spec.task_id!r} attempt {spec.attempt} was cancelled by Ray") from None
            # Cancelled here (timeout, fail-fast, Ctrl-C) or anything else: stop the remote attempt.
            try:
                ray.cancel(ref, force=True)
            except Exception as cancel_exc:  # the attempt may have just finished
                log.debug("taskloom-ray: ray.cancel failed: %s", cancel_exc)
            raise
        return TaskOutcome.model_validate(data)

    # ------------------------------------------------------------------ actors mode

    async def _run_on_actor(self, spec: TaskSpec) -> TaskOutcome:
        """Queue the attempt for the least loaded actor's next batch and wait for its outcome,
        which comes back in the answer of the next exchange call with that actor."""
        loop = self._ensure_connected()
        index = await self._ready_actor()
        # No await from here to the append: the actor's instance cannot change in between.
        key = next(self._keys)
        future: asyncio.Future[tuple[str, Any]] = loop.create_future()
        self._waiting[index][key] = future
        self._outgoing[index].append((key, spec.model_dump(mode="json")))
        if not self._flush_pending:
            self._flush_pending = True
            loop.call_soon(self._flush_later, _FLUSH_TICKS)
        self._load[index] += 1
        try:
            status, payload = await future
        except BaseException:
            if future.cancelled():  # cancelled here (timeout, fail-fast, Ctrl-C): stop it on the actor
                self._abandon(index, key)
            raise
        finally:
            self._load[index] -= 1
        if status == "ok":
            return TaskOutcome.model_validate(payload)
        if status == "error":
            raise _remote_error(spec, payload)
        raise _worker_lost(spec, payload)

    def _flush_later(self, ticks: int) -> None:
        """Flush after ``ticks`` more turns of the event loop: the dependants that one answer
        makes ready reach the executor over a few turns (checkpoint, then the scheduler's
        wake-up), and waiting for them sends them as one call instead of several."""
        if ticks > 0:
            asyncio.get_running_loop().call_soon(self._flush_later, ticks - 1)
        else:
            self._flush()

    def _flush(self) -> None:
        """Send each actor the attempts queued for it since the last flush, as one call; and
        a poll (an empty batch) to an actor that runs attempts but has no call waiting."""
        self._flush_pending = False
        for index, batch in enumerate(self._outgoing):
            link = self._links[index]
            if link is not None:
                if batch:
                    self._outgoing[index] = []
                    self._send(index, link, batch)
                continue
            if not batch and (self._calls[index] or not self._waiting[index]):
                continue
            self._outgoing[index] = []
            instance = self._instance[index]
            if instance is None:  # the actor died since: its attempts failed already
                continue
            self._calls[index] += 1
            self._spawn(self._exchange(index, instance, self._actors[index].exchange.remote(instance, batch)))

    async def _exchange(self, index: int, instance: str, ref: Any) -> None:
        """Hand each outcome of an exchange call's answer to the attempt waiting for it. The
        call fails when the actor died (or was restarted before it arrived): then every
        attempt sent to that instance is lost, fails as transient, and the actor is used
        again once Ray restarted it."""
        try:
            finished = await ref
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lose(index, instance, _lost_reason(exc))
            return
        if self._instance[index] != instance:
            return
        self._calls[index] -= 1
        self._deliver(index, finished)
        waiting = self._waiting[index]
        if waiting and not self._calls[index] and not self._flush_pending:
            # Attempts still run there: keep a poll waiting. It waits the same turns, so
            # the dependants of this answer's outcomes go with it, not in a call of their own.
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_later, _FLUSH_TICKS)

    def _deliver(self, index: int, finished: list[tuple[int, str, Any]]) -> None:
        """Hand each outcome to the attempt waiting for it."""
        waiting = self._waiting[index]
        for key, status, payload in finished:
            future = waiting.pop(key, None)
            if future is not None and not future.done():
                future.set_result((status, payload))

    def _lose(self, index: int, instance: str, reason: str) -> None:
        """Actor ``index``'s instance died (or was restarted): every attempt sent to it is
        lost and fails as transient; the actor is used again once Ray restarted it."""
        if self._instance[index] != instance:
            return  # known already
        self._instance[index] = None
        self._calls[index] = 0
        self._drop_link(index)
        self._fail_waiting(index, reason)
        self._spawn(self._connect(index))

    # ------------------------------------------------------------------ channels transport

    def _send(self, index: int, link: channels.DriverLink, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """Write a batch to the actor's channel; to an actor that stopped polling, ring its
        doorbell (a Ray call) with the batch instead."""
        if link.awake:
            link.send(batch)
        else:
            link.awake = True
            self._ring(index, batch)
        self._ensure_pump(index, link)

    def _ring(self, index: int, batch: list[tuple[int, dict[str, Any]]]) -> None:
        instance = self._instance[index]
        if instance is not None:
            self._spawn(self._call(index, instance, self._actors[index].wake.remote(instance, batch)))

    async def _call(self, index: int, instance: str, ref: Any) -> None:
        """Await a call that answers nothing (a doorbell, the watch): its failure means the
        actor's instance is gone."""
        try:
            await ref
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lose(index, instance, _lost_reason(exc))

    def _ensure_pump(self, index: int, link: channels.DriverLink) -> None:
        pump = self._pumps[index]
        if pump is None or pump.done():
            assert self._loop is not None
            self._pumps[index] = pump = self._loop.create_task(self._pump(index, link))
            self._background.add(pump)
            pump.add_done_callback(self._background.discard)

    async def _pump(self, index: int, link: channels.DriverLink) -> None:
        """Poll the actor's channel while it polls ours: hand over the outcomes it wrote,
        write what waits for it. Ends when the actor says it stopped polling and has read
        everything sent (else its doorbell is rung), or when the link is dropped."""
        backoff = channels.Backoff()
        while self._links[index] is link:
            try:
                message = link.receive()
                active = link.flush()
            except Exception as exc:  # the actor's end died with it
                instance = self._instance[index]
                if instance is not None:
                    self._lose(index, instance, type(exc).__name__)
                return
            if message is not None:
                finished, asleep = message
                self._deliver(index, finished)
                active = True
                if asleep is not None:
                    if asleep == link.sent and not link.pending:
                        link.awake = False
                        return
                    self._ring(index, [])  # it stopped before reading our last batch
            if active:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    async def _open_link(self, index: int, instance: str) -> channels.DriverLink:
        """Set up the two channels with actor ``index``'s ``instance``; it starts polling."""
        import ray

        actor = self._actors[index]
        here = ray.get_runtime_context().get_node_id()
        node, outbox = await actor.open_channel.remote(instance, self._proxy, here, channels.CHANNEL_BYTES)
        await anyio.to_thread.run_sync(outbox.ensure_registered_as_reader)
        inbox = await anyio.to_thread.run_sync(channels.to_actor, actor, node)
        link = channels.DriverLink(inbox, outbox)
        try:
            await actor.attach.remote(instance, inbox)
        except BaseException:
            link.close()
            raise
        return link

    def _drop_link(self, index: int) -> None:
        link, self._links[index] = self._links[index], None
        if link is not None:
            link.close()

    # ------------------------------------------------------------------ attempts given up

    def _abandon(self, index: int, key: int) -> None:
        self._waiting[index].pop(key, None)
        outgoing = self._outgoing[index]
        for position, (queued, _) in enumerate(outgoing):
            if queued == key:  # not sent yet
                del outgoing[position]
                return
        link = self._links[index]
        if link is not None and link.drop(key):  # not written yet
            return
        instance = self._instance[index]
        if instance is not None:
            try:
                self._actors[index].cancel.remote(instance, [key])
            except Exception as exc:  # the actor is gone; so is the attempt
                log.debug("taskloom-ray: cancelling on the actor failed: %s", exc)

    def _ensure_connected(self) -> asyncio.AbstractEventLoop:
        """The event loop the actors' calls are awaited on: connect to the actors on first use
        (and again if the executor is used from another event loop later)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            for task in self._background:
                task.cancel()
            self._background.clear()
            self._loop = loop
            self._flush_pending = False
            for index in range(len(self._actors)):  # what waited on the old loop died with it
                self._instance[index] = None
                self._waiting[index], self._outgoing[index] = {}, []
                self._drop_link(index)
                self._pumps[index] = None
                self._spawn(self._connect(index))
        return loop

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _fail_waiting(self, index: int, reason: str) -> None:
        waiting, self._waiting[index] = self._waiting[index], {}
        self._outgoing[index] = []
        for future in waiting.values():
            if not future.done():
                future.set_result(("lost", reason))

    async def _connect(self, index: int) -> None:
        """Learn which instance of actor ``index`` Ray runs (at start, and after a restart),
        and set up the channels with it."""
        from ray.exceptions import RayActorError

        actor = self._actors[index]
        while True:
            try:
                instance = await actor.hello.remote()
            except Exception as exc:  # (re)starting
                log.debug("taskloom-ray: actor %d not ready: %s", index, exc)
                await asyncio.sleep(0.1)
                continue
            link = None
            if self._proxy is not None:
                try:
                    link = await self._open_link(index, instance)
                except Exception as exc:
                    if isinstance(exc, RayActorError) or "StaleActorError" in str(exc):
                        # It died (or was restarted) meanwhile: start again with its next instance.
                        log.debug("taskloom-ray: actor %d died while connecting: %s", index, exc)
                        continue
                    log.warning(
                        "taskloom-ray: Ray's channels with actor %d could not be set up (%s: %s); its "
                        "attempts go by Ray calls instead, one per batch (slower). Set [plugins.ray] "
                        'transport = "calls" to skip trying',
                        index,
                        type(exc).__name__,
                        exc,
                    )
            break
        if link is not None:
            self._spawn(self._call(index, instance, actor.watch.remote(instance)))
        self._instance[index] = instance
        self._calls[index] = 0
        self._links[index] = link
        if link is not None:
            self._ensure_pump(index, link)
        if self._outgoing[index] or self._waiting[index]:
            self._flush()

    async def _ready_actor(self) -> int:
        """The least loaded live actor; when none is connected, wait until Ray (re)started one."""
        index = self._least_loaded()
        if index >= 0:
            return index
        with anyio.move_on_after(self.config.restart_timeout):
            while index < 0:
                await anyio.sleep(0.02)
                index = self._least_loaded()
        if index < 0:
            raise WorkerLost(
                f"no actor of the pool is alive: Ray did not (re)start one within restart_timeout = "
                f"{self.config.restart_timeout:g} s; check the cluster's resources for the actors "
                "([plugins.ray] num_cpus, num_gpus, resources) and the Ray logs"
            )
        return index

    def _least_loaded(self) -> int:
        best, best_load = -1, 0
        for index, instance in enumerate(self._instance):
            if instance is not None and (best < 0 or self._load[index] < best_load):
                best, best_load = index, self._load[index]
        return best

    # ------------------------------------------------------------------ shutdown

    async def aclose(self) -> None:
        if not self._started:
            return
        self._started = False
        for task in list(self._background):  # calls awaited on the actors, killed next
            task.cancel()
        self._background.clear()
        self._loop = None
        await anyio.to_thread.run_sync(self._close_sync)

    def _close_sync(self) -> None:
        import ray

        for index in range(len(self._links)):
            self._drop_link(index)
        for actor in [*self._actors, *([self._proxy] if self._proxy is not None else [])]:
            try:
                ray.kill(actor)
            except Exception as exc:  # already dead
                log.debug("taskloom-ray: ray.kill failed: %s", exc)
        self._actors, self._load, self._instance, self._options = [], [], [], {}
        self._waiting, self._outgoing, self._calls = [], [], []
        self._links, self._pumps, self._proxy = [], [], None
        self._remote = self._config_ref = None
        if self._owns_cluster and ray.is_initialized():
            ray.shutdown()
        self._owns_cluster = False


def _driver_proxy(ray: Any, proxy_class: type) -> Any:
    """The actor that stands for the driver as the reader of the actors' channels: on this
    node, taking no CPU."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    return ray.remote(proxy_class).options(num_cpus=0, max_restarts=-1, scheduling_strategy=strategy).remote()


def _remote_error(spec: TaskSpec, cause: str) -> RemoteTaskError:
    return RemoteTaskError(f"task {spec.task_id!r} attempt {spec.attempt} raised on its Ray worker: {cause}")


def _worker_lost(spec: TaskSpec, reason: str) -> WorkerLost:
    return WorkerLost(
        f"task {spec.task_id!r} attempt {spec.attempt}: the Ray worker running it died "
        f"({reason}); the task's retries decide whether it runs again"
    )


def _lost_reason(exc: BaseException) -> str:
    """How an actor's attempts were lost, for :class:`WorkerLost`: the Ray error's type, or
    the actor's restart (a call that reached the new instance)."""
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError) and "StaleActorError" in str(exc):
        return "the actor was restarted"
    return type(exc).__name__


def _reachable(address: str, timeout: float) -> None:
    """Fail fast on an address nothing listens at: Ray itself retries for minutes."""
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # "auto", "local" or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc.strerror or exc})") from None


__all__ = ["RayExecutor"]
