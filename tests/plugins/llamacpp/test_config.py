"""Options, bad model files, and the plugin through the kernel (end to end on SmolLM2)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from taskloom import Agent, load_kernel, run_agent
from taskloom.errors import ConfigError
from taskloom_llamacpp.options import default_model_path

from .conftest import make


def test_default_model_is_the_smollm2_gguf() -> None:
    path = default_model_path()
    assert path.name.endswith(".gguf") and "SmolLM2" in path.name
    assert path.read_bytes()[:4] == b"GGUF"


def test_nonexistent_model_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError, match=f"{missing}.*does not exist"):
        make("bad", model_path=str(missing))


def test_non_gguf_file_is_refused_before_llama_cpp(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(ConfigError, match=f"{fake} is not a GGUF model file"):
        make("bad", model_path=str(fake))


def test_a_folder_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        make("bad", model_path=str(tmp_path))


def test_bad_options_are_reported_with_their_key() -> None:
    with pytest.raises(ConfigError, match=r"\[models.bad\] unknown key 'n_ctxx' \(did you mean 'n_ctx'\?\)"):
        make("bad", n_ctxx=512)
    with pytest.raises(ConfigError, match="key 'n_threads'"):
        make("bad", n_threads=0)
    with pytest.raises(ConfigError, match="chat_format 'nonsense' is not a llama-cpp-python chat format"):
        make("bad", chat_format="nonsense").loaded()


def test_bad_model_path_through_the_kernel(tmp_path: Path) -> None:
    kernel = load_kernel(
        {
            "taskloom": {"store": "memory"},
            "models": {"bad": {"provider": "llamacpp", "model_path": str(tmp_path / "x.gguf")}},
        }
    )
    assert "llamacpp" in kernel.providers
    with pytest.raises(ConfigError, match="does not exist"):
        kernel.provider("bad")


def test_named_chat_format() -> None:
    provider = make("chatml", chat_format="chatml")
    text, _ = provider.render([__import__("taskloom").Message.user("hi")])
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.anyio
async def test_run_agent_with_forced_tool_on_default_local_alias() -> None:
    kernel = load_kernel({"taskloom": {"store": "memory"}})
    calls: list[dict[str, object]] = []

    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: The city name.
        """
        calls.append({"city": city})
        return f"It is sunny and 21 degrees in {city}."

    kernel.tools.register(get_weather)
    agent = Agent(name="weather", tools=["get_weather"], tool_choice="get_weather", temperature=0, max_tokens=24)
    async with kernel:
        result = await run_agent(kernel, agent, "What is the weather in Paris?")
    assert result.stop_reason == "final", result.detail
    assert result.models[0] == "local"
    assert len(calls) == 1
    spec = kernel.tools.get("get_weather").spec
    jsonschema.validate(result.tool_calls[0].arguments, spec.parameters)
    assert not result.tool_calls[0].is_error
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
