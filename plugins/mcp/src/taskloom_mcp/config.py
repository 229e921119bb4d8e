"""The ``[plugins.mcp]`` table: one ``[plugins.mcp.servers.<name>]`` table per MCP server."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from taskloom.config import Secret

SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class ServerConfig(BaseModel):
    """One MCP server: a command run over stdio, or a streamable-HTTP ``url``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    command: str | None = Field(None, description="Executable that runs the server over stdio.")
    args: list[str] = Field(default_factory=list, description="Arguments of the command.")
    env: dict[str, Secret] = Field(
        default_factory=dict, description='Extra environment variables; a value may be { env = "VAR" }.'
    )
    cwd: Path | None = Field(None, description="Working directory of the server process.")
    url: str | None = Field(None, description="Streamable-HTTP endpoint, e.g. http://127.0.0.1:8000/mcp.")
    headers: dict[str, Secret] = Field(
        default_factory=dict, description='HTTP headers; a value may be { env = "VAR" }.'
    )
    tools: list[str] | None = Field(None, description="Only these tools of the server (default: all).")
    startup_timeout: float = Field(30.0, gt=0, description="Seconds to start the server and list its tools.")
    call_timeout: float = Field(60.0, gt=0, description="Seconds for one tool call.")
    max_restarts: int = Field(5, ge=0, description="Consecutive failed restarts before the server is marked failed.")
    backoff: float = Field(0.5, ge=0, description="First restart delay in seconds; doubles per attempt.")
    backoff_max: float = Field(10.0, ge=0, description="Longest restart delay in seconds.")
    enabled: bool = Field(True, description="Set false to keep the table but not use the server.")

    @model_validator(mode="after")
    def _one_transport(self) -> ServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                "give either command (a stdio server) or url (a streamable-HTTP server), not both or neither"
            )
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("args, env and cwd apply to stdio servers (command), not to url")
        if self.command is not None and self.headers:
            raise ValueError("headers apply to streamable-HTTP servers (url), not to command")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, found {self.url!r}")
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"

    def fingerprint(self) -> str:
        """A hash of what decides the server's tool list (no secret values)."""
        data = {
            "command": self.command,
            "args": self.args,
            "cwd": str(self.cwd) if self.cwd else None,
            "url": self.url,
            "env": sorted(self.env),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class McpConfig(BaseModel):
    """``[plugins.mcp]``."""

    model_config = ConfigDict(extra="forbid")

    servers: dict[str, ServerConfig] = Field(default_factory=dict, description="MCP servers by name.")
    cache_tools: bool = Field(
        True,
        description="Remember each server's tool list on disk so later runs start servers on first call.",
    )

    @model_validator(mode="after")
    def _names(self) -> McpConfig:
        for name in self.servers:
            if not SERVER_NAME.fullmatch(name):
                raise ValueError(
                    f"server name {name!r} must be 1-32 letters, digits, '_' or '-' (it prefixes tool names as <server>.<tool>)"
                )
        return self
