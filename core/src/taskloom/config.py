"""Configuration: TOML to typed, validated settings.

Where it comes from, first match wins: an explicit path (``--config`` or
``TASKLOOM_CONFIG``), ``taskloom.toml`` in the working directory, ``[tool.taskloom]`` in
``pyproject.toml`` there, else the built-in defaults (embedded local model, memory cache,
SQLite store when the plugin is installed).

Errors name the file, the table and the key, what was expected and what was found, and
suggest the closest known key for a typo.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import core_schema

from .errors import ConfigError
from .resilience import RetryPolicy

DEFAULT_MODEL_ALIAS = "local"


class Secret:
    """A secret value: given in config as ``{ env = "VAR" }`` (read when used) or as a
    literal string. It never shows its value in ``repr``, logs, events or dumps."""

    __slots__ = ("_value", "env")

    def __init__(self, value: str | None = None, *, env: str | None = None) -> None:
        if (value is None) == (env is None):
            raise ValueError('a secret is either a value or { env = "VAR" }')
        self._value = value
        self.env = env

    def get_secret_value(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(
                    f"the environment variable {self.env} is not set; "
                    f"export {self.env}=... or change the config that refers to it"
                )
            return value
        assert self._value is not None
        return self._value

    def redacted(self) -> str | dict[str, str]:
        return {"env": self.env} if self.env is not None else "**********"

    def __repr__(self) -> str:
        return f"Secret(env={self.env!r})" if self.env else "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self._value, self.env) == (other._value, other.env)

    def __hash__(self) -> int:
        return hash((self._value, self.env))

    @classmethod
    def _coerce(cls, value: Any) -> Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping) and set(value) == {"env"} and isinstance(value["env"], str):
            return cls(env=value["env"])
        raise ValueError('expected a string or { env = "VARIABLE" }')

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: s.redacted()),
            json_schema_input_schema=core_schema.union_schema(
                [
                    core_schema.str_schema(),
                    core_schema.typed_dict_schema({"env": core_schema.typed_dict_field(core_schema.str_schema())}),
                ]
            ),
        )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class CircuitSettings(_Section):
    threshold: int = Field(5, ge=1, description="Consecutive failures that open the circuit.")
    cooldown: float = Field(30.0, ge=0, description="Seconds before a half-open trial call.")


class ModelPrice(_Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)


class ModelConfig(BaseModel):
    """One ``[models.<alias>]`` table: a deployment of a model on a provider.

    Keys other than these are provider options (``base_url``, ``model_path``...),
    validated by the provider when it is created.
    """

    model_config = ConfigDict(extra="allow", defer_build=True)

    alias: str = ""
    provider: str = Field(description="Provider plugin registration name, e.g. llamacpp.")
    model: str = Field("", description="The provider's name for the model.")
    fallbacks: list[str] = Field(default_factory=list, description="Aliases tried in order when this one fails.")
    timeout: float = Field(120.0, gt=0, description="Seconds for one attempt.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)
    price: ModelPrice | None = Field(None, description="Overrides the price table for this alias.")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TaskloomSection(_Section):
    plugins: list[str] | None = Field(None, description="Enable only these plugins (default: every installed one).")
    disable: list[str] = Field(default_factory=list, description="Plugins never loaded.")
    cache: str | None = Field("memory", description='Active cache backend, or "none".')
    store: str | None = Field(None, description="Active run store (default: sqlite if installed, else memory).")
    executor: str = Field("local", description="Active workflow executor.")
    router: str | None = Field(None, description="Plugin whose taskloom_route is asked (default: all, first answer).")
    default_model: str = Field(DEFAULT_MODEL_ALIAS, description="Model alias used when none is given.")
    user: str | None = Field(None, description="User id for policy and cost attribution.")


class RawSettings(_Section):
    taskloom: TaskloomSection = Field(default_factory=TaskloomSection)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("models", mode="before")
    @classmethod
    def _name_models(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({**v, "alias": k} if isinstance(v, dict) else v) for k, v in value.items()}
        return value


DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    DEFAULT_MODEL_ALIAS: {"provider": "llamacpp", "model": "smollm2-135m-instruct"},
}


class Settings:
    """The effective configuration: ``[taskloom]``, ``[models.*]`` and every plugin's
    validated ``[plugins.<name>]`` section."""

    def __init__(self, raw: RawSettings, source: Path | None = None, data: dict[str, Any] | None = None) -> None:
        self.raw = raw
        self.source = source
        self.data = data or {}
        self.taskloom = raw.taskloom
        self.models: dict[str, ModelConfig] = {
            alias: ModelConfig(alias=alias, **cfg) for alias, cfg in DEFAULT_MODELS.items()
        }
        self.models.update(raw.models)
        self._plugin_configs: dict[str, BaseModel | None] = {}

    @property
    def where(self) -> str:
        return str(self.source) if self.source else "the configuration"

    def plugin_config(self, name: str) -> Any:
        """The validated ``[plugins.<name>]`` object (None when the plugin takes none)."""
        return self._plugin_configs.get(name)

    def set_plugin_config(self, name: str, model: type[BaseModel] | None) -> None:
        """Validate ``[plugins.<name>]`` with the plugin's model (raises ConfigError)."""
        table = self.raw.plugins.get(name)
        if model is None:
            if table:
                raise ConfigError(f"{self.where}: [plugins.{name}]: the plugin {name!r} takes no configuration")
            self._plugin_configs[name] = None
            return
        try:
            self._plugin_configs[name] = model.model_validate(table or {})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, self.where, f"plugins.{name}", model)) from None

    def model(self, alias: str) -> ModelConfig:
        try:
            return self.models[alias]
        except KeyError:
            raise ConfigError(
                f"unknown model alias {alias!r}{did_you_mean(alias, self.models)}; "
                f"define it as [models.{alias}] with a provider in {self.where}"
            ) from None

    def secret_values(self) -> list[str]:
        """Every secret value this configuration holds or points at (``Secret`` fields of
        plugin sections, secret-looking keys of model tables, and the environment
        variables their ``{ env = ... }`` name), longest first. For :meth:`scrub`."""
        found: set[str] = set()

        def walk(value: Any, key: str = "") -> None:
            if isinstance(value, Secret):
                try:
                    found.add(value.get_secret_value())
                except ConfigError:
                    pass
            elif isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(getattr(value, name, None), name)
                for name, extra in (value.model_extra or {}).items():
                    walk(extra, name)
            elif isinstance(value, Mapping):
                if set(value) == {"env"} and _is_secret_key(key) and isinstance(value["env"], str):
                    if env_value := os.environ.get(value["env"]):
                        found.add(env_value)
                    return
                for k, v in value.items():
                    walk(v, str(k))
            elif isinstance(value, list | tuple):
                for v in value:
                    walk(v, key)
            elif isinstance(value, str) and _is_secret_key(key):
                found.add(value)

        for config in self.models.values():
            walk(config)
        for plugin_config in self._plugin_configs.values():
            walk(plugin_config)
        walk(self.raw.plugins)
        return sorted((v for v in found if len(v) >= 4), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with every configured secret value, and anything shaped like an API
        key or a bearer token, replaced by asterisks (for error messages that are stored)."""
        for value in self.secret_values():
            text = text.replace(value, "**********")
        return _TOKEN_SHAPES.sub(lambda m: m.group(1) + "**********", text)

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The effective configuration as plain data, secrets redacted."""
        out: dict[str, Any] = {
            "taskloom": self.taskloom.model_dump(mode="json"),
            "models": {a: m.model_dump(mode="json", exclude={"alias"}) for a, m in self.models.items()},
            "plugins": {},
        }
        for name, cfg in self._plugin_configs.items():
            if cfg is not None:
                out["plugins"][name] = cfg.model_dump(mode="json")
        for name, table in self.raw.plugins.items():
            out["plugins"].setdefault(name, _redact(table) if redact else table)
        for alias, cfg in out["models"].items():
            out["models"][alias] = _redact(cfg)
        return out


_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "authorization", "credential", "cookie")
# Bearer tokens, and keys in the common vendor shapes (sk-..., ghp_..., xoxb-..., AKIA...).
_TOKEN_SHAPES = re.compile(
    r"((?:Bearer|Basic|bearer)\s+|(?<![A-Za-z0-9])(?=sk-|ghp_|gho_|xox[abp]-|AKIA))[A-Za-z0-9_\-.=+/]{8,}"
)


def _is_secret_key(key: str) -> bool:
    return any(w in key.lower() for w in _SECRET_WORDS)


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        if set(value) == {"env"}:
            return value
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if isinstance(value, str) and _is_secret_key(key):
        return "**********"
    return value


def did_you_mean(word: str, choices: Any) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _describe(value: Any, loc: list[str] | None = None) -> str:
    """What was found, for an error message; never the value of a secret. A value under
    a secret-looking key (api_key, token, password, secret, Authorization...) or inside
    ``headers``, or a ``Secret``, is described by its type only; tables are shown with
    their secret-looking keys redacted."""
    if isinstance(value, Secret) or any(_is_secret_key(p) or p.lower() == "headers" for p in loc or []):
        return f"a value of type {type(value).__name__} (hidden: the key holds a secret)"
    text = repr(_redact(value) if isinstance(value, dict | list) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(
    exc: ValidationError, where: str, table: str = "", model: type[BaseModel] | None = None
) -> str:
    """One line per problem: file, table, key, what was expected and what was found."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = loc[-1] if loc else ""
        path = ".".join([table, *loc[:-1]] if table else loc[:-1])
        place = f"{where}: [{path}]" if path else f"{where}:"
        if err["type"] == "extra_forbidden":
            known = _known_keys(model, loc[:-1]) if model else []
            if table.startswith("models.") and len(loc) == 1:
                # A provider's options sit in the same table as the kernel's own keys.
                known += [k for k in ModelConfig.model_fields if k != "alias"]
            lines.append(f"{place} unknown key {key!r}{did_you_mean(key, known)}")
        elif err["type"] == "missing":
            lines.append(f"{place} missing required key {key!r}")
        else:
            lines.append(f"{place} key {key!r}: {err['msg'].lower()}, found {_describe(err.get('input'), loc)}")
    return "\n".join(lines)


def _known_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing path to --config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def find_config(
    explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None
) -> tuple[dict[str, Any], Path | None]:
    """Locate and read the configuration; returns its data and where it came from."""
    if explicit is None:
        explicit = os.environ.get("TASKLOOM_CONFIG") or None
    if explicit is not None:
        path = Path(explicit)
        return read_toml(path), path
    cwd = cwd or Path.cwd()
    local = cwd / "taskloom.toml"
    if local.is_file():
        return read_toml(local), local
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        data = read_toml(pyproject).get("tool", {}).get("taskloom")
        if isinstance(data, dict):
            return data, pyproject
    return {}, None


def load_settings(config: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> Settings:
    """Build settings from a path, a mapping, or (None) the usual places."""
    if isinstance(config, Mapping):
        data, source = dict(config), None
    else:
        data, source = find_config(config)
    where = str(source) if source else "the configuration"
    try:
        raw = RawSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, "", RawSettings)) from None
    return Settings(raw, source, data)


def settings_schema(plugin_models: Mapping[str, type[BaseModel] | None]) -> dict[str, Any]:
    """JSON Schema of the whole config file, including each plugin's section."""
    schema = RawSettings.model_json_schema()
    props: dict[str, Any] = {}
    defs = schema.setdefault("$defs", {})
    for name, model in sorted(plugin_models.items()):
        if model is None:
            continue
        sub = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        props[name] = sub
    schema["properties"]["plugins"] = {
        "type": "object",
        "description": "One table per plugin, validated by that plugin.",
        "properties": props,
        "additionalProperties": False,
    }
    schema["title"] = "taskloom configuration"
    return schema
