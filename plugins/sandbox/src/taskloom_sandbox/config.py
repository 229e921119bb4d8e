"""The ``[plugins.sandbox]`` table: enabled languages, isolation, default limits, and the
allowlist of input files. Per-call limits (:class:`LimitOverrides`) may only tighten the
configured ones."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import LimitError

Language = Literal["python", "bash"]
LANGUAGES: tuple[str, ...] = ("python", "bash")
_DEFAULT_LANGUAGES: tuple[Language, ...] = ("python", "bash")
LIMIT_NAMES: tuple[str, ...] = ("timeout_s", "cpu_s", "memory_mb", "file_size_mb", "processes", "output_bytes")


class Limits(BaseModel):
    """Resource limits of one run. Every value must be a finite positive number."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False, description="Wall-clock seconds.")
    cpu_s: int = Field(10, ge=1, le=3600, description="CPU seconds (RLIMIT_CPU).")
    memory_mb: int = Field(512, ge=32, le=1_048_576, description="Address space in MiB (RLIMIT_AS).")
    file_size_mb: int = Field(
        16, ge=1, le=1_048_576, description="Largest file the code may write, MiB (RLIMIT_FSIZE)."
    )
    processes: int = Field(64, ge=2, le=10_000, description="Processes and threads (RLIMIT_NPROC).")
    output_bytes: int = Field(64_000, ge=1, le=64 * 1024 * 1024, description="Bytes kept of stdout and of stderr each.")


class LimitOverrides(BaseModel):
    """Per-call limits: any subset of :class:`Limits`, each no looser than the configured one."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float | None = Field(None, gt=0, le=3600, allow_inf_nan=False, description="Wall-clock seconds.")
    cpu_s: int | None = Field(None, ge=1, le=3600, description="CPU seconds.")
    memory_mb: int | None = Field(None, ge=32, le=1_048_576, description="Address space in MiB.")
    file_size_mb: int | None = Field(None, ge=1, le=1_048_576, description="Largest file written, MiB.")
    processes: int | None = Field(None, ge=2, le=10_000, description="Processes and threads.")
    output_bytes: int | None = Field(None, ge=1, le=64 * 1024 * 1024, description="Bytes kept of each output stream.")

    def tighten(self, base: Limits) -> Limits:
        """``base`` with these overrides applied; raises :class:`LimitError` when one is looser."""
        looser = []
        values: dict[str, Any] = base.model_dump()
        for name in LIMIT_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            if value > values[name]:
                looser.append(f"{name}={value:g} is above the configured {values[name]:g}")
            values[name] = value
        if looser:
            raise LimitError(
                "per-call limits may only tighten the configured ones: "
                + "; ".join(looser)
                + " (raise the default in [plugins.sandbox.limits] to allow more)"
            )
        return Limits.model_validate(values)


class SandboxConfig(BaseModel):
    """``[plugins.sandbox]``."""

    model_config = ConfigDict(extra="forbid")

    languages: list[Language] = Field(
        default_factory=lambda: list(_DEFAULT_LANGUAGES), description="Languages offered as tools (python, bash)."
    )
    isolation: Literal["bwrap", "none"] = Field(
        "bwrap", description='"bwrap" (bubblewrap namespaces) or "none": UNSAFE, code runs on the host as this user.'
    )
    network: bool = Field(False, description="Share the host network with the code (default: no network at all).")
    limits: Limits = Field(default_factory=Limits, description="Default (and maximum) limits of a run.")
    input_paths: list[str] = Field(
        default_factory=list, description="Host files or directories that calls may copy into the working directory."
    )
    ro_paths: list[str] = Field(
        default_factory=list, description="Extra host paths mounted read-only at the same place (e.g. a virtualenv)."
    )
    bwrap_path: str = Field("bwrap", description="The bubblewrap binary (name on PATH or absolute path).")
    prlimit_path: str = Field("/usr/bin/prlimit", description="util-linux prlimit, used to set the rlimits.")
    python_path: str = Field("/usr/bin/python3", description="Interpreter for the python tool (must be under /usr).")
    bash_path: str = Field("/bin/bash", description="Shell for the bash tool.")
    run_as_uid: int | None = Field(
        None, ge=1, description="Host uid the code runs as when taskloom runs as root (default 65534, nobody)."
    )
    run_as_gid: int | None = Field(None, ge=1, description="Host gid for run_as_uid (default: same as the uid).")
    work_root: str | None = Field(None, description="Where working directories are created (default: system temp).")
    max_listed_files: int = Field(200, ge=0, le=100_000, description="Files listed in a result.")
    max_file_content_bytes: int = Field(
        64_000, ge=0, le=16 * 1024 * 1024, description="Bytes returned per file when contents are asked for."
    )
    max_input_bytes: int = Field(100 * 1024 * 1024, ge=0, description="Total size of input files copied in per call.")

    @model_validator(mode="after")
    def _check(self) -> SandboxConfig:
        if len(set(self.languages)) != len(self.languages):
            raise ValueError("languages lists a language twice")
        return self
