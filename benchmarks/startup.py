"""Start-up cost: median wall time of ``taskloom plugins`` and of ``import taskloom``.

``taskloom plugins`` is timed as users meet it: the first listing loads every plugin and
writes the plugin index, later ones answer from it while nothing they depend on changed
(see ``taskloom.plugin_index``). ``taskloom plugins --refresh``, which loads every plugin
each time (the cost of any command that assembles the kernel), is printed too.

Run it in an environment with every first-party plugin installed (``pip install .`` at
the repository root, or the tox ``bench`` environment). Each command runs in a fresh
process, several times; the median is reported. Last line:
``startup_plugins_ms=<N> import_ms=<N>``.
"""

from __future__ import annotations

import compileall
import importlib.metadata
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15

# What a user runs: pip writes bytecode at install time, so a start-up does not compile
# sources. Editable installs and PYTHONDONTWRITEBYTECODE (set by tox) would otherwise
# put compilation into every sample.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_bytecode() -> int:
    """Write the bytecode of taskloom and its plugins' packages; returns how many packages."""
    names = {"taskloom"}
    for ep in importlib.metadata.entry_points(group="taskloom"):
        names.add(ep.value.split(":")[0].split(".")[0])
    done = 0
    for name in sorted(names):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                compileall.compile_dir(Path(folder), quiet=1)
            done += 1
    return done


def median_ms(command: list[str]) -> float:
    subprocess.run(command, check=True, capture_output=True, env=ENV)  # warm the file cache
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=ENV)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    local = Path(sys.prefix) / "bin" / "taskloom"
    exe = str(local) if local.exists() else shutil.which("taskloom") or "taskloom"
    print(f"bytecode written for {compile_bytecode()} packages (as pip does at install)")
    listing = subprocess.run([exe, "plugins", "--json"], check=True, capture_output=True, text=True).stdout
    import json

    plugins = json.loads(listing)
    print(
        f"plugins installed: {len(plugins)} ({', '.join(p['name'] + ':' + p['status'].split(':')[0] for p in plugins)})"
    )
    baseline = median_ms([sys.executable, "-c", "pass"])
    plugins_ms = median_ms([exe, "plugins"])
    full_ms = median_ms([exe, "plugins", "--refresh"])
    import_ms = median_ms([sys.executable, "-c", "import taskloom"])
    print(f"python -c pass: {baseline:.1f} ms (interpreter start, included in both figures)")
    print(f"taskloom plugins --refresh (every plugin loaded, no index): {full_ms:.0f} ms")
    print(f"startup_plugins_ms={plugins_ms:.0f} import_ms={import_ms:.0f}")


if __name__ == "__main__":
    main()
