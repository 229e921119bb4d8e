"""Install throw-away distributions with ``taskloom`` entry points onto sys.path, so plugin
discovery is tested through real entry-point metadata, not a patched loader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def make_dist(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> None:
    """Write ``dist``'s metadata (and optional module files) under ``root``."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[taskloom]\n{lines}\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(source)


def activate(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m.startswith("fakeplug")]:
        del sys.modules[name]
