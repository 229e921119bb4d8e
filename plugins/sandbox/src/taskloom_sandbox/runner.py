"""Running one piece of code: prepare a fresh directory, start the isolated process, read
its output incrementally under the caps, enforce the wall clock, kill the whole process
tree, collect the files, remove the directory."""

from __future__ import annotations

import logging
import os
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
from pydantic import ValidationError

from . import bwrap as bw
from . import files as fs
from .config import LANGUAGES, LimitOverrides, Limits, SandboxConfig
from .errors import LimitError, SandboxError, SandboxUnavailable, UnknownLanguage
from .process import Child, pump
from .result import LimitName, SandboxResult

log = logging.getLogger("taskloom.sandbox")

NOBODY = 65534
_SCRIPT_NAMES = {"python": "main.py", "bash": "main.sh"}
_DRAIN_GRACE_S = 0.5
_PROBE_TIMEOUT_S = 15.0
_MARKER = "\n[... output truncated: more than {cap} bytes; the rest was discarded ...]"


class _Capture:
    """Bytes of one output stream, kept up to ``cap``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False
        self.done = anyio.Event()

    def add(self, chunk: bytes) -> bool:
        """Keep what fits; True when the cap was exceeded."""
        room = self.cap - len(self.data)
        if len(chunk) > room:
            if room > 0:
                self.data += chunk[:room]
            self.truncated = True
            return True
        self.data += chunk
        return False

    def text(self) -> str:
        out = self.data.decode("utf-8", errors="replace")
        return out + _MARKER.format(cap=self.cap) if self.truncated else out


class Sandbox:
    """Runs code under a :class:`SandboxConfig`. One instance per kernel; safe to use
    concurrently (every run has its own directory and namespaces)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.uid, self.gid = self._identity()
        self._ready: str | SandboxUnavailable | None = None
        self._ready_lock = anyio.Lock()
        self._disable_userns = True
        self._reachable: set[Path] = set()

    def _identity(self) -> tuple[int | None, int | None]:
        """Root never runs code as root: RLIMIT_NPROC does not apply to uid 0, and a
        confused deputy should hold as little as possible."""
        if os.geteuid() != 0:
            return None, None
        uid = self.config.run_as_uid or NOBODY
        return uid, self.config.run_as_gid or uid

    # ---------------------------------------------------------------- availability

    async def check(self) -> None:
        """Raise :class:`SandboxUnavailable` if code cannot be run with the configured
        isolation (probing bubblewrap once per instance)."""
        await self._bwrap()

    async def _bwrap(self) -> str | None:
        cfg = self.config
        if not os.path.exists(cfg.prlimit_path):
            raise SandboxUnavailable(
                f"prlimit was not found at {cfg.prlimit_path!r}; install util-linux or set [plugins.sandbox] prlimit_path"
            )
        if cfg.isolation == "none":
            return None
        async with self._ready_lock:
            if self._ready is None:
                try:
                    self._ready = await self._probe()
                except SandboxUnavailable as exc:
                    self._ready = exc
        if isinstance(self._ready, SandboxUnavailable):
            raise SandboxUnavailable(str(self._ready))
        return self._ready

    async def _probe(self) -> str:
        path = bw.find_bwrap(self.config)
        self._disable_userns = await anyio.to_thread.run_sync(bw.supports_disable_userns, path)
        layout = await anyio.to_thread.run_sync(self._prepare, "bash", "", (), Path(tempfile.gettempdir()))
        try:
            command = bw.bwrap_command(
                path, self.config, layout, ["/usr/bin/true"], disable_userns=self._disable_userns
            )
            with anyio.fail_after(_PROBE_TIMEOUT_S):
                done = await anyio.run_process(command, check=False, **self._spawn_options())
        except TimeoutError:
            raise SandboxUnavailable(
                f"bubblewrap ({path}) did not start a sandbox within {_PROBE_TIMEOUT_S:g} s"
            ) from None
        except OSError as exc:
            raise SandboxUnavailable(f"bubblewrap ({path}) could not be started: {exc}") from None
        finally:
            await anyio.to_thread.run_sync(fs.remove_tree, layout.root)
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip() or f"exit code {done.returncode}"
            raise SandboxUnavailable(
                f"bubblewrap ({path}) is installed but cannot create a sandbox here: {detail}. Usually unprivileged "
                "user namespaces are disabled (enable them: sysctl user.max_user_namespaces=10000, "
                "kernel.unprivileged_userns_clone=1, or kernel.apparmor_restrict_unprivileged_userns=0), "
                'or set [plugins.sandbox] isolation = "none" (UNSAFE: no isolation)'
            )
        return path

    def _spawn_options(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    # ---------------------------------------------------------------- running

    def limits_for(self, limits: LimitOverrides | Mapping[str, Any] | None) -> Limits:
        """The effective limits of a call: the configured ones, tightened by ``limits``."""
        if limits is None:
            return self.config.limits
        if not isinstance(limits, LimitOverrides):
            try:
                limits = LimitOverrides.model_validate(limits)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise LimitError(f"invalid limits: {problems}") from None
        return limits.tighten(self.config.limits)

    async def run(
        self,
        language: str,
        code: str,
        *,
        limits: LimitOverrides | Mapping[str, Any] | None = None,
        files: Sequence[str] = (),
        return_files: bool | list[str] = False,
    ) -> SandboxResult:
        """Run ``code`` and return what happened. Raises :class:`SandboxError` when it
        cannot be run at all (unknown language, bad limits, isolation unavailable)."""
        if language not in LANGUAGES:
            raise UnknownLanguage(f"unknown language {language!r}; the sandbox runs {', '.join(LANGUAGES)}")
        if language not in self.config.languages:
            raise UnknownLanguage(
                f"language {language!r} is not enabled; enabled: {', '.join(self.config.languages) or 'none'} "
                "(see [plugins.sandbox] languages)"
            )
        effective = self.limits_for(limits)
        interpreter = self.config.python_path if language == "python" else self.config.bash_path
        if not os.path.exists(interpreter):
            raise SandboxError(
                f"the {language} interpreter {interpreter!r} does not exist; set [plugins.sandbox] "
                f"{'python' if language == 'python' else 'bash'}_path"
            )
        bwrap = await self._bwrap()
        root = Path(self.config.work_root) if self.config.work_root else Path(tempfile.gettempdir())
        if files:
            layout = await anyio.to_thread.run_sync(self._prepare, language, code, tuple(files), root)
        else:
            layout = self._prepare(language, code, (), root)
        small = False
        try:
            result = await self._execute(language, interpreter, bwrap, layout, effective)
            # Listing is bounded (max_listed_files entries, read lazily), so it runs inline.
            self._collect(result, layout, return_files)
            small = not result.files_truncated and fs.is_empty(layout.tmp)
            return result
        finally:
            if small:  # a handful of entries: cheaper than a thread hop
                fs.remove_tree(layout.root)
            else:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(fs.remove_tree, layout.root)

    def _check_reachable(self, parent: Path) -> None:
        """The code's uid must be able to reach the run directory (bubblewrap binds from it)."""
        if self.uid is None or parent in self._reachable:
            return
        for folder in [parent, *parent.parents]:
            st = folder.stat()
            if not (
                st.st_mode & stat.S_IXOTH
                or (st.st_uid == self.uid and st.st_mode & stat.S_IXUSR)
                or (st.st_gid == self.gid and st.st_mode & stat.S_IXGRP)
            ):
                raise SandboxError(
                    f"the sandbox runs code as uid {self.uid} (taskloom runs as root), which cannot enter {folder} "
                    f"(mode {stat.S_IMODE(st.st_mode):o}); set [plugins.sandbox] work_root to a directory whose "
                    "parents are all world-searchable (the default, the system temp directory, is)"
                )
        self._reachable.add(parent)

    def _prepare(self, language: str, code: str, files: Sequence[str], parent: Path) -> bw.Layout:
        self._check_reachable(parent)
        layout = bw.Layout(Path(tempfile.mkdtemp(prefix="taskloom-sandbox-", dir=parent)))
        try:
            for d in (layout.work, layout.tmp, layout.script_dir):
                d.mkdir(mode=0o700)
            script = layout.script_dir / _SCRIPT_NAMES[language]
            script.write_text(code, encoding="utf-8")
            uid = self.uid if self.uid is not None else os.getuid()
            gid = self.gid if self.gid is not None else os.getgid()
            layout.passwd.write_text(f"sandbox:x:{uid}:{gid}:sandbox:{bw.WORKDIR}:/bin/sh\n")
            layout.group.write_text(f"sandbox:x:{gid}:\n")
            if files:
                fs.copy_inputs(files, self.config.input_paths, layout.work, self.config.max_input_bytes)
            if self.uid is not None and self.gid is not None:
                fs.chown_tree(layout.root, self.uid, self.gid)
        except BaseException:
            fs.remove_tree(layout.root)
            raise
        return layout

    def _command(
        self, language: str, interpreter: str, bwrap: str | None, layout: bw.Layout, limits: Limits
    ) -> list[str]:
        script_dir = bw.SCRIPT_DIR if bwrap else str(layout.script_dir)
        script = f"{script_dir}/{_SCRIPT_NAMES[language]}"
        run = (
            [interpreter, "-u", "-B", script]
            if language == "python"
            else [interpreter, "--norc", "--noprofile", script]
        )
        command = bw.rlimit_prefix(self.config.prlimit_path, limits) + run
        if bwrap is None:
            return command
        return bw.bwrap_command(bwrap, self.config, layout, command, disable_userns=self._disable_userns)

    async def _execute(
        self, language: str, interpreter: str, bwrap: str | None, layout: bw.Layout, limits: Limits
    ) -> SandboxResult:
        command = self._command(language, interpreter, bwrap, layout, limits)
        if bwrap is None:
            log.warning('running %s code WITHOUT isolation (isolation = "none")', language)
            env, cwd = bw.environment(str(layout.work), str(layout.tmp)), str(layout.work)
        else:
            env, cwd = {"PATH": bw.PATH}, None
        hit: set[LimitName] = set()
        out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
        killed = False
        start = time.perf_counter()
        child = Child.start(command, env=env, cwd=cwd, spawn=self._spawn_options())

        def kill() -> None:
            nonlocal killed
            killed = child.kill_group() or killed

        def sink(capture: _Capture) -> Callable[[bytes], None]:
            def take(chunk: bytes) -> None:
                if not capture.truncated and capture.add(chunk):
                    hit.add("output")
                    kill()

            return take

        async def read(pipe: IO[bytes] | None, capture: _Capture) -> None:
            try:
                await pump(pipe, sink(capture))
            finally:
                capture.done.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, child.popen.stdout, out)
                tg.start_soon(read, child.popen.stderr, err)
                with anyio.move_on_after(limits.timeout_s) as wall:
                    await child.wait()
                if wall.cancelled_caught:
                    hit.add("timeout")
                    kill()
                    await child.wait()
                if bwrap is None:
                    child.kill_leftovers()  # without namespaces a setsid() daemon escapes this
                with anyio.move_on_after(_DRAIN_GRACE_S):
                    await out.done.wait()
                    await err.done.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if child.returncode is None:
                    kill()
                    await child.wait()
                child.close()
        duration = time.perf_counter() - start
        result = SandboxResult(
            language=language,
            isolation="bwrap" if bwrap else "none",
            exit_code=None,
            stdout=out.text(),
            stderr=err.text(),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            duration_s=round(duration, 4),
        )
        _status(result, child.returncode, killed, bwrap is not None)
        hit |= _limits_from(result, limits, killed)
        result.limits_hit = [
            name for name in ("timeout", "cpu", "memory", "file_size", "processes", "output") if name in hit
        ]
        return result

    def _collect(self, result: SandboxResult, layout: bw.Layout, return_files: bool | list[str]) -> None:
        result.files, result.files_truncated = fs.list_files(layout.work, self.config.max_listed_files)
        if return_files:
            result.notes += fs.attach_contents(
                layout.work, result.files, return_files, self.config.max_file_content_bytes
            )


def _status(result: SandboxResult, returncode: int | None, killed: bool, via_bwrap: bool) -> None:
    """Exit code or signal. bubblewrap reports a child killed by signal N as 128 + N."""
    code = returncode if returncode is not None else -signal.SIGKILL
    signum: int | None = None
    if killed:
        signum = signal.SIGKILL
    elif code < 0:
        signum = -code
    elif via_bwrap and code > 128 and code - 128 in signal.valid_signals():
        signum = code - 128
    if signum is None:
        result.exit_code = code
    else:
        try:
            result.signal = signal.Signals(signum).name
        except ValueError:
            result.signal = f"signal {signum}"


_MEMORY_TEXT = ("MemoryError", "Cannot allocate memory", "cannot allocate memory", "xmalloc: cannot allocate")
_PROCESS_TEXT = ("Resource temporarily unavailable", "can't start new thread", "fork: retry")


def _limits_from(result: SandboxResult, limits: Limits, killed_by_us: bool) -> set[LimitName]:
    """Limits that (most likely) ended or hindered the code, from its signal and error text.
    A SIGKILL we did not send after at least ``cpu_s`` seconds is the hard CPU limit."""
    hit: set[LimitName] = set()
    err = result.stderr
    if result.signal == "SIGXCPU" or (
        result.signal == "SIGKILL" and not killed_by_us and result.duration_s >= limits.cpu_s
    ):
        hit.add("cpu")
    if result.signal == "SIGXFSZ" or "File too large" in err:
        hit.add("file_size")
    if any(t in err for t in _MEMORY_TEXT):
        hit.add("memory")
    if any(t in err for t in _PROCESS_TEXT):
        hit.add("processes")
    return hit
