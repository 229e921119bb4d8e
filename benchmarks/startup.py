"""Start-up cost: median wall time of ``taskloom plugins`` and of ``import taskloom``.

Run it in an environment with every first-party plugin installed (``pip install .`` at
the repository root, or the tox ``bench`` environment). Each command runs in a fresh
process, several times; the median is reported. Last line:
``startup_plugins_ms=<N> import_ms=<N>``.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

RUNS = 15


def median_ms(command: list[str]) -> float:
    subprocess.run(command, check=True, capture_output=True)  # warm the file cache
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    exe = shutil.which("taskloom") or f"{sys.prefix}/bin/taskloom"
    listing = subprocess.run([exe, "plugins", "--json"], check=True, capture_output=True, text=True).stdout
    import json

    plugins = json.loads(listing)
    print(
        f"plugins installed: {len(plugins)} ({', '.join(p['name'] + ':' + p['status'].split(':')[0] for p in plugins)})"
    )
    baseline = median_ms([sys.executable, "-c", "pass"])
    plugins_ms = median_ms([exe, "plugins"])
    import_ms = median_ms([sys.executable, "-c", "import taskloom"])
    print(f"python -c pass: {baseline:.1f} ms (interpreter start, included in both figures)")
    print(f"startup_plugins_ms={plugins_ms:.0f} import_ms={import_ms:.0f}")


if __name__ == "__main__":
    main()
