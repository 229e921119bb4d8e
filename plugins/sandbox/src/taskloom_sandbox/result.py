"""What a run returns: output, exit status, limits hit, and the files left in /work."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

LimitName = Literal["timeout", "cpu", "memory", "file_size", "processes", "output"]


class FileInfo(BaseModel):
    """A file the code left in its working directory (never followed if a symlink)."""

    path: str = Field(description="Relative to the working directory.")
    kind: Literal["file", "dir", "symlink", "other"]
    size: int = 0
    target: str | None = Field(None, description="Where a symlink points (not followed).")
    content: str | None = Field(None, description="Text content, when asked for (UTF-8, invalid bytes replaced).")
    content_truncated: bool = False


class SandboxResult(BaseModel):
    language: str
    isolation: Literal["bwrap", "none"]
    exit_code: int | None = Field(description="Exit status; None when the process ended by a signal.")
    signal: str | None = Field(None, description="Name of the signal that ended the code, e.g. SIGKILL.")
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_s: float = 0.0
    limits_hit: list[LimitName] = Field(default_factory=list)
    files: list[FileInfo] = Field(default_factory=list)
    files_truncated: bool = Field(False, description="More files existed than were listed.")
    notes: list[str] = Field(default_factory=list, description="Problems with requested file contents and the like.")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.limits_hit

    def to_text(self) -> str:
        """The result as the model sees it."""
        if self.signal:
            status = f"killed by {self.signal}"
        else:
            status = f"exit code {self.exit_code}"
        lines = [f"{status} after {self.duration_s:.2f} s"]
        if self.limits_hit:
            lines.append("limits hit: " + ", ".join(self.limits_hit))
        lines.append("stdout:" + (("\n" + self.stdout) if self.stdout else " (empty)"))
        if self.stderr:
            lines.append("stderr:\n" + self.stderr)
        if self.files:
            lines.append("files in /work:")
            for f in self.files:
                extra = f" -> {f.target}" if f.kind == "symlink" else ("/" if f.kind == "dir" else f" ({f.size} bytes)")
                lines.append(f"  {f.path}{extra}")
                if f.content is not None:
                    lines.append("  --- content" + (" (truncated)" if f.content_truncated else "") + " ---")
                    lines.append(f.content)
            if self.files_truncated:
                lines.append("  ... (more files not listed)")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)
