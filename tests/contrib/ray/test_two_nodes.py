"""Channels between nodes: a Ray cluster of two nodes (two raylets, each with its own object
store, both on 127.0.0.1), the driver on the head node and the actor on the other, so every
message crosses from one node's object store to the other's as it would between machines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from taskloom import load_kernel
from taskloom.workflow import run_workflow
from taskloom_ray.executor import RayExecutor
from test_executor import check_diamond, config, diamond

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={"far": 1})
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1", "127.0.0.1"]
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()


async def test_an_actor_on_another_node_gets_its_attempts_through_channels(two_nodes: Any) -> None:
    kernel = load_kernel(config(mode="actors", actors=1, num_cpus=0, resources={"far": 1}))
    executor = kernel.executor
    assert isinstance(executor, RayExecutor)
    check_diamond(await run_workflow(kernel, diamond().build()))
    state = await executor._actors[0].transport.remote()
    assert state["node"] != two_nodes.get_runtime_context().get_node_id(), "the actor runs on the other node"
    link = executor._links[0]
    assert link is not None and state["batches_read"] == link.sent >= 3 and state["exchange_calls"] == 0, state
    await kernel.aclose()
