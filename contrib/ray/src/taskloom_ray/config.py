"""``[plugins.ray]``: where the Ray cluster is and how tasks are placed on it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_BUILTIN_RAY_RESOURCES = {"CPU": "num_cpus", "GPU": "num_gpus"}


class RayConfig(BaseModel):
    """Settings of the Ray executor (every key is optional)."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None,
        description='Ray cluster to connect to ("auto", "HOST:6379", "ray://HOST:10001"); '
        "absent: start a local Ray cluster in this process.",
    )
    mode: Literal["tasks", "actors"] = Field(
        "tasks",
        description='"tasks": one Ray task per attempt (a worker process keeps its kernel between tasks); '
        '"actors": a pool of async Ray actors that keep kernels, providers and loaded models warm.',
    )
    actors: int = Field(2, ge=1, description='Actors in the pool (mode = "actors").')
    transport: Literal["channels", "calls"] = Field(
        "channels",
        description='How attempts and outcomes travel between the driver and the actors (mode = "actors"): '
        '"channels": Ray\'s shared-memory channels, polled while attempts run (the lowest latency; a driver '
        'on Ray Client, ray://, and an actor where they cannot be set up use calls); "calls": one Ray actor '
        "call per batch.",
    )
    actor_concurrency: int = Field(64, ge=1, description="Attempts one actor runs at once (async actor).")
    restart_timeout: float = Field(
        120.0, gt=0, description="Seconds to wait for Ray to restart a dead actor when no other actor is alive."
    )
    max_in_flight: int | None = Field(None, ge=1, description="Attempts submitted to Ray at once (default: unlimited).")
    num_cpus: float = Field(1.0, ge=0, description="Ray CPUs each task (or each actor) takes.")
    num_gpus: float = Field(0.0, ge=0, description="Ray GPUs each task (or each actor) takes.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each task (or each actor) takes, e.g. { browser = 1 }."
    )
    resource_map: dict[str, str] = Field(
        default_factory=dict,
        description='Workflow task resources requested from Ray too: workflow name -> Ray resource ("GPU", "CPU" '
        'or a custom resource), e.g. { gpu = "GPU", browser = "browser" }. In actors mode a task that needs a '
        "mapped resource runs as a Ray task with it (an actor call cannot take resources of its own).",
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime environment (pip, env_vars, working_dir...), passed to Ray as is."
    )
    connect_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for the cluster at a HOST:PORT address to answer before giving up."
    )
    namespace: str | None = Field(None, description="Ray namespace of the job.")
    worker_store: str | None = Field(
        None,
        description="Run store the workers' kernels write model-call ledger records to (default: the driver's "
        '[taskloom] store; use "memory" when that store is a file the workers cannot reach).',
    )
    local_num_cpus: int | None = Field(
        None, ge=1, description="Logical CPUs of a local cluster (no address); default: the machine's cores."
    )
    local_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom resources of a local cluster (no address), e.g. { browser = 2 }."
    )
    log_to_driver: bool = Field(False, description="Forward the workers' stdout and stderr to the driver.")

    @model_validator(mode="after")
    def _local_only(self) -> RayConfig:
        if self.address is not None:
            for key in ("local_num_cpus", "local_resources"):
                if getattr(self, key):
                    raise ValueError(
                        f"{key} sizes a local cluster and cannot be set with address = {self.address!r}; "
                        "size the cluster with `ray start --num-cpus/--resources` on its nodes instead"
                    )
        for name, ray_name in self.resource_map.items():
            if not ray_name:
                raise ValueError(f"resource_map: {name!r} maps to an empty Ray resource name")
        return self

    def base_options(self) -> dict[str, Any]:
        """Ray placement options every task (or actor) gets."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.resources:
            options["resources"] = dict(self.resources)
        return options

    def task_options(self, needs: dict[str, int]) -> dict[str, Any]:
        """Placement options for a task that takes ``needs`` (its workflow resources)."""
        options = self.base_options()
        custom = dict(options.get("resources", {}))
        for name, count in needs.items():
            ray_name = self.resource_map.get(name)
            if ray_name is None:
                continue
            key = _BUILTIN_RAY_RESOURCES.get(ray_name)
            if key is not None:
                options[key] = options.get(key, 0) + count
            else:
                custom[ray_name] = custom.get(ray_name, 0) + count
        if custom:
            options["resources"] = custom
        return options


__all__ = ["RayConfig"]
