"""The bubblewrap command line, and the probe that tells whether bubblewrap can run here.

Inside the sandbox the code sees: ``/usr`` (and the ``/bin``, ``/lib*`` links into it)
read-only, a few loader files from ``/etc``, a synthetic ``/etc/passwd``, a private
``/proc`` and minimal ``/dev``, a private ``/tmp``, its writable working directory
``/work``, and its own script read-only under ``/sandbox``. Nothing else of the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .config import Limits, SandboxConfig
from .errors import SandboxUnavailable

WORKDIR = "/work"
SCRIPT_DIR = "/sandbox"
PATH = "/usr/local/bin:/usr/bin:/bin"
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
_NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates")


@dataclass(frozen=True)
class Layout:
    """Host paths of one run: ``root`` holds everything and is removed afterwards."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def script_dir(self) -> Path:
        return self.root / "script"

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    @property
    def group(self) -> Path:
        return self.root / "group"


def environment(home: str, tmp: str) -> dict[str, str]:
    """The whole environment of the code: nothing is inherited."""
    return {"PATH": PATH, "HOME": home, "LANG": "C.UTF-8", "TMPDIR": tmp, "PYTHONPATH": home, "USER": "sandbox"}


def rlimit_prefix(prlimit: str, limits: Limits) -> list[str]:
    """``prlimit`` arguments that set the limits, then exec the command (inside the sandbox,
    so RLIMIT_NPROC counts only the sandbox's own processes)."""
    mib = 1024 * 1024
    return [
        prlimit,
        f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",
        f"--as={limits.memory_mb * mib}",
        f"--fsize={limits.file_size_mb * mib}",
        f"--nproc={limits.processes}",
        "--core=0",
        "--",
    ]


def find_bwrap(config: SandboxConfig) -> str:
    path = shutil.which(config.bwrap_path)
    if path is None:
        raise SandboxUnavailable(
            f"the sandbox cannot isolate code: bubblewrap ({config.bwrap_path!r}) is not installed or not executable. "
            "Install it (Debian/Ubuntu: apt-get install bubblewrap, or run .ci/install-system-deps.sh), "
            'point [plugins.sandbox] bwrap_path at it, or set isolation = "none" (UNSAFE: no isolation)'
        )
    return path


def bwrap_command(
    bwrap: str, config: SandboxConfig, layout: Layout, command: list[str], *, disable_userns: bool = True
) -> list[str]:
    """The full ``bwrap ... -- command`` argument list."""
    args = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
    ]
    if disable_userns:
        args.append("--disable-userns")
    if not config.network:
        args.append("--unshare-net")
    args += ["--clearenv"]
    for key, value in environment(WORKDIR, "/tmp").items():
        args += ["--setenv", key, value]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in _TOP_LEVEL:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in _ETC_FILES + (_NETWORK_ETC if config.network else ()):
        args += ["--ro-bind-try", path, path]
    for path in config.ro_paths:
        args += ["--ro-bind", path, path]
    args += [
        "--ro-bind",
        str(layout.passwd),
        "/etc/passwd",
        "--ro-bind",
        str(layout.group),
        "/etc/group",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--bind",
        str(layout.tmp),
        "/tmp",
        "--bind",
        str(layout.work),
        WORKDIR,
        "--ro-bind",
        str(layout.script_dir),
        SCRIPT_DIR,
        "--remount-ro",
        "/",
        "--chdir",
        WORKDIR,
        "--",
    ]
    return args + command


def supports_disable_userns(bwrap: str) -> bool:
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--disable-userns" in out.stdout + out.stderr
