"""Build hook of the ``taskloom`` meta-distribution: depend on the kernel and on every
first-party plugin folder (``plugins/*``), each by its local path, so that one
``pip install .`` installs them all. ``contrib/*`` integrations are optional extras."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface


def _requirement(folder: Path) -> str:
    name = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"]
    return f"{name} @ {folder.resolve().as_uri()}"


class CustomMetadataHook(MetadataHookInterface):
    def update(self, metadata: dict[str, Any]) -> None:
        root = Path(self.root)
        folders = [root / "core", *sorted(p.parent for p in root.glob("plugins/*/pyproject.toml"))]
        metadata["dependencies"] = [_requirement(f) for f in folders]
        contrib = sorted(p.parent for p in root.glob("contrib/*/pyproject.toml"))
        metadata["optional-dependencies"] = {f.name: [_requirement(f)] for f in contrib}
