"""The ``python`` and ``bash`` tools agents call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from taskloom.tools import Tool, ToolResult

from .config import LimitOverrides
from .errors import SandboxError
from .runner import Sandbox

_TIMEOUT_MARGIN_S = 30.0


async def _call(
    sandbox: Sandbox,
    language: str,
    code: str,
    files: list[str] | None,
    limits: LimitOverrides | None,
    return_files: bool | list[str],
) -> ToolResult:
    try:
        result = await sandbox.run(language, code, limits=limits, files=files or (), return_files=return_files)
    except SandboxError as exc:
        return ToolResult(f"error: {exc}", is_error=True)
    return ToolResult(result.to_text(), is_error=not result.ok, value=result)


def _description(sandbox: Sandbox, language: str) -> str:
    lim = sandbox.config.limits
    what = "a Python 3 program" if language == "python" else "a bash script"
    network = "with network access" if sandbox.config.network else "with no network"
    return (
        f"Run {what} in an isolated sandbox and return its stdout, stderr, exit status and the files it "
        f"created. The working directory /work starts empty (apart from input files) and is deleted afterwards; "
        f"the rest of the filesystem is read-only, {network}. Limits: {lim.timeout_s:g} s wall clock, "
        f"{lim.cpu_s} s CPU, {lim.memory_mb} MiB memory, {lim.output_bytes} bytes of output kept."
    )


def make_tools(sandbox: Sandbox) -> list[Tool]:
    """One tool per enabled language."""

    async def python(
        code: str,
        files: list[str] | None = None,
        limits: LimitOverrides | None = None,
        return_files: bool | list[str] = False,
    ) -> ToolResult:
        """Run Python code in the sandbox.

        Args:
            code: The program. Print what you need to see.
            files: Host paths (from the allowed input paths) copied into /work first.
            limits: Tighter limits for this call: timeout_s, cpu_s, memory_mb, file_size_mb, processes, output_bytes.
            return_files: true for the contents of every file left in /work, or a list of their paths.
        """
        return await _call(sandbox, "python", code, files, limits, return_files)

    async def bash(
        code: str,
        files: list[str] | None = None,
        limits: LimitOverrides | None = None,
        return_files: bool | list[str] = False,
    ) -> ToolResult:
        """Run a bash script in the sandbox.

        Args:
            code: The script. Print what you need to see.
            files: Host paths (from the allowed input paths) copied into /work first.
            limits: Tighter limits for this call: timeout_s, cpu_s, memory_mb, file_size_mb, processes, output_bytes.
            return_files: true for the contents of every file left in /work, or a list of their paths.
        """
        return await _call(sandbox, "bash", code, files, limits, return_files)

    functions: dict[str, Callable[..., Awaitable[ToolResult]]] = {"python": python, "bash": bash}
    timeout = sandbox.config.limits.timeout_s + _TIMEOUT_MARGIN_S
    return [
        Tool.from_function(
            functions[language],
            name=language,
            description=_description(sandbox, language),
            timeout=timeout,
            plugin="sandbox",
        )
        for language in sandbox.config.languages
    ]
