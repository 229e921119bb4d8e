"""From MCP to taskloom: tool descriptions, argument checks, and call results."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskloom.tools import ToolResult

if TYPE_CHECKING:
    import mcp_types

_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass
class ToolInfo:
    """What taskloom keeps of an MCP tool (also what the listing cache stores)."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    @classmethod
    def from_mcp(cls, tool: mcp_types.Tool) -> ToolInfo:
        schema = dict(tool.input_schema or {})
        schema.setdefault("type", "object")
        return cls(tool.name, tool.description or tool.title or "", schema)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolInfo:
        return cls(str(data["name"]), str(data.get("description") or ""), dict(data.get("input_schema") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


def taskloom_name(server: str, tool: str) -> str:
    """``<server>.<tool>``, with characters a tool name may not hold replaced by '_'."""
    room = 64 - len(server) - 1
    return f"{server}.{_INVALID.sub('_', tool)[:room]}"


class ArgumentChecker:
    """Validates arguments against a tool's JSON Schema before they reach the server."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator: Any = None

    def problems(self, arguments: dict[str, Any]) -> list[str]:
        if self._validator is None:
            import jsonschema

            cls = jsonschema.validators.validator_for(self.schema, default=jsonschema.Draft202012Validator)
            try:
                cls.check_schema(self.schema)
                self._validator = cls(self.schema)
            except jsonschema.SchemaError:
                self._validator = False  # the server's schema is broken: let the server judge
        if self._validator is False:
            return []
        out = []
        for error in sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in error.path) or "arguments"
            out.append(f"{where}: {error.message}")
        return out


def to_tool_result(result: mcp_types.CallToolResult) -> ToolResult:
    """Text blocks become the text the model reads; structured content becomes the value
    (and the text when there is no text block); images, audio and resources are described
    in the text and kept whole in ``value["attachments"]``; ``isError`` becomes an error."""
    import mcp_types as t

    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    for block in result.content:
        if isinstance(block, t.TextContent):
            texts.append(block.text)
        elif isinstance(block, t.ImageContent | t.AudioContent):
            kind = "image" if isinstance(block, t.ImageContent) else "audio"
            size = len(block.data) * 3 // 4
            texts.append(f"[{kind} {block.mime_type}, about {size} bytes]")
            attachments.append({"type": kind, "mime_type": block.mime_type, "data": block.data})
        elif isinstance(block, t.EmbeddedResource):
            res = block.resource
            if isinstance(res, t.TextResourceContents):
                texts.append(res.text)
            else:
                texts.append(f"[resource {res.uri} ({res.mime_type or 'binary'})]")
                attachments.append(
                    {"type": "resource", "uri": str(res.uri), "mime_type": res.mime_type, "blob": res.blob}
                )
        elif isinstance(block, t.ResourceLink):
            texts.append(f"[resource link {block.name}: {block.uri}]")
            attachments.append({"type": "resource_link", "uri": str(block.uri), "name": block.name})
        else:  # a content type newer than this bridge
            texts.append(json.dumps(block.model_dump(mode="json", exclude_none=True), ensure_ascii=False))
    structured = result.structured_content
    text = "\n".join(texts)
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    if result.is_error:
        return ToolResult(f"error: {text or 'the tool reported an error without a message'}", True)
    value: Any = structured if structured is not None else text
    if attachments:
        value = {"text": text, "structured": structured, "attachments": attachments}
    return ToolResult(text, False, value)
