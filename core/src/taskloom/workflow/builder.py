"""Build a workflow in Python; the result is the same :class:`WorkflowSpec` a file gives.

spec = (
    Workflow("report", inputs={"topic": "rust"})
    .agent("writer", model="local", system="You write briefly.")
    .task("outline", agent="writer", prompt="Outline {{ inputs.topic }}")
    .task("draft", agent="writer", prompt="Write {{ outputs.outline }}", needs=["outline"])
    .build()
)
result = await run_workflow(kernel, spec)
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from .spec import WorkflowSpec, parse_workflow


class Workflow:
    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        inputs: dict[str, Any] | None = None,
        budget_usd: float | str | None = None,
        budget_tokens: int | None = None,
        max_concurrency: int | None = None,
        failure_mode: str = "fail-fast",
        resources: dict[str, int] | None = None,
    ) -> None:
        section: dict[str, Any] = {"name": name, "description": description, "failure_mode": failure_mode}
        budget = {k: v for k, v in (("usd", budget_usd), ("tokens", budget_tokens)) if v is not None}
        if budget:
            section["budget"] = budget
        if inputs:
            section["inputs"] = dict(inputs)
        if max_concurrency is not None:
            section["max_concurrency"] = max_concurrency
        if resources:
            section["resources"] = dict(resources)
        self._data: dict[str, Any] = {"workflow": section, "agents": {}, "tasks": []}

    def agent(self, name: str, **fields: Any) -> Workflow:
        """Add an agent: ``model``, ``system``, ``tools``, ``limits``, ``output_schema``..."""
        if name in self._data["agents"]:
            raise ConfigError(f"workflow {self._data['workflow']['name']!r}: agent {name!r} is defined twice")
        self._data["agents"][name] = fields
        return self

    def task(
        self, id: str, *, agent: str, prompt: str, needs: list[str] | str | None = None, **fields: Any
    ) -> Workflow:
        """Add a task: ``when``, ``retries``, ``backoff``, ``timeout``, ``resources``, ``compensate``..."""
        entry: dict[str, Any] = {"id": id, "agent": agent, "prompt": prompt, **fields}
        if needs:
            entry["needs"] = needs
        self._data["tasks"].append(entry)
        return self

    def to_dict(self) -> dict[str, Any]:
        return self._data

    def build(self) -> WorkflowSpec:
        try:
            return parse_workflow(self._data, None)
        except ValidationError as exc:  # pragma: no cover - parse_workflow converts
            raise ConfigError(str(exc)) from None


__all__ = ["Workflow"]
