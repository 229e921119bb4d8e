"""The plugin index behind ``taskloom plugins``: a second listing answers from the index
without importing the plugins, and every change that could alter the answer is seen.

Each test runs the real ``taskloom`` command in fresh processes, with a throw-away plugin
distribution on PYTHONPATH whose module appends a line to a marker file whenever it is
imported: the marker says whether a listing loaded the plugins or used the index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from taskloom import hookimpl
from taskloom.cli import main
from taskloom.testing import register_plugin

from .fakedist import make_dist

PLUGIN = """
import os
with open(os.environ["INDEX_MARKER"], "a") as marker:
    marker.write("imported\\n")

from taskloom import hookimpl

@hookimpl
def taskloom_register_tools(register, settings):
    def echo(text: str) -> str:
        \"\"\"Repeat the text.\"\"\"
        return text
    register(echo)
"""


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "site"
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.marker = tmp_path / "marker.txt"
        self.marker.write_text("")
        self.cache = tmp_path / "cache"
        make_dist(self.root, "index-probe", {"index-probe": "index_probe"}, {"index_probe": PLUGIN})
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.root), os.environ.get("PYTHONPATH", "")]),
            "INDEX_MARKER": str(self.marker),
            "XDG_CACHE_HOME": str(self.cache),
        }
        self.env.pop("TASKLOOM_PLUGIN_INDEX", None)

    def listing(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "taskloom", *args],
            cwd=self.work,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done

    def probe(self, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
        rows = json.loads(self.listing(*args, "plugins", "--json", env=env).stdout)
        return next(r for r in rows if r["name"] == "index-probe")

    @property
    def imports(self) -> int:
        return self.marker.read_text().count("imported")

    def touch_later(self, path: Path, text: str) -> None:
        # A new modification time even on file systems with coarse timestamps.
        before = path.stat().st_mtime_ns
        path.write_text(text)
        while path.stat().st_mtime_ns == before:
            time.sleep(0.01)
            path.write_text(text)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_second_listing_answers_from_the_index_with_the_same_output(setup: Setup) -> None:
    cold = setup.listing("plugins").stdout
    assert setup.imports == 1
    warm = setup.listing("plugins").stdout
    assert setup.imports == 1, "the second listing imported the plugin again"
    assert warm == cold and "index-probe" in warm
    cold_json = json.loads(setup.listing("plugins", "--json").stdout)
    assert setup.imports == 1
    assert {r["name"]: r["status"] for r in cold_json}["index-probe"] == "enabled"
    assert next(r for r in cold_json if r["name"] == "index-probe")["hooks"] == ["taskloom_register_tools"]


def test_refresh_loads_the_plugins_again(setup: Setup) -> None:
    setup.listing("plugins")
    setup.listing("plugins", "--refresh")
    assert setup.imports == 2


def test_editing_a_plugin_module_is_seen(setup: Setup) -> None:
    assert setup.probe()["status"] == "enabled"
    setup.touch_later(setup.root / "index_probe.py", PLUGIN + "\nraise ImportError('broken on purpose')\n")
    probe = setup.probe()
    assert probe["status"] == "failed" and "broken on purpose" in str(probe["reason"])


def test_editing_entry_points_in_place_is_seen(setup: Setup) -> None:
    setup.probe()
    info = setup.root / "index_probe-1.0.dist-info" / "entry_points.txt"
    setup.touch_later(info, "[taskloom]\nindex-probe = index_probe_missing\n")
    probe = setup.probe()
    assert probe["status"] == "failed" and "index_probe_missing" in str(probe["reason"])


def test_installing_another_distribution_is_seen(setup: Setup) -> None:
    setup.listing("plugins")
    make_dist(setup.root, "index-second", {"index-second": "index_second"}, {"index_second": "x = 1\n"})
    names = [r["name"] for r in json.loads(setup.listing("plugins", "--json").stdout)]
    assert "index-second" in names


def test_changing_the_config_file_is_seen(setup: Setup) -> None:
    assert setup.probe()["status"] == "enabled"
    (setup.work / "taskloom.toml").write_text('[taskloom]\ndisable = ["index-probe"]\n')
    assert setup.probe()["status"] == "disabled"
    (setup.work / "taskloom.toml").unlink()
    assert setup.probe()["status"] == "enabled"


def test_an_explicit_config_path_is_its_own_entry(setup: Setup, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[taskloom]\ndisable = ["index-probe"]\n')
    assert setup.probe()["status"] == "enabled"
    assert setup.probe("--config", str(other))["status"] == "disabled"
    assert setup.probe()["status"] == "enabled"


def test_changing_the_environment_is_seen(setup: Setup) -> None:
    assert setup.probe()["status"] == "enabled"
    env = {**setup.env, "TASKLOOM_DISABLE_PLUGINS": "index-probe"}
    assert setup.probe(env=env)["status"] == "disabled"
    assert setup.probe()["status"] == "enabled"


def test_the_index_can_be_turned_off(setup: Setup) -> None:
    env = {**setup.env, "TASKLOOM_PLUGIN_INDEX": "0"}
    setup.listing("plugins", env=env)
    setup.listing("plugins", env=env)
    assert setup.imports == 2
    assert not setup.cache.exists()


def test_a_cache_folder_that_cannot_be_written_costs_only_speed(setup: Setup) -> None:
    setup.cache.write_text("a file where the cache folder should be")
    first = setup.listing("plugins").stdout
    second = setup.listing("plugins").stdout
    assert first == second and "index-probe" in first and setup.imports == 2


def test_a_damaged_index_entry_is_ignored_and_rewritten(setup: Setup) -> None:
    setup.listing("plugins")
    (entry,) = (setup.cache / "taskloom" / "plugin-index").glob("*.json")
    entry.write_text("{not json")
    assert "index-probe" in setup.listing("plugins").stdout
    assert setup.imports == 2
    setup.listing("plugins")
    assert setup.imports == 2
    assert json.loads(entry.read_text())["format"] == 1


def test_the_index_never_holds_secret_values(setup: Setup) -> None:
    (setup.work / "taskloom.toml").write_text('[models.x]\nprovider = "scripted"\napi_key = "sk-do-not-store"\n')
    env = {**setup.env, "SOME_TOKEN": "tok-do-not-store"}
    setup.listing("plugins", env=env)
    (entry,) = (setup.cache / "taskloom" / "plugin-index").glob("*.json")
    text = entry.read_text()
    assert "sk-do-not-store" not in text and "tok-do-not-store" not in text


def test_inprocess_plugins_bypass_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    class Probe:
        @hookimpl
        def taskloom_register_tools(self, register: object, settings: object) -> None:
            pass

    with register_plugin(Probe(), name="inprocess-probe"):
        result = CliRunner().invoke(main, ["plugins", "--json"], catch_exceptions=False)
    assert "inprocess-probe" in result.output
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "taskloom" / "plugin-index").exists()
    result = CliRunner().invoke(main, ["plugins", "--json"], catch_exceptions=False)
    assert "inprocess-probe" not in result.output


def test_old_entries_are_pruned(setup: Setup) -> None:
    folder = setup.cache / "taskloom" / "plugin-index"
    folder.mkdir(parents=True)
    for n in range(70):
        stale = folder / f"stale{n:02d}.json"
        stale.write_text("{}")
        os.utime(stale, ns=(n * 1_000_000_000, n * 1_000_000_000))
    setup.listing("plugins")
    kept = sorted(p.name for p in folder.glob("*.json"))
    assert len(kept) == 64
    assert "stale00.json" not in kept and "stale69.json" in kept
    assert any(not name.startswith("stale") for name in kept)


def test_a_config_broken_after_a_listing_is_still_reported(setup: Setup) -> None:
    (setup.work / "taskloom.toml").write_text('[taskloom]\ndisable = ["index-probe"]\n')
    assert setup.probe()["status"] == "disabled"
    (setup.work / "taskloom.toml").write_text("[taskloom\n")
    done = subprocess.run(
        [sys.executable, "-m", "taskloom", "plugins"], cwd=setup.work, env=setup.env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "invalid TOML" in done.stderr and done.stdout == ""
