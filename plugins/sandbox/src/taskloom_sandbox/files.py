"""Host-side file handling for a run: copying allowlisted input files in, listing what the
code left in its working directory, and reading contents without ever following a link
the code may have planted (a symlink to /etc/shadow must not be read by the host)."""

from __future__ import annotations

import contextlib
import itertools
import os
import posixpath
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from .errors import InputFileError
from .result import FileInfo

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def copy_inputs(files: Sequence[str], allowed: Sequence[str], dest: Path, max_bytes: int) -> list[str]:
    """Copy each host path (file or directory) into ``dest`` under its base name; every one
    must resolve (symlinks included) to a path inside an allowed one."""
    if files and not allowed:
        raise InputFileError(
            "input files were given but no input paths are allowed; list the allowed files or directories "
            "in [plugins.sandbox] input_paths"
        )
    roots = [os.path.realpath(p) for p in allowed]
    names: list[str] = []
    total = 0
    for given in files:
        real = os.path.realpath(given)
        if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
            raise InputFileError(
                f"input file {given!r} is not inside an allowed input path (it resolves to {real!r}); "
                f"allowed: {', '.join(allowed)}. Add it to [plugins.sandbox] input_paths"
            )
        if not os.path.exists(real):
            raise InputFileError(f"input file {given!r} does not exist")
        name = os.path.basename(os.path.normpath(given)) or os.path.basename(real)
        if name in names:
            raise InputFileError(f"two input files are named {name!r}; each lands in /work under its base name")
        total += _size(real)
        if total > max_bytes:
            raise InputFileError(
                f"input files exceed {max_bytes} bytes in total; copy fewer or raise [plugins.sandbox] max_input_bytes"
            )
        target = dest / name
        if os.path.isdir(real):
            shutil.copytree(real, target, symlinks=True)
        else:
            shutil.copyfile(real, target, follow_symlinks=False)
        names.append(name)
    return names


def _size(path: str) -> int:
    if not os.path.isdir(path):
        return os.lstat(path).st_size
    total = 0
    for dirpath, _dirs, filenames in os.walk(path):
        for f in filenames:
            total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirs, filenames in os.walk(root):
        for name in dirs + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def is_empty(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def list_files(work: Path, limit: int) -> tuple[list[FileInfo], bool]:
    """Entries under ``work``, depth first in name order, symlinks reported and never
    followed. At most ``limit + 1`` entries are read per directory, so a directory with a
    million files costs no more than one with ``limit``."""
    found: list[FileInfo] = []
    stack: list[tuple[Path, str]] = [(work, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(itertools.islice(it, limit + 1), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        subdirs: list[tuple[Path, str]] = []
        for entry in reversed(entries):
            if len(found) >= limit:
                return found, True
            rel = prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                found.append(FileInfo(path=rel, kind="symlink", target=_readlink(entry.path)))
            elif stat.S_ISDIR(st.st_mode):
                found.append(FileInfo(path=rel, kind="dir"))
                subdirs.append((Path(entry.path), rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                found.append(FileInfo(path=rel, kind="file", size=st.st_size))
            else:
                found.append(FileInfo(path=rel, kind="other"))
        stack.extend(reversed(subdirs))
    return found, False


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def read_beneath(root: Path, rel: str, cap: int) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes of the regular file ``rel`` under ``root``, refusing any
    symlink on the way (each component is opened with O_NOFOLLOW relative to its parent)."""
    parts = _split(rel)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        ffd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        try:
            if not stat.S_ISREG(os.fstat(ffd).st_mode):
                raise OSError(f"{rel} is not a regular file")
            chunks: list[bytes] = []
            remaining = cap + 1
            while remaining > 0:
                chunk = os.read(ffd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
            return data[:cap], len(data) > cap
        finally:
            os.close(ffd)
    finally:
        os.close(fd)


def _split(rel: str) -> list[str]:
    rel = _relative(rel)
    norm = posixpath.normpath(rel) if rel else ""
    if not norm or posixpath.isabs(norm) or norm in (".", "..") or norm.startswith("../"):
        raise OSError(f"{rel!r} is not a path inside /work")
    return norm.split("/")


def _relative(path: str) -> str:
    return path[len("/work/") :] if path.startswith("/work/") else path


def attach_contents(work: Path, files: list[FileInfo], wanted: bool | list[str], budget: int) -> list[str]:
    """Fill ``content`` of the wanted files (all regular files when ``wanted`` is True),
    ``budget`` bytes in total. Returns notes about files that could not be read."""
    notes: list[str] = []
    by_path = {f.path: f for f in files}
    if wanted is True:
        targets = [f.path for f in files if f.kind == "file"]
    elif wanted:
        targets = list(wanted)
    else:
        return notes
    for rel in targets:
        key = posixpath.normpath(_relative(rel))
        info = by_path.get(key)
        if info is None or info.kind != "file":
            kind = f"a {info.kind}" if info else "not found"
            notes.append(
                f"content of {rel!r} not returned: {kind} (only regular files are read; links are never followed)"
            )
            continue
        try:
            data, truncated = read_beneath(work, key, max(budget, 0))
        except OSError as exc:
            notes.append(f"content of {rel!r} not returned: {exc.strerror or exc}")
            continue
        budget -= len(data)
        info.content = data.decode("utf-8", errors="replace")
        info.content_truncated = truncated
    return notes


def remove_tree(root: Path) -> None:
    """Remove a run's directory, even if the code took permissions away from its files."""
    shutil.rmtree(root, ignore_errors=True)
    if not os.path.lexists(root):
        return
    for dirpath, dirs, _files in os.walk(root):
        for name in dirs:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o700)
    shutil.rmtree(root, ignore_errors=True)
