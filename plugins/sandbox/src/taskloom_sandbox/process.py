"""A child process watched without blocking the event loop: its exit through a pidfd and
its pipes through non-blocking reads (``anyio.wait_readable``), so nothing depends on the
event loop's subprocess transports, and a pipe held open by a stray grandchild can be
abandoned cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import anyio
import anyio.to_thread

_CHUNK = 65536


class Child:
    """A process started in its own session (so its whole group can be killed)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(popen.pid)
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                os.set_blocking(pipe.fileno(), False)

    @classmethod
    def start(
        cls, command: Sequence[str], *, env: Mapping[str, str], cwd: str | None, spawn: Mapping[str, Any]
    ) -> Child:
        popen = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            **spawn,
        )
        return cls(popen)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    async def wait(self) -> int:
        """Wait for the exit (and reap it)."""
        if self._pidfd is None:
            return await anyio.to_thread.run_sync(self.popen.wait, abandon_on_cancel=True)
        while self.popen.poll() is None:
            await anyio.wait_readable(self._pidfd)
        return self.popen.returncode

    def kill_group(self) -> bool:
        """SIGKILL the process group, only while the leader is not reaped (so the group id
        cannot have been reused). True if the signal was sent."""
        if self.popen.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return True

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of the group after the leader exited."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def close(self) -> None:
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


async def pump(pipe: IO[bytes] | None, sink: Callable[[bytes], None]) -> None:
    """Hand every chunk read from ``pipe`` to ``sink`` until end of file."""
    if pipe is None:
        return
    fd = pipe.fileno()
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        except OSError:
            return
        if not chunk:
            return
        sink(chunk)
