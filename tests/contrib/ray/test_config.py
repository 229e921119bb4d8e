"""[plugins.ray] validation, lazy import, and a cluster address nothing answers at (no Ray cluster needed)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from taskloom import load_kernel
from taskloom.workflow import Workflow, run_workflow
from taskloom_ray.config import RayConfig


def config(**ray: Any) -> dict[str, Any]:
    return {
        "taskloom": {"executor": "ray", "store": "memory", "cache": "none", "default_model": "s"},
        "models": {"s": {"provider": "scripted", "default": "ok"}},
        "plugins": {"ray": ray},
    }


def test_unknown_key_and_bad_value_are_reported_with_the_fix() -> None:
    kernel = load_kernel(config(adress="127.0.0.1:6379"))
    info = kernel.plugins.infos["ray"]
    assert info.status == "failed"
    assert "[plugins.ray] unknown key 'adress' (did you mean 'address'?)" in info.status_text
    kernel = load_kernel(config(mode="threads"))
    assert "'tasks' or 'actors'" in kernel.plugins.infos["ray"].status_text


def test_local_cluster_sizes_cannot_be_combined_with_an_address() -> None:
    kernel = load_kernel(config(address="head:6379", local_num_cpus=8))
    text = kernel.plugins.infos["ray"].status_text
    assert "local_num_cpus sizes a local cluster and cannot be set with address = 'head:6379'" in text


def test_task_resources_map_to_ray_resources() -> None:
    cfg = RayConfig(
        num_cpus=0.5, resources={"pool": 1}, resource_map={"gpu": "GPU", "browser": "chrome", "cores": "CPU"}
    )
    assert cfg.task_options({}) == {"num_cpus": 0.5, "resources": {"pool": 1}}
    assert cfg.task_options({"gpu": 1, "browser": 2, "cores": 3, "unmapped": 5}) == {
        "num_cpus": 3.5,
        "num_gpus": 1,
        "resources": {"pool": 1, "chrome": 2},
    }


def test_loading_the_plugin_does_not_import_ray() -> None:
    code = (
        "import sys\nfrom taskloom import load_kernel\n"
        "k = load_kernel({'taskloom': {'executor': 'ray', 'store': 'memory', 'cache': 'none'}})\n"
        "assert type(k.executor).__name__ == 'RayExecutor', k.executor\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
async def test_an_address_nothing_answers_at_fails_fast_with_a_clear_error() -> None:
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    address = f"127.0.0.1:{_free_port()}"
    kernel = load_kernel(config(address=address, connect_timeout=2))
    wf = Workflow("bad-address").agent("a", model="s")
    wf.task("x", agent="a", prompt="hi", retries=2, backoff=0)
    wf.task("y", agent="a", prompt="hi", retries=2, backoff=0)
    start = time.monotonic()
    result = await run_workflow(kernel, wf.build())
    assert time.monotonic() - start < 20
    assert not result.ok
    record = result.tasks["x"] if result.tasks["x"].state == "failed" else result.tasks["y"]
    assert record.state == "failed"
    assert record.attempts == 1, "a configuration error is not retried"
    assert f"cannot start the Ray cluster at {address!r}" in (record.error or "")
    assert "nothing answers at" in (record.error or "")
    assert "check [plugins.ray] address" in (record.error or "")
    assert not ray.is_initialized()
    await kernel.aclose()


def test_transport_is_channels_unless_calls_is_asked_for_or_the_driver_is_a_ray_client() -> None:
    kernel = load_kernel(config(mode="actors"))
    assert kernel.executor._use_channels()  # type: ignore[attr-defined]
    assert not load_kernel(config(mode="actors", transport="calls")).executor._use_channels()  # type: ignore[attr-defined]
    assert not load_kernel(config(mode="actors", address="ray://head:10001")).executor._use_channels()  # type: ignore[attr-defined]
    assert load_kernel(config(mode="actors", address="head:6379")).executor._use_channels()  # type: ignore[attr-defined]
    text = load_kernel(config(transport="pipes")).plugins.infos["ray"].status_text
    assert "'channels' or 'calls'" in text, text
