"""Plugin discovery and loading through real entry-point metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from taskloom import Message, ModelRequest, hookimpl, load_kernel
from taskloom.errors import ConfigError
from taskloom.testing import register_plugin

from .fakedist import activate, make_dist

pytestmark = pytest.mark.anyio

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


async def test_plugin_raising_in_a_hook_is_failed_and_its_registrations_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(tmp_path, "fake-raise", {"raiser": "fakeplug_raise"}, {"fakeplug_raise": RAISES})
    make_dist(tmp_path, "fake-good", {"good": "fakeplug_good"}, {"fakeplug_good": GOOD})
    activate(tmp_path, monkeypatch)
    kernel = _kernel({"models": {"fake": {"provider": "scripted", "default": "ok"}}})
    info = kernel.plugins.infos["raiser"]
    assert info.status == "failed"
    assert "taskloom_register_tools raised RuntimeError: boom in registration" in info.reason
    assert "half" not in kernel.tools
    # The others keep working: their registrations are there, their hooks are called.
    assert kernel.plugins.infos["good"].status == "enabled"
    assert (await kernel.tools.get("shout").run({"text": "hey"})).content == "HEY"
    response = await kernel.gateway.complete(ModelRequest(model="fake", messages=[Message.user("hi")]))
    assert response.text == "ok" and response.cost is not None and response.cost.source == "prices:local"


RAISES_IN_CONFIGURE = """
from taskloom import hookimpl

@hookimpl
def taskloom_configure(settings):
    raise OSError("cannot open the database")

@hookimpl
def taskloom_register_tools(register, settings):
    def never(x: int) -> int:
        return x
    register(never)
"""


def test_plugin_raising_in_configure_is_failed_and_never_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(tmp_path, "fake-cfgraise", {"cfgraise": "fakeplug_cfgraise"}, {"fakeplug_cfgraise": RAISES_IN_CONFIGURE})
    make_dist(tmp_path, "fake-good", {"good": "fakeplug_good"}, {"fakeplug_good": GOOD})
    activate(tmp_path, monkeypatch)
    kernel = _kernel()
    info = kernel.plugins.infos["cfgraise"]
    assert info.status == "failed"
    assert info.reason == "taskloom_configure raised OSError: cannot open the database"
    assert "never" not in kernel.tools
    assert kernel.tools.get("shout").plugin == "good"
    assert kernel.plugins.infos["prices"].status == "enabled"


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


async def test_trace_plugins_prints_every_hook_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    class Router:
        @hookimpl
        def taskloom_route(self, request, settings):  # type: ignore[no-untyped-def]
            return ["fake"] if request.model == "auto" else None

    monkeypatch.setenv("TASKLOOM_TRACE_PLUGINS", "1")
    with register_plugin(Router(), "trace-router"):
        kernel = _kernel(
            {
                "taskloom": {"store": "memory", "router": "trace-router"},
                "models": {"fake": {"provider": "scripted", "default": "ok"}},
                # a tier, so limits checks model calls; a path, so jsonl wants events
                "plugins": {
                    "limits": {"tiers": {"free": {"requests_per_minute": 100}}, "default_tier": "free"},
                    "jsonl": {"path": str(tmp_path / "events.jsonl")},
                },
            }
        )
    err = capsys.readouterr().err
    # Assembly: configuration and registration hooks.
    assert "taskloom: hook taskloom_config_model -> [limits]" in err
    assert "taskloom: hook taskloom_configure -> [prices]" in err
    assert "taskloom: hook taskloom_register_providers -> [scripted]" in err
    assert "taskloom: hook taskloom_register_caches [memory-cache] returned None" in err
    assert "taskloom: hook taskloom_check_kinds [limits] returned None" in err
    assert "taskloom: hook taskloom_wants_events [jsonl] returned True" in err
    await kernel.gateway.complete(ModelRequest(model="auto", messages=[Message.user("hi")]))
    err = capsys.readouterr().err
    # Every decision hook of one call: policy (per plugin), routing, pricing, sinks.
    assert "taskloom: hook taskloom_check -> [limits] action(kind='model_call')" in err
    assert "taskloom: hook taskloom_check -> [limits] action(kind='deployment')" in err
    assert "taskloom: hook taskloom_route -> [trace-router] request(model='auto')" in err
    assert "taskloom: hook taskloom_route [trace-router] returned ['fake']" in err
    assert "taskloom: hook taskloom_price -> [prices] alias='fake'" in err
    assert "taskloom: hook taskloom_price [prices] returned Cost(" in err
    assert "taskloom: hook taskloom_event -> [jsonl] event('model.call')" in err


def test_no_trace_without_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    kernel = _kernel()
    kernel.emit(__import__("taskloom").Event(kind="quiet"))
    kernel.check(__import__("taskloom").types.Action(kind="run"))
    assert "taskloom: hook" not in capsys.readouterr().err


def test_inprocess_plugin_named_like_an_installed_one_is_a_clear_error() -> None:
    from taskloom.errors import PluginError

    with register_plugin(object(), "prices"), pytest.raises(PluginError) as err:
        _kernel()
    assert "in-process plugin 'prices': an installed plugin of taskloom-core already has that name" in str(err.value)


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


class _Sink:
    """A sink that records every event, and answers ``taskloom_wants_events`` with ``wants``."""

    def __init__(self, wants: object) -> None:
        self.wants = wants
        self.events: list[str] = []

    @hookimpl
    def taskloom_wants_events(self, settings):  # type: ignore[no-untyped-def]
        if isinstance(self.wants, Exception):
            raise self.wants
        return self.wants

    @hookimpl
    def taskloom_event(self, event):  # type: ignore[no-untyped-def]
        self.events.append(event.kind)


class _PlainSink:
    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def taskloom_event(self, event):  # type: ignore[no-untyped-def]
        self.events.append(event.kind)


BUILTIN = ["memory-cache", "memory-store", "prices", "limits", "console", "jsonl", "scripted"]


def _scripted(*extra: str, **plugins: object) -> dict[str, object]:
    """Config for the built-in plugins, the in-process plugins ``extra`` and a scripted model."""
    return {
        "taskloom": {"store": "memory", "default_model": "fake", "plugins": [*BUILTIN, *extra]},
        "models": {"fake": {"provider": "scripted", "default": "ok"}},
        "plugins": plugins,
    }


async def test_an_inactive_sink_gets_no_event_and_an_active_one_gets_every_event() -> None:
    from taskloom import Agent, run_agent

    off, on, plain = _Sink(False), _Sink(True), _PlainSink()
    with register_plugin(off, "off-sink"), register_plugin(on, "on-sink"), register_plugin(plain, "plain-sink"):
        kernel = _kernel(_scripted("off-sink", "on-sink", "plain-sink"))
    assert kernel.has_sinks
    result = await run_agent(kernel, Agent(name="a"), "hello")
    assert result.ok
    assert off.events == []
    assert on.events == ["agent.start", "model.call", "agent.finish"]
    assert plain.events == on.events  # no answer: every event


async def test_with_every_sink_inactive_no_event_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in sinks as a user has them outside a terminal (console prints nothing,
    jsonl has no path, limits has no tier) all say they want no events."""
    from taskloom import Agent, run_agent
    from taskloom import types as taskloom_types

    monkeypatch.delenv("TASKLOOM_PROGRESS", raising=False)
    monkeypatch.delenv("TASKLOOM_EVENTS_JSONL", raising=False)
    off = _Sink(False)
    with register_plugin(off, "off-sink"):
        kernel = _kernel(_scripted("off-sink", console={"mode": "never"}))
    assert not kernel.has_sinks

    def no_events(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was emitted with no sink that wants it")

    monkeypatch.setattr(kernel, "emit", no_events)
    built = taskloom_types.build

    def build(cls, /, **values):  # type: ignore[no-untyped-def]
        assert cls is not taskloom_types.Event, "an event was built with no sink that wants it"
        return built(cls, **values)

    import taskloom.agent
    import taskloom.gateway

    monkeypatch.setattr(taskloom.agent, "build", build)
    monkeypatch.setattr(taskloom.gateway, "build", build)
    result = await run_agent(kernel, Agent(name="a"), "hello")
    assert result.ok and result.text == "ok"


def test_builtin_sinks_want_events_when_configured_to_show_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKLOOM_PROGRESS", raising=False)
    kernel = _kernel(
        {
            "taskloom": {"store": "memory", "plugins": BUILTIN},
            "plugins": {
                "console": {"mode": "always"},
                "jsonl": {"path": str(tmp_path / "e.jsonl")},
                "limits": {"tiers": {"free": {"tokens_per_day": 10}}},
            },
        }
    )
    assert sorted(kernel.event_sinks) == ["console", "jsonl", "limits"]
    kernel = _kernel(
        {
            "taskloom": {"store": "memory", "plugins": BUILTIN},
            "plugins": {"console": {"mode": "never"}, "limits": {"tiers": {"free": {"allowed_tools": []}}}},
        }
    )
    assert kernel.event_sinks == []  # a tier that counts no tokens or runs needs no events


def test_a_sink_may_answer_without_taking_the_settings() -> None:
    class Off(_PlainSink):
        @hookimpl
        def taskloom_wants_events(self):  # type: ignore[no-untyped-def]
            return False

    off = Off()
    with register_plugin(off, "off-sink"):
        kernel = _kernel(_scripted("off-sink"))
    assert "off-sink" in kernel.plugins.enabled and kernel.event_sinks == []


def test_a_sink_whose_answer_raises_gets_every_event(capsys: pytest.CaptureFixture[str]) -> None:
    broken = _Sink(RuntimeError("no idea"))
    with register_plugin(broken, "broken-sink"):
        kernel = _kernel()
    kernel.emit(__import__("taskloom").Event(kind="x.y"))
    assert broken.events == ["x.y"]
    assert "plugin broken-sink raised in taskloom_wants_events (RuntimeError: no idea)" in capsys.readouterr().err


class _Policy:
    """A policy that records the kinds it is asked about and answers ``taskloom_check_kinds``."""

    def __init__(self, kinds: object) -> None:
        self.kinds = kinds
        self.seen: list[str] = []

    @hookimpl
    def taskloom_check_kinds(self, settings):  # type: ignore[no-untyped-def]
        return self.kinds

    @hookimpl
    def taskloom_check(self, action, settings):  # type: ignore[no-untyped-def]
        self.seen.append(action.kind)


async def test_a_policy_sees_only_the_kinds_it_checks(capsys: pytest.CaptureFixture[str]) -> None:
    from taskloom import Agent, run_agent

    only_tools, every, bad = _Policy(["tool_call"]), _Policy(None), _Policy("tool_call")
    with register_plugin(only_tools, "tools-policy"), register_plugin(every, "every-policy"):
        with register_plugin(bad, "bad-policy"):
            kernel = _kernel(_scripted("tools-policy", "every-policy", "bad-policy"))
    provider = kernel.provider("fake")
    provider.add_tool_call("add", {"a": 1, "b": 2}).add_text("3")
    kernel.tools.register(lambda a, b: a + b, name="add")
    result = await run_agent(kernel, Agent(name="a", tools=["add"]), "add")
    assert result.ok and result.tool_calls[0].result == "3"
    assert only_tools.seen == ["tool_call"]
    calls = ["model_call", "deployment"]
    assert every.seen == [*calls, "tool_call", *calls]
    assert bad.seen == every.seen  # a string is not a list of kinds: asked about every kind
    assert "taskloom_check_kinds returned 'tool_call', not a list of action kinds" in capsys.readouterr().err
    assert kernel.checked == {"model_call", "deployment", "tool_call", "run", "delegate"}


async def test_a_policy_that_checks_no_kind_is_never_called() -> None:
    from taskloom import Denial
    from taskloom.types import Action

    class Deny(_Policy):
        @hookimpl
        def taskloom_check(self, action, settings):  # type: ignore[no-untyped-def]
            self.seen.append(action.kind)
            return Denial(reason="no", plugin="deny")

    deny = Deny(["run"])
    with register_plugin(deny, "deny"):
        kernel = _kernel(_scripted("deny", limits={"context_check": False}))
    assert kernel.checked == {"run"}
    response = await kernel.gateway.complete(ModelRequest(model="fake", messages=[Message.user("hi")]))
    assert response.text == "ok"
    from taskloom.errors import PolicyDenied

    with pytest.raises(PolicyDenied, match="no"):
        kernel.check(Action(kind="run"))
    assert deny.seen == ["run"]
