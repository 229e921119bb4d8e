"""From MCP to taskloom: tool descriptions, argument checks, and call results."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
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


# Keywords that never reject a value (annotations; ``format`` is not asserted by default).
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "format", "$schema", "$id", "$comment", "deprecated"}
    | {"readOnly", "writeOnly"}
)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _type_test(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A quick test for a property schema made only of ``type`` and annotations, or None."""
    if not set(schema) <= _ANNOTATIONS | {"type"}:
        return None
    declared = schema.get("type")
    if declared is None:
        return lambda value: True
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list) or not all(isinstance(n, str) and n in _JSON_TYPES for n in names):
        return None
    kinds = tuple(k for n in names for k in _JSON_TYPES[n])
    if "boolean" in names:
        return lambda value: isinstance(value, kinds)
    # bool is an int in Python but not an integer or number in JSON Schema.
    return lambda value: isinstance(value, kinds) and not isinstance(value, bool)


def _quick_check(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bool] | None:
    """For the schemas most tools have (an object of typed properties, some required), a
    test that answers True only for arguments the full validator accepts; None for any other
    schema. A False answer proves nothing: the full validator then finds the problems."""
    if schema.get("type") != "object" or not set(schema) <= _ANNOTATIONS | {
        "type",
        "properties",
        "required",
        "additionalProperties",
    }:
        return None
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list) or not isinstance(extra, bool):
        return None
    tests: dict[str, Callable[[Any], bool]] = {}
    for name, sub in properties.items():
        test = _type_test(sub) if isinstance(sub, dict) else None
        if test is None:
            return None
        tests[name] = test
    needed = tuple(required)

    def check(arguments: dict[str, Any]) -> bool:
        for name in needed:
            if name not in arguments:
                return False
        for name, value in arguments.items():
            test = tests.get(name)
            if test is None:
                if not extra:
                    return False
            elif not test(value):
                return False
        return True

    return check


class ArgumentChecker:
    """Validates arguments against a tool's JSON Schema before they reach the server.

    The compiled validator is made once per schema. Arguments that pass a quick check of
    the common schema shape (typed properties, required names) are not validated again;
    anything else goes to ``jsonschema``, which words the problems.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator: Any = None
        self._quick = _quick_check(schema)

    def problems(self, arguments: dict[str, Any]) -> list[str]:
        quick = self._quick
        if quick is not None and type(arguments) is dict and quick(arguments):
            return []
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
