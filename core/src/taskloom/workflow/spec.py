"""The workflow file: TOML (or JSON) to a validated :class:`WorkflowSpec`.

A file has a ``[workflow]`` table (name, description, budget, concurrency, failure mode,
inputs, resources), ``[agents.<name>]`` tables, and ``[[tasks]]``. The same model is
built in Python by :mod:`taskloom.workflow.builder`. Parsing checks the shape only; the
graph and the names are checked by :mod:`taskloom.workflow.checks`.
"""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..agent import AgentLimits
from ..config import format_validation_error
from ..errors import ConfigError

FailureMode = Literal["fail-fast", "continue"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BudgetSpec(_Spec):
    usd: Decimal | None = Field(None, ge=0, description="Dollars the whole run may spend.")
    tokens: int | None = Field(None, ge=0, description="Tokens (input + output) the whole run may use.")


class InputSpec(_Spec):
    """A declared input. In a file, ``topic = "rust"`` declares an input with a default;
    ``topic = { description = "...", required = true }`` one that must be given."""

    default: Any = None
    description: str = ""
    required: bool = False


class WorkflowSection(_Spec):
    name: str = Field(min_length=1)
    description: str = ""
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    max_concurrency: int | None = Field(None, ge=1, description="Tasks running at once (default: unlimited).")
    failure_mode: FailureMode = "fail-fast"
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    resources: dict[str, int] = Field(default_factory=dict, description="Named capacities, e.g. browser = 1.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            spec_keys = {"default", "description", "required"}
            if (
                isinstance(item, dict)
                and item
                and set(item) <= spec_keys
                and ("description" in item or "required" in item)
            ):
                out[key] = item
            elif isinstance(item, InputSpec):
                out[key] = item
            else:
                out[key] = {"default": item}
        return out

    @field_validator("resources")
    @classmethod
    def _capacities(cls, value: dict[str, int]) -> dict[str, int]:
        for name, cap in value.items():
            if cap < 1:
                raise ValueError(f"resource {name!r} needs a capacity of at least 1, got {cap}")
        return value


class AgentSpec(_Spec):
    """One ``[agents.<name>]`` table; serialisable, so it crosses to remote executors."""

    name: str = ""
    model: str = Field("", description='A model alias, "auto" for the router, or empty for the default model.')
    system: str | None = None
    tools: list[str] = Field(default_factory=list)
    tool_choice: str = "auto"
    limits: AgentLimits = Field(default_factory=AgentLimits)
    output_schema: dict[str, Any] | None = None
    task_type: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(None, ge=1)


class TaskDef(_Spec):
    """One ``[[tasks]]`` entry."""

    id: str = Field(min_length=1)
    agent: str = Field(min_length=1)
    prompt: str
    needs: list[str] = Field(default_factory=list)
    when: str | None = Field(None, description="Condition over inputs and the needed tasks' outputs; false skips.")
    retries: int = Field(0, ge=0)
    backoff: float = Field(1.0, ge=0, description="Seconds before the first retry; doubles each time.")
    timeout: float | None = Field(None, gt=0, description="Seconds for one attempt.")
    resources: dict[str, int] = Field(default_factory=dict)
    compensate: str | None = Field(None, description="Task run if the workflow fails after this one succeeded.")
    estimate: float | None = Field(None, gt=0, description="Expected seconds, for the critical path.")

    @field_validator("needs", mode="before")
    @classmethod
    def _one_need(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("resources")
    @classmethod
    def _counts(cls, value: dict[str, int]) -> dict[str, int]:
        for name, count in value.items():
            if count < 1:
                raise ValueError(f"resource {name!r}: a task takes at least 1, got {count}")
        return value


class WorkflowSpec(_Spec):
    workflow: WorkflowSection
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    tasks: list[TaskDef] = Field(default_factory=list)
    source: str | None = Field(None, exclude=True)
    """Where the spec came from (a file path), for error messages."""

    @field_validator("agents", mode="before")
    @classmethod
    def _name_agents(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({**v, "name": k} if isinstance(v, dict) else v) for k, v in value.items()}
        return value

    @property
    def name(self) -> str:
        return self.workflow.name

    @property
    def where(self) -> str:
        return self.source or f"workflow {self.workflow.name!r}"

    def task(self, task_id: str) -> TaskDef:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def compensation_ids(self) -> set[str]:
        """Tasks that only run as compensation (named by some task's ``compensate``)."""
        return {t.compensate for t in self.tasks if t.compensate}

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def resolve_inputs(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown or missing inputs are ConfigErrors."""
        from ..config import did_you_mean

        given = dict(given or {})
        declared = self.workflow.inputs
        out: dict[str, Any] = {}
        for key in given:
            if key not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise ConfigError(
                    f"{self.where}: unknown input {key!r}{did_you_mean(key, declared)}; "
                    f"declared inputs: {known} (declare it under [workflow.inputs])"
                )
        for key, spec in declared.items():
            if key in given:
                out[key] = given[key]
            elif spec.required:
                raise ConfigError(f"{self.where}: input {key!r} is required; pass --input {key}=VALUE")
            else:
                out[key] = spec.default
        return out


def parse_workflow(data: dict[str, Any], source: str | None = None) -> WorkflowSpec:
    """Validate workflow data (a parsed TOML/JSON document)."""
    where = source or "workflow"
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, where, data)) from None
    spec.source = source
    return spec


_TABLES: dict[str, type[BaseModel]] = {"tasks": TaskDef, "agents": AgentSpec}


def _format(exc: ValidationError, where: str, data: dict[str, Any]) -> str:
    """Validation errors with ``tasks.3`` replaced by the task's id, so they name the task,
    and a "did you mean" for unknown keys of tasks and agents."""
    from ..config import did_you_mean

    tasks = data.get("tasks") if isinstance(data, dict) else None
    lines = []
    errors = exc.errors()
    for n, line in enumerate(format_validation_error(exc, where, "", WorkflowSpec).splitlines()):
        err = errors[n] if n < len(errors) else None
        loc = err["loc"] if err else ()
        if (
            err
            and err["type"] == "extra_forbidden"
            and len(loc) == 3
            and loc[0] in _TABLES
            and "did you mean" not in line
        ):
            line += did_you_mean(str(loc[2]), _TABLES[str(loc[0])].model_fields)
        if isinstance(tasks, list):
            for i, task in enumerate(tasks):
                if isinstance(task, dict) and isinstance(task.get("id"), str):
                    line = line.replace(f"[tasks.{i}]", f"task {task['id']!r}").replace(
                        f"[tasks.{i}.", f"task {task['id']!r} ["
                    )
        lines.append(line)
    return "\n".join(lines)


def load_workflow(path: str | Path) -> WorkflowSpec:
    """Read a workflow file (``.toml``, or ``.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"workflow file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read workflow file {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a workflow is a JSON object with workflow, agents and tasks")
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_workflow(data, str(path))


__all__ = [
    "AgentSpec",
    "BudgetSpec",
    "FailureMode",
    "InputSpec",
    "TaskDef",
    "WorkflowSection",
    "WorkflowSpec",
    "load_workflow",
    "parse_workflow",
]
