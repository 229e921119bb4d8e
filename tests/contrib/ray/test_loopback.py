"""A local cluster that the executor starts lives on 127.0.0.1: its head node's address
is the loopback one, so nothing it sends leaves the machine. Run in a fresh process with
no RAY_* variables, as a user's `taskloom run` would be."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
from taskloom.config import load_settings
from taskloom_ray.config import RayConfig
from taskloom_ray.executor import RayExecutor

executor = RayExecutor(load_settings({}), RayConfig(local_num_cpus=1))
executor._start_sync()
import ray  # only now: the executor decides how Ray starts

try:
    print("node", ray.nodes()[0]["NodeManagerAddress"])
finally:
    ray.shutdown()
"""


def test_a_local_cluster_started_by_the_executor_uses_the_loopback_address() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "node 127.0.0.1" in done.stdout, done.stdout + done.stderr
