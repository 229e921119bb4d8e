"""``console``: progress on the terminal (stderr) with rich.

Shows model calls, tool calls, tokens, cost and elapsed time, and for workflows each
task's state, tokens and cost with the run's progress and an ETA, then a table of the tasks. ``mode = "auto"`` (default) shows progress only when stderr is
a terminal or ``TASKLOOM_PROGRESS=1``; ``"always"`` and ``"never"`` force it.
"""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskloom import hookimpl
from taskloom.config import Settings
from taskloom.types import Cost, Event, Usage

NAME = "console"


class ConsoleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "always", "never"] = Field("auto", description="When to show progress.")


def _money(cost: Cost | None) -> str:
    if cost is None:
        return "$0"
    if not cost.priced:
        return "unpriced"
    return f"${cost.total:.6f}".rstrip("0").rstrip(".") if cost.total else "$0"


def _seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"


class _TaskLine:
    __slots__ = ("attempts", "cost", "priced", "state", "tokens")

    def __init__(self) -> None:
        self.state = "pending"
        self.tokens = 0
        self.cost = Decimal(0)
        self.priced = True
        self.attempts = 0


_DONE = ("succeeded", "failed", "skipped")
_STATE = {"start": "running", "succeed": "succeeded", "fail": "failed", "skip": "skipped", "retry": "retrying",
          "interrupt": "interrupted", "compensate": "compensating"}  # fmt: skip
_COLOUR = {"succeeded": "green", "failed": "red", "skipped": "yellow", "retrying": "yellow", "interrupted": "magenta"}


class ConsoleSink:
    """Prints one line per event; for a workflow, each task line has the task's state,
    its tokens and cost so far, the run's progress and an ETA (elapsed time per finished
    task times the tasks left), and the run ends with a table of every task."""

    def __init__(self, console: Any = None) -> None:
        """``console``: a ``rich.console.Console`` to print to, always (tests, embedding);
        by default, stderr when the config and ``TASKLOOM_PROGRESS`` say so."""
        self.active = self.forced = console is not None
        self.console: Any = console
        self.started = time.monotonic()
        self.tokens = 0
        self.cost = Decimal(0)
        self.calls = 0
        self.tasks: dict[str, _TaskLine] = {}
        self.total_tasks = 0
        self.already_done = 0
        self.done_times: list[float] = []

    @hookimpl
    def taskloom_config_model(self) -> type[BaseModel]:
        return ConsoleConfig

    @hookimpl
    def taskloom_configure(self, settings: Settings) -> None:
        if self.forced:
            return
        cfg: ConsoleConfig = settings.plugin_config(NAME) or ConsoleConfig()
        env = os.environ.get("TASKLOOM_PROGRESS")
        if env is not None:
            self.active = env not in ("0", "", "never")
        elif cfg.mode == "auto":
            self.active = sys.stderr.isatty()
        else:
            self.active = cfg.mode == "always"

    @hookimpl
    def taskloom_wants_events(self, settings: Settings) -> bool:
        return self.active

    def _out(self) -> Any:
        if self.console is None:
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False)
        return self.console

    def _print(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self._out().print(f"[dim]{elapsed:6.1f}s[/dim] {text}", highlight=False)

    def eta(self) -> float | None:
        """Seconds left, from this session's pace; None before the first task finishes."""
        done = len(self.done_times)
        left = self.total_tasks - self.already_done - done
        if not done or left <= 0:
            return None
        return (self.done_times[-1] - self.started) / done * left

    def _progress(self) -> str:
        done = self.already_done + len(self.done_times)
        eta = self.eta()
        return f"{done}/{self.total_tasks}" + (f" · ETA {_seconds(eta)}" if eta is not None else "")

    def _task(self, task_id: str | None) -> _TaskLine:
        line = self.tasks.get(task_id or "")
        if line is None:
            line = self.tasks[task_id or ""] = _TaskLine()
        return line

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        if not self.active:
            return
        d = event.data
        kind = event.kind
        where = f"[cyan]{event.task_id}[/cyan] " if event.task_id else ""
        if kind == "model.call":
            usage: Usage = d["usage"]
            cost: Cost = d["cost"]
            self.calls += 1
            self.tokens += usage.total_tokens
            self.cost += cost.total
            if event.task_id is not None and event.task_id in self.tasks:
                line = self._task(event.task_id)
                line.tokens += usage.total_tokens
                line.cost += cost.total
                line.priced = line.priced and cost.priced
            cached = " [green](cache)[/green]" if d.get("cached") else ""
            self._print(
                f"{where}model {d['alias']}: {usage.input_tokens}+{usage.output_tokens} tokens, "
                f"{_money(cost)}, {d['latency_s']:.2f}s{cached} · total {self.tokens} tokens ${self.cost:.6f}"
            )
        elif kind == "tool.call":
            mark = "[red]✗[/red]" if d.get("is_error") else "[green]✓[/green]"
            self._print(f"{where}tool {d['name']} {mark} {d['duration_s'] * 1000:.0f} ms")
        elif kind in ("model.retry", "model.error", "model.fallback"):
            self._print(f"{where}[yellow]{kind}[/yellow] {d}")
        elif kind == "run.start":
            self.started = time.monotonic()
            self.tokens, self.cost, self.calls = 0, Decimal(0), 0
            self.tasks, self.done_times = {}, []
            self.total_tasks = int(d.get("tasks", 0))
            self.already_done = int(d.get("already_done", 0))
            resumed = f", resumed with {self.already_done} done" if d.get("resumed") else ""
            self._print(f"[bold]run {event.run_id}[/bold] {d.get('workflow', '')}: {self.total_tasks} tasks{resumed}")
        elif kind.startswith("task."):
            self._on_task(event, where)
        elif kind == "run.finish":
            self._summary(event)

    def _on_task(self, event: Event, where: str) -> None:
        d = event.data
        compensation = event.kind == "task.compensate" or "compensation_of" in d
        state = _STATE.get(event.kind.split(".", 1)[1], event.kind.split(".", 1)[1])
        line = self._task(event.task_id)
        line.state = state
        if "attempts" in d or "attempt" in d:
            line.attempts = int(d.get("attempts", d.get("attempt", 0)))
        if d.get("usage") is not None:  # the task's own totals (all attempts)
            line.tokens = d["usage"].total_tokens
            if d.get("cost") is not None:
                line.cost, line.priced = d["cost"].total, d["cost"].priced
        if state in _DONE and not compensation:
            self.done_times.append(time.monotonic())
        colour = _COLOUR.get(state, "blue")
        extra = f"{line.tokens} tokens {_money(Cost(total=line.cost, priced=line.priced))}"
        if state == "running":
            extra = f"attempt {d.get('attempt', 1)}"
        if d.get("of"):
            extra = f"undoing {d['of']}"
        error = d.get("error") or (d.get("reason") if state == "skipped" else None)
        if error:
            extra += f" [red]{error}[/red]" if state != "skipped" else f" [yellow]{error}[/yellow]"
        self._print(f"[{colour}]{state:>12}[/{colour}] {where}{extra} [dim]({self._progress()})[/dim]")

    def _summary(self, event: Event) -> None:
        from rich.table import Table

        d = event.data
        usage: Usage | None = d.get("usage")
        cost: Cost | None = d.get("cost")
        tokens = usage.total_tokens if usage is not None else self.tokens
        if self.tasks:
            table = Table("task", "state", "attempts", "tokens", "cost", box=None, pad_edge=False)
            for tid, line in self.tasks.items():
                colour = _COLOUR.get(line.state, "blue")
                money = _money(Cost(total=line.cost, priced=line.priced))
                table.add_row(tid, f"[{colour}]{line.state}[/{colour}]", str(line.attempts), str(line.tokens), money)
            self._out().print(table)
        error = f" · [red]{d['error']}[/red]" if d.get("error") else ""
        self._print(
            f"[bold]run.finish[/bold] {event.run_id} {d.get('status', '')} · {tokens} tokens · "
            f"{_money(cost) if cost is not None else f'${self.cost:.6f}'}{error}"
        )
