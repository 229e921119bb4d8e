"""Configuration: where it comes from, validation errors, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from taskloom.config import Secret, find_config, load_settings
from taskloom.errors import ConfigError


def test_malformed_toml_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "taskloom.toml"
    path.write_text('[taskloom]\ncache = "memory"\nstore = \n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert str(path) in message
    assert "line 3" in message and "column" in message


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[taskloom]\ncahce = "memory"\n')
    with pytest.raises(ConfigError, match=r"c.toml: \[taskloom\] unknown key 'cahce' \(did you mean 'cache'\?\)"):
        load_settings(path)


def test_wrong_type_says_expected_and_found(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[models.big]\nprovider = "scripted"\ntimeout = "soon"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert "[models.big] key 'timeout'" in message
    assert "valid number" in message
    assert "found 'soon'" in message


def test_missing_config_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; pass an existing path to --config"):
        load_settings(tmp_path / "nope.toml")


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config() == ({}, None)
    (tmp_path / "pyproject.toml").write_text('[tool.taskloom.taskloom]\ncache = "none"\n')
    data, source = find_config()
    assert source == tmp_path / "pyproject.toml" and data["taskloom"]["cache"] == "none"
    (tmp_path / "taskloom.toml").write_text('[taskloom]\ncache = "memory"\n')
    data, source = find_config()
    assert source == tmp_path / "taskloom.toml"
    other = tmp_path / "other.toml"
    other.write_text('[taskloom]\nexecutor = "x"\n')
    assert find_config(other)[1] == other
    monkeypatch.setenv("TASKLOOM_CONFIG", str(other))
    assert find_config()[1] == other


def test_defaults_without_config() -> None:
    settings = load_settings({})
    assert settings.taskloom.default_model == "local"
    assert settings.models["local"].provider == "llamacpp"
    assert settings.taskloom.cache == "memory"


def test_unknown_model_alias_suggests() -> None:
    settings = load_settings({"models": {"gpt": {"provider": "openai"}}})
    with pytest.raises(ConfigError, match=r"unknown model alias 'gtp' \(did you mean 'gpt'\?\)"):
        settings.model("gtp")


def test_secret_from_env_is_read_late_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = Secret._coerce({"env": "TL_TEST_KEY"})
    assert "TL_TEST_KEY" in repr(secret)
    with pytest.raises(ConfigError, match="environment variable TL_TEST_KEY is not set"):
        secret.get_secret_value()
    monkeypatch.setenv("TL_TEST_KEY", "sk-very-secret")
    assert secret.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(secret) + str(secret)
    literal = Secret._coerce("sk-literal")
    assert "sk-literal" not in repr(literal)
    assert literal.redacted() == "**********"


def test_effective_config_redacts_secret_looking_values() -> None:
    settings = load_settings(
        {
            "models": {
                "m": {
                    "provider": "openai",
                    "api_key": "sk-abc",
                    "api_key_env": {"env": "K"},
                    "headers": {"Authorization": "Bearer x"},
                }
            }
        }
    )
    dumped = str(settings.to_dict())
    assert "sk-abc" not in dumped and "Bearer x" not in dumped
    assert "{'env': 'K'}" in dumped


def test_validation_errors_never_echo_secret_values() -> None:
    from pydantic import BaseModel, ConfigDict, ValidationError
    from taskloom.config import format_validation_error

    class Section(BaseModel):
        model_config = ConfigDict(extra="forbid")
        api_key: Secret
        token: int = 0
        password: list[int] = []
        headers: dict[str, int] = {}
        client: dict[str, int] = {}
        retries: int = 1

    data = {
        "api_key": 12345678901234,  # a value of the wrong type: not a string, not { env = ... }
        "token": "sk-abcdef1234567890",
        "password": ["hunter2hunter2"],
        "headers": {"Authorization": "Bearer abcdefghijklmnop"},
        "client": {"secret": "s3cr3t-value-xyz", "n": "x"},
        "retries": "many",
    }
    with pytest.raises(ValidationError) as exc:
        Section.model_validate(data)
    message = format_validation_error(exc.value, "t.toml", "plugins.demo", Section)
    for secret in ("12345678901234", "sk-abcdef", "hunter2", "abcdefghijklmnop", "s3cr3t"):
        assert secret not in message, message
    assert "[plugins.demo] key 'api_key'" in message and "hidden: the key holds a secret" in message
    assert "[plugins.demo] key 'token'" in message and "found a value of type str (hidden" in message
    assert "[plugins.demo.headers] key 'Authorization'" in message
    assert "found 'many'" in message  # ordinary values are still shown
    # A table given where a value was expected is shown with its secret-looking keys redacted.
    with pytest.raises(ValidationError) as exc:
        Section.model_validate({"api_key": "x", "retries": {"token": "sk-zzzzzzzzzzzz", "n": 1}})
    message = format_validation_error(exc.value, "t.toml", "plugins.demo", Section)
    assert "sk-zzzz" not in message and "'token': '**********'" in message and "'n': 1" in message


def test_scrub_removes_configured_secrets_and_token_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_SCRUB_KEY", "plain-looking-value-42")
    settings = load_settings(
        {"models": {"m": {"provider": "scripted", "api_key": {"env": "TL_SCRUB_KEY"}, "password": "pw-literal-1"}}}
    )
    text = settings.scrub(
        "refused plain-looking-value-42 and pw-literal-1; header Bearer abc.def-ghi; key sk-proj-abcdefgh123; ok"
    )
    assert text == "refused ********** and **********; header Bearer **********; key **********; ok"
