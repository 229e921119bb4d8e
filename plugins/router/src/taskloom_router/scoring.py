"""The complexity score (1-10) of a request, as a sum of named, explainable factors.

=================  ===========================================================
factor             points
=================  ===========================================================
task_type          the base: the task type's complexity from the table
                   (``metadata.task_type``; unknown or missing: the default)
prompt_tokens      +0 under 300 tokens, +0.5 under 1,000, +1 under 4,000,
                   +2 under 16,000, +3 above
tools              +1 when tools are offered, +1.5 when more than 5
structured_output  +1 when the answer must match a JSON Schema
conversation       +0.25 per earlier assistant turn (at most +1.5), +0.5 per
                   level of delegation (at most +1)
past_outcomes      added by the router in adaptive mode (see ``outcomes.py``)
=================  ===========================================================

The sum is clamped to 1-10. The prompt-size bucket (``tiny`` ... ``huge``) and the task type
name the cell that adaptive mode keeps outcomes for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskloom.tokens import count_messages
from taskloom.types import ModelRequest

SIZE_STEPS: tuple[tuple[int, float, str], ...] = (
    (300, 0.0, "tiny"),
    (1_000, 0.5, "small"),
    (4_000, 1.0, "medium"),
    (16_000, 2.0, "large"),
)
HUGE: tuple[float, str] = (3.0, "huge")
BUCKETS = (*(b for _, _, b in SIZE_STEPS), HUGE[1])


@dataclass(slots=True)
class Score:
    value: float
    factors: dict[str, float]
    task_type: str
    bucket: str
    prompt_tokens: int
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, points: float, note: str | None = None) -> None:
        self.factors[name] = points
        self.value = min(10.0, max(1.0, round(self.value + points, 2)))
        if note:
            self.notes.append(note)


def prompt_tokens(request: ModelRequest, exact: bool) -> int:
    """Prompt tokens: exact (tiktoken, chat overhead included) or 4 characters a token."""
    if exact:
        return count_messages(request.messages)
    chars = 0
    for m in request.messages:
        content = m.content
        chars += len(content) if isinstance(content, str) else len(m.text)
        for call in m.tool_calls:
            chars += len(call.raw_arguments) + len(call.name)
    return (chars + 3) // 4 + 3 * len(request.messages) + 3


def size_points(tokens: int) -> tuple[float, str]:
    for limit, points, bucket in SIZE_STEPS:
        if tokens < limit:
            return points, bucket
    return HUGE


def score(request: ModelRequest, task_types: dict[str, float], default: float, *, exact: bool = False) -> Score:
    """Score a request from its own content (without past outcomes)."""
    meta = request.metadata
    task_type = meta.task_type or ""
    base = task_types.get(task_type)
    notes = []
    if base is None:
        base = default
        notes.append(
            f"task type {task_type!r} is not in the table; default {default:g}"
            if task_type
            else f"no task type; default {default:g}"
        )
    messages = request.messages
    if exact:
        tokens = count_messages(messages)
        turns = sum(1 for m in messages if m.role == "assistant")
    else:
        chars = turns = 0
        for m in messages:
            content = m.content
            chars += len(content) if content.__class__ is str else len(m.text)
            if m.tool_calls:
                for call in m.tool_calls:
                    chars += len(call.raw_arguments) + len(call.name)
            if m.role == "assistant":
                turns += 1
        tokens = (chars + 3) // 4 + 3 * len(messages) + 3
    size, bucket = size_points(tokens)
    n_tools = len(request.tools)
    tools = 0.0 if not n_tools or request.tool_choice == "none" else (1.5 if n_tools > 5 else 1.0)
    structured = 1.0 if request.output_schema else 0.0
    conversation = min(1.5, 0.25 * turns) + min(1.0, 0.5 * meta.depth) if turns or meta.depth else 0.0
    total = base + size + tools + structured + conversation
    factors = {
        "task_type": base,
        "prompt_tokens": size,
        "tools": tools,
        "structured_output": structured,
        "conversation": conversation,
    }
    return Score(
        1.0 if total < 1.0 else (10.0 if total > 10.0 else round(total, 2)),
        factors,
        task_type or "-",
        bucket,
        tokens,
        notes,
    )
