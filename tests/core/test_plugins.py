"""Plugin discovery and loading through real entry-point metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from taskloom import hookimpl, load_kernel
from taskloom.errors import ConfigError
from taskloom.testing import register_plugin

from .fakedist import activate, make_dist

GOOD = '''
from taskloom import hookimpl

@hookimpl
def taskloom_register_tools(register, settings):
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()
    register(shout)
'''

BAD_SIGNATURE = """
from taskloom import hookimpl

@hookimpl
def taskloom_register_tools(register, settings, nonsense):
    pass
"""

UNKNOWN_HOOK = """
from taskloom import hookimpl

@hookimpl
def taskloom_register_toolz(register, settings):
    pass
"""

RAISES = """
from taskloom import hookimpl

@hookimpl
def taskloom_register_tools(register, settings):
    def half(x: int) -> int:
        return x // 2
    register(half)
    raise RuntimeError("boom in registration")
"""

CONFIGURED = """
from pydantic import BaseModel
from taskloom import hookimpl

class Cfg(BaseModel):
    model_config = {"extra": "forbid"}
    level: int = 1

@hookimpl
def taskloom_config_model():
    return Cfg
"""

BASE = {"taskloom": {"store": "memory"}}


def _kernel(config: dict | None = None):
    return load_kernel({**BASE, **(config or {})})


def test_builtin_plugins_are_entry_points_and_enabled() -> None:
    kernel = _kernel()
    infos = kernel.plugins.infos
    for name in ("memory-cache", "memory-store", "prices", "limits", "console", "jsonl", "scripted"):
        assert infos[name].status == "enabled", infos[name]
        assert infos[name].distribution == "taskloom-core"
    assert "memory" in kernel.caches and "memory" in kernel.stores
    assert infos["prices"].hooks == ["taskloom_price"]


def test_third_party_plugin_is_loaded_and_its_tool_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(tmp_path, "fake-good", {"good": "fakeplug_good"}, {"fakeplug_good": GOOD})
    activate(tmp_path, monkeypatch)
    kernel = _kernel()
    assert kernel.plugins.infos["good"].status == "enabled"
    assert kernel.plugins.infos["good"].distribution == "fake-good"
    assert kernel.tools.get("shout").plugin == "good"


def test_missing_module_is_reported_and_the_rest_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(tmp_path, "fake-missing", {"ghost": "fakeplug_does_not_exist"})
    activate(tmp_path, monkeypatch)
    kernel = _kernel()
    info = kernel.plugins.infos["ghost"]
    assert info.status == "failed"
    assert "cannot import fakeplug_does_not_exist" in info.reason
    assert "ModuleNotFoundError" in info.reason
    assert kernel.plugins.infos["prices"].status == "enabled"


def test_hook_with_wrong_arguments_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(tmp_path, "fake-bad", {"bad": "fakeplug_bad"}, {"fakeplug_bad": BAD_SIGNATURE})
    activate(tmp_path, monkeypatch)
    info = _kernel().plugins.infos["bad"]
    assert info.status == "failed"
    assert "nonsense" in info.reason


def test_unknown_hook_name_is_reported_with_suggestion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(tmp_path, "fake-typo", {"typo": "fakeplug_typo"}, {"fakeplug_typo": UNKNOWN_HOOK})
    activate(tmp_path, monkeypatch)
    info = _kernel().plugins.infos["typo"]
    assert info.status == "failed"
    assert "taskloom_register_toolz matches no hook spec" in info.reason
    assert "did you mean 'taskloom_register_tools'" in info.reason


def test_plugin_raising_in_a_hook_is_failed_and_its_registrations_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(tmp_path, "fake-raise", {"raiser": "fakeplug_raise"}, {"fakeplug_raise": RAISES})
    activate(tmp_path, monkeypatch)
    kernel = _kernel()
    info = kernel.plugins.infos["raiser"]
    assert info.status == "failed"
    assert "taskloom_register_tools raised RuntimeError: boom in registration" in info.reason
    assert "half" not in kernel.tools


def test_two_plugins_with_the_same_name_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(tmp_path, "fake-one", {"twin": "fakeplug_one"}, {"fakeplug_one": GOOD})
    make_dist(tmp_path, "fake-two", {"twin": "fakeplug_two"}, {"fakeplug_two": GOOD})
    activate(tmp_path, monkeypatch)
    info = _kernel().plugins.infos["twin"]
    assert info.status == "failed"
    assert "two installed plugins are named 'twin'" in info.reason
    assert "fake-one" in info.reason and "fake-two" in info.reason


def test_disabled_plugin_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    source = f"open({str(marker)!r}, 'w').write('yes')\n" + GOOD
    make_dist(tmp_path, "fake-lazy", {"lazy": "fakeplug_lazy"}, {"fakeplug_lazy": source})
    activate(tmp_path, monkeypatch)
    monkeypatch.setenv("TASKLOOM_DISABLE_PLUGINS", "lazy")
    kernel = _kernel()
    assert kernel.plugins.infos["lazy"].status == "disabled"
    assert not marker.exists()
    monkeypatch.delenv("TASKLOOM_DISABLE_PLUGINS")
    _kernel()
    assert marker.exists()


def test_taskloom_plugins_env_loads_only_those(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_PLUGINS", "memory-store,prices")
    kernel = _kernel()
    assert sorted(kernel.plugins.enabled) == ["memory-store", "prices"]
    assert kernel.plugins.infos["limits"].status == "disabled"


def test_config_plugin_subset_and_disable() -> None:
    kernel = _kernel(
        {"taskloom": {"store": "memory", "plugins": ["memory-store", "prices", "limits"], "disable": ["limits"]}}
    )
    assert sorted(kernel.plugins.enabled) == ["memory-store", "prices"]


def test_unknown_plugin_in_enabled_list_is_an_error_with_suggestion() -> None:
    with pytest.raises(ConfigError) as err:
        _kernel({"taskloom": {"plugins": ["pricez"]}})
    assert "unknown plugin 'pricez'" in str(err.value)
    assert "did you mean 'prices'" in str(err.value)


def test_plugin_config_of_wrong_type_fails_that_plugin_only() -> None:
    kernel = _kernel({"plugins": {"memory-cache": {"max_entries": "lots"}}})
    info = kernel.plugins.infos["memory-cache"]
    assert info.status == "failed"
    assert "[plugins.memory-cache] key 'max_entries'" in info.reason
    assert "found 'lots'" in info.reason
    assert kernel.plugins.infos["prices"].status == "enabled"


def test_plugin_config_unknown_key_suggests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(tmp_path, "fake-cfg", {"cfg": "fakeplug_cfg"}, {"fakeplug_cfg": CONFIGURED})
    activate(tmp_path, monkeypatch)
    kernel = _kernel({"plugins": {"cfg": {"levle": 3}}})
    assert "unknown key 'levle' (did you mean 'level'?)" in kernel.plugins.infos["cfg"].reason
    kernel = _kernel({"plugins": {"cfg": {"level": 3}}})
    assert kernel.settings.plugin_config("cfg").level == 3


def test_config_for_a_plugin_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r"\[plugins.pricess\]: no installed plugin is named 'pricess' \(did you mean 'prices'\?\)"
    ):
        _kernel({"plugins": {"pricess": {}}})


def test_inprocess_plugin_is_removed_after_the_block() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.events: list[str] = []

        @hookimpl
        def taskloom_event(self, event):  # type: ignore[no-untyped-def]
            self.events.append(event.kind)

    recorder = Recorder()
    with register_plugin(recorder, "recorder"):
        kernel = _kernel()
        assert kernel.plugins.infos["recorder"].status == "enabled"
    kernel.emit(__import__("taskloom").Event(kind="x.y"))
    assert recorder.events == ["x.y"]
    assert "recorder" not in _kernel().plugins.infos


def test_trace_plugins_prints_hook_calls(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TASKLOOM_TRACE_PLUGINS", "1")
    kernel = _kernel()
    kernel.emit(__import__("taskloom").Event(kind="trace.me"))
    err = capsys.readouterr().err
    assert "taskloom: hook taskloom_event -> [" in err
    assert "jsonl" in err


def test_taskloom_plugin_fixture(taskloom_plugin) -> None:  # type: ignore[no-untyped-def]
    class Deny:
        @hookimpl
        def taskloom_check(self, action, settings):  # type: ignore[no-untyped-def]
            from taskloom import Denial

            return Denial(reason="nothing today", plugin="deny")

    taskloom_plugin(Deny(), "deny")
    kernel = _kernel()
    from taskloom.errors import PolicyDenied
    from taskloom.types import Action

    with pytest.raises(PolicyDenied, match="denied by deny: nothing today"):
        kernel.check(Action(kind="run"))
