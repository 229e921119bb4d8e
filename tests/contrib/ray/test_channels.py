"""Attempts and outcomes through Ray's shared-memory channels (the default transport of
actors mode), on the real local cluster: a run that goes through them, the actor that stops
polling when idle and is woken by the next batch, a message bigger than a channel, the
calls transport, the fallback to calls where channels cannot be set up, and an actor
killed while it sleeps."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import anyio
import pytest
from taskloom import load_kernel
from taskloom.workflow import Workflow, run_workflow
from taskloom_ray import channels
from taskloom_ray.executor import RayExecutor
from test_executor import check_diamond, config, diamond

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def pool(idle: float | None = None, models: dict[str, Any] | None = None, **ray: Any) -> tuple[Any, RayExecutor]:
    """A kernel with one actor (a quarter of a CPU) and its executor; ``idle``: the actor's idle time."""
    kernel = load_kernel(config(models=models, mode="actors", actors=1, num_cpus=0.25, **ray))
    executor = kernel.executor
    assert isinstance(executor, RayExecutor)
    if idle is not None:
        executor.actor_idle = idle
    return kernel, executor


async def transport(executor: RayExecutor, index: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = await executor._actors[index].transport.remote()
    return result


async def until_asleep(executor: RayExecutor, timeout: float = 10) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while (state := await transport(executor))["polling"]:
            await anyio.sleep(0.05)
    return state


async def test_a_run_on_actors_goes_through_channels_and_the_idle_actor_stops_polling() -> None:
    kernel, executor = pool(idle=0.3)
    check_diamond(await run_workflow(kernel, diamond().build()))
    link = executor._links[0]
    assert link is not None and link.sent >= 3, "top, then left and right, then bottom: three batches at least"
    state = await until_asleep(executor)
    assert state["exchange_calls"] == 0, state
    assert state["batches_read"] == link.sent, state
    with anyio.fail_after(5):  # the driver's pump ends with the actor's notice
        while link.awake:
            await anyio.sleep(0.02)
    pump = executor._pumps[0]
    assert pump is not None and pump.done()

    # The next run rings the sleeping actor's doorbell and goes through the channels again.
    sent_before = link.sent
    start = anyio.current_time()
    check_diamond(await run_workflow(kernel, diamond().build()))
    assert anyio.current_time() - start < 5
    state = await transport(executor)
    assert state["wakes"] == 1 and state["exchange_calls"] == 0, state
    assert executor._links[0] is link and link.sent > sent_before
    assert state["batches_read"] == link.sent, "the first batch rode with the doorbell, the others by the channel"
    await kernel.aclose()


async def test_an_actor_asleep_between_runs_takes_many_batches_after_its_doorbell() -> None:
    kernel, executor = pool(idle=0.2)
    for round_ in range(3):
        wf = Workflow(f"chain-{round_}").agent("a", model="s", limits={"max_turns": 1})
        for i in range(15):
            wf.task(f"c{i}", agent="a", prompt=f"{round_}.{i}", needs=[f"c{i - 1}"] if i else [])
        result = await run_workflow(kernel, wf.build())
        assert result.ok, result.run.error
        assert result.tasks["c14"].output == f"<{round_}.14>"
        await until_asleep(executor)
    state = await transport(executor)
    assert state["wakes"] == 2 and state["exchange_calls"] == 0, state
    await kernel.aclose()


async def test_a_message_bigger_than_a_channel_grows_it_both_ways() -> None:
    models = {"wide": {"provider": "scripted", "default": "<{prompt}>", "context_window": 10_000_000}}
    kernel, executor = pool(models=models)
    big = "x" * (3 * channels.CHANNEL_BYTES)
    wf = Workflow("big").agent("a", model="wide", limits={"max_turns": 1})
    wf.task("big", agent="a", prompt=big)
    wf.task("after", agent="a", prompt="after", needs=["big"])
    result = await run_workflow(kernel, wf.build())
    assert result.ok, result.run.error
    assert result.tasks["big"].output == f"<{big}>"
    assert result.tasks["after"].output == "<after>"
    assert executor._links[0] is not None
    state = await transport(executor)
    assert state["batches_read"] == 2 and state["exchange_calls"] == 0, state
    await kernel.aclose()


async def test_transport_calls_sends_every_batch_as_a_ray_call() -> None:
    kernel, executor = pool(transport="calls")
    check_diamond(await run_workflow(kernel, diamond().build()))
    assert executor._links == [None] and executor._proxy is None
    state = await transport(executor)
    assert state["exchange_calls"] >= 3 and state["batches_read"] == 0 and not state["polling"], state
    await kernel.aclose()


async def test_an_actor_whose_channels_cannot_be_set_up_falls_back_to_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Injected failure: the driver cannot make the channel to the actor (as where Ray's
    # experimental channels are missing or refuse).
    def refuse(actor: Any, node_id: str, size: int = channels.CHANNEL_BYTES) -> Any:
        raise RuntimeError("no shared-memory channel on this cluster")

    monkeypatch.setattr(channels, "to_actor", refuse)
    kernel, executor = pool()
    with caplog.at_level(logging.WARNING, logger="taskloom_ray.executor"):
        check_diamond(await run_workflow(kernel, diamond().build()))
    (warning,) = [r.getMessage() for r in caplog.records if "could not be set up" in r.getMessage()]
    assert "RuntimeError: no shared-memory channel on this cluster" in warning
    assert 'transport = "calls"' in warning
    assert executor._links == [None]
    state = await transport(executor)
    assert state["exchange_calls"] >= 3 and state["batches_read"] == 0, state
    await kernel.aclose()


async def test_an_actor_killed_while_asleep_is_replaced_and_the_next_run_uses_its_new_channels() -> None:
    kernel, executor = pool(idle=0.2)
    check_diamond(await run_workflow(kernel, diamond().build()))
    await until_asleep(executor)
    old_instance, old_link = executor._instance[0], executor._links[0]
    pid = await executor._actors[0].pid.remote()
    os.kill(pid, signal.SIGKILL)
    with anyio.fail_after(60):  # the open watch call fails; Ray restarts the actor; the driver reconnects
        while executor._instance[0] in (None, old_instance):
            await anyio.sleep(0.05)
    assert executor._links[0] is not None and executor._links[0] is not old_link
    check_diamond(await run_workflow(kernel, diamond().build()))
    assert await executor._actors[0].pid.remote() != pid
    state = await transport(executor)
    assert state["batches_read"] >= 3 and state["exchange_calls"] == 0, state
    await kernel.aclose()
