"""``console``: progress on the terminal (stderr) with rich.

Shows model calls, tool calls, tokens, cost and elapsed time, and for workflows each
task's state with an ETA. ``mode = "auto"`` (default) shows progress only when stderr is
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


class ConsoleSink:
    def __init__(self) -> None:
        self.active = False
        self.console: Any = None
        self.started = time.monotonic()
        self.tokens = 0
        self.cost = Decimal(0)
        self.calls = 0
        self.tasks: dict[str, str] = {}
        self.total_tasks = 0
        self.done_times: list[float] = []

    @hookimpl
    def taskloom_config_model(self) -> type[BaseModel]:
        return ConsoleConfig

    @hookimpl
    def taskloom_configure(self, settings: Settings) -> None:
        cfg: ConsoleConfig = settings.plugin_config(NAME) or ConsoleConfig()
        env = os.environ.get("TASKLOOM_PROGRESS")
        if env is not None:
            self.active = env not in ("0", "", "never")
        elif cfg.mode == "auto":
            self.active = sys.stderr.isatty()
        else:
            self.active = cfg.mode == "always"

    def _print(self, text: str) -> None:
        if self.console is None:
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False)
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:6.1f}s[/dim] {text}")

    def _eta(self) -> str:
        done = len(self.done_times)
        left = self.total_tasks - done
        if not done or left <= 0:
            return ""
        rate = (self.done_times[-1] - self.started) / done
        return f" · ETA {rate * left:.0f}s"

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
            self.total_tasks = int(d.get("tasks", 0))
            self._print(f"[bold]run {event.run_id}[/bold] {d.get('workflow', '')}: {self.total_tasks} tasks")
        elif kind.startswith("task."):
            state = kind.split(".", 1)[1]
            self.tasks[event.task_id or ""] = state
            if state in ("succeed", "fail", "skip"):
                self.done_times.append(time.monotonic())
            colour = {"succeed": "green", "fail": "red", "skip": "yellow", "retry": "yellow"}.get(state, "blue")
            extra = ""
            if "usage" in d and d["usage"] is not None:
                extra = f" {d['usage'].total_tokens} tokens {_money(d.get('cost'))}"
            if d.get("error"):
                extra += f" [red]{d['error']}[/red]"
            done = len(self.done_times)
            self._print(
                f"[{colour}]{state:>9}[/{colour}] {where}{extra} [dim]({done}/{self.total_tasks}{self._eta()})[/dim]"
            )
        elif kind.startswith("run."):
            self._print(
                f"[bold]{kind}[/bold] {event.run_id} {d.get('status', '')} · {self.tokens} tokens · ${self.cost:.6f}"
            )
