"""A real local Ray cluster (2 CPUs, one custom ``browser`` resource), started once for the modules that need it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
# The test clusters live on 127.0.0.1 (read by Ray when it is first imported), as the
# executor's own local clusters do: nothing a test sends leaves the machine.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        resources={"browser": 1},
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}, "worker_process_setup_hook": "ray_marker.setup"},
    )
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    try:
        yield ray
    finally:
        ray.shutdown()
