"""The security suite: each test is an attack that fails the test if the sandbox lets it
through. Where an attack would succeed without isolation, a ``control`` test runs it with
``isolation = "none"`` and shows that it does, so the detection itself is known to work.
docs/sandbox.md lists every case and its result."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from taskloom_sandbox import Sandbox, SandboxResult

pytestmark = pytest.mark.anyio


def everything(result: SandboxResult) -> str:
    """All text a result carries back to the host (output, file names, contents, notes)."""
    return result.model_dump_json()


# ---------------------------------------------------------------- resources


async def test_fork_bomb_is_contained(
    sandbox_with: Callable[..., Sandbox], host_processes: Callable[[str], list[int]]
) -> None:
    sandbox = sandbox_with(limits={"timeout_s": 1.5, "processes": 16, "cpu_s": 5})
    peak = 0
    samples = 0
    done = anyio.Event()

    async def watch() -> None:
        nonlocal peak, samples
        while not done.is_set():
            peak = max(peak, len(host_processes("/sandbox/main.sh")))
            samples += 1
            await anyio.sleep(0.02)

    # The outer loop starts the bomb again whenever its tree collapses (when every fork
    # fails, bash gives up), so it keeps pressing on the limit until the wall clock.
    bomb = "bomb() { bomb | bomb & }; while :; do bomb; sleep 0.01; done"
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        start = time.monotonic()
        result = await sandbox.run("bash", bomb)
        done.set()
    assert time.monotonic() - start < 3
    assert samples >= 10, f"the process table was sampled only {samples} times"
    assert peak >= 4, f"the bomb never ran: at most {peak} of its processes were seen at once"
    assert peak <= 16, f"{peak} bash processes ran at once; RLIMIT_NPROC was 16"
    assert "fork: retry: Resource temporarily unavailable" in result.stderr, result.stderr[:500]
    assert "processes" in result.limits_hit and "timeout" in result.limits_hit, result
    await anyio.sleep(0.1)
    assert host_processes("/sandbox/main.sh") == [], "fork bomb processes outlived the call"


async def test_python_fork_bomb_hits_process_limit(sandbox_with: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_with(limits={"timeout_s": 3, "processes": 8})
    code = "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(5)\n        break\n    print('forked', flush=True)\n"
    result = await sandbox.run("python", code)
    assert "processes" in result.limits_hit and "BlockingIOError" in result.stderr, result
    assert 1 <= result.stdout.count("forked") <= 8
    assert result.duration_s < 2.5  # the sleeping children die with the namespace, not at the timeout


async def test_memory_bomb_is_stopped(sandbox_with: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_with(limits={"memory_mb": 128})
    result = await sandbox.run("python", "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n")
    assert "memory" in result.limits_hit, result
    assert result.exit_code != 0 and "MemoryError" in result.stderr
    assert result.duration_s < 2


async def test_one_huge_allocation_is_refused(sandbox: Sandbox) -> None:
    result = await sandbox.run("python", "x = bytearray(8 * 1024 ** 3)\nprint('allocated')")
    assert "allocated" not in result.stdout and "memory" in result.limits_hit


async def test_infinite_loop_hits_wall_clock(sandbox_with: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_with(limits={"timeout_s": 1, "cpu_s": 5})
    result = await sandbox.run("python", "while True:\n    pass\n")
    assert result.limits_hit == ["timeout"] and result.signal == "SIGKILL" and result.exit_code is None
    assert 0.9 < result.duration_s < 1.8


async def test_sleeping_loop_hits_wall_clock_not_cpu(sandbox_with: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_with(limits={"timeout_s": 1})
    result = await sandbox.run("bash", "while true; do sleep 0.1; done")
    assert result.limits_hit == ["timeout"]


async def test_busy_loop_hits_cpu_limit(sandbox_with: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_with(limits={"timeout_s": 5, "cpu_s": 1})
    result = await sandbox.run("python", "while True:\n    pass\n")
    assert "cpu" in result.limits_hit and result.signal == "SIGXCPU", result
    assert result.duration_s < 4  # 1 s of CPU; more wall time only when the machine is busy


async def test_gigabytes_of_output_are_cut(sandbox: Sandbox) -> None:
    code = "import sys\nchunk = 'x' * 65536\nfor _ in range(16 * 1024):\n    sys.stdout.write(chunk)\n"  # 1 GiB
    start = time.monotonic()
    result = await sandbox.run("python", code, limits={"output_bytes": 10_000})
    assert time.monotonic() - start < 2
    assert result.limits_hit == ["output"] and result.stdout_truncated
    assert result.stdout.startswith("x" * 10_000) and "output truncated" in result.stdout
    assert len(result.stdout) < 10_200


async def test_endless_stderr_from_a_binary_is_cut(sandbox: Sandbox) -> None:
    result = await sandbox.run("bash", "yes 'to stderr' >&2", limits={"output_bytes": 5_000})
    assert result.limits_hit == ["output"] and result.stderr_truncated and len(result.stderr) < 5_200


async def test_large_file_is_cut_at_file_size_limit(sandbox_with: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_with(limits={"file_size_mb": 1})
    result = await sandbox.run("python", "open('big', 'wb').write(b'x' * (5 * 1024 * 1024))")
    assert "file_size" in result.limits_hit and "File too large" in result.stderr
    assert [f.size for f in result.files if f.path == "big"] == [1024 * 1024]


# ---------------------------------------------------------------- filesystem


_READ_SECRET = """
import os
for path in [{path!r}, "/proc/1/root" + {path!r}, "/proc/self/root" + {path!r}, "/etc/shadow", "/root/.bash_history"]:
    try:
        print(path, open(path).read())
    except OSError as e:
        print(path, "->", type(e).__name__)
try:
    print(os.listdir({folder!r}))
except OSError as e:
    print("listdir ->", type(e).__name__)
"""


async def test_secret_file_outside_workdir_is_unreadable(sandbox: Sandbox, secret_file) -> None:  # type: ignore[no-untyped-def]
    code = _READ_SECRET.format(path=str(secret_file.path), folder=str(secret_file.path.parent))
    result = await sandbox.run("python", code)
    assert result.exit_code == 0, result.stderr
    assert secret_file.token not in everything(result)
    assert "FileNotFoundError" in result.stdout


async def test_control_secret_file_is_readable_without_isolation(unsafe_sandbox: Sandbox, secret_file) -> None:  # type: ignore[no-untyped-def]
    code = _READ_SECRET.format(path=str(secret_file.path), folder=str(secret_file.path.parent))
    result = await unsafe_sandbox.run("python", code)
    assert secret_file.token in result.stdout


_WRITE_OUTSIDE = """
import os
for path in [{target!r}, "/usr/pwned", "/etc/pwned", "/pwned", "/sandbox/main.py", "/proc/1/root/usr/pwned"]:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        print(path, "written")
    except OSError as e:
        print(path, "->", type(e).__name__)
open({tmp_file!r}, "w").write("private tmp")
"""


async def test_writing_outside_workdir_fails(sandbox: Sandbox, open_dir: Path) -> None:
    host_tmp = Path("/tmp", "tmp-" + secrets.token_hex(6))
    try:
        code = _WRITE_OUTSIDE.format(target=str(open_dir / "pwned"), tmp_file=str(host_tmp))
        result = await sandbox.run("python", code)
        assert result.exit_code == 0, result.stderr
        assert list(open_dir.iterdir()) == []
        assert not Path("/usr/pwned").exists() and not Path("/pwned").exists() and not Path("/etc/pwned").exists()
        assert not host_tmp.exists(), "the sandbox's /tmp is the host's /tmp"
        assert "written" not in result.stdout.replace("/tmp", "")
    finally:
        host_tmp.unlink(missing_ok=True)


async def test_control_writing_outside_works_without_isolation(unsafe_sandbox: Sandbox, open_dir: Path) -> None:
    # Only paths inside the test's own folder (removed by the fixture) are checked; the
    # system paths of the script fail for the unprivileged user the unsafe mode runs as.
    system = [Path("/usr/pwned"), Path("/etc/pwned"), Path("/pwned")]
    existed = {p for p in system if p.exists()}
    tmp_file = open_dir / "private-tmp"
    try:
        result = await unsafe_sandbox.run(
            "python", _WRITE_OUTSIDE.format(target=str(open_dir / "pwned"), tmp_file=str(tmp_file))
        )
        assert (open_dir / "pwned").read_text() == "pwned", result
        assert tmp_file.read_text() == "private tmp", result
    finally:
        for path in system:
            if path not in existed:
                path.unlink(missing_ok=True)


async def test_workdir_is_fresh_and_removed(sandbox: Sandbox) -> None:
    first = await sandbox.run(
        "python", "import os\nprint(os.listdir('.'))\nopen('left', 'w').write('x')\nprint(os.getcwd())"
    )
    second = await sandbox.run("python", "import os\nprint(os.listdir('.'))")
    assert first.stdout.splitlines() == ["[]", "/work"] and second.stdout.strip() == "[]"
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("taskloom-sandbox-*/work/left"))


_SYMLINKS = """
import os
os.symlink({secret!r}, "secret_link")
os.symlink("/", "root_link")
os.symlink({folder!r}, "folder_link")
os.mkdir("sub")
os.symlink("../secret_link", "sub/chain")
os.symlink("/proc/1/root", "proc_root")
for path in ["secret_link", "folder_link/secret.txt", "sub/chain"]:
    try:
        print(path, open(path).read())
    except OSError as e:
        print(path, "->", type(e).__name__)
"""


async def test_symlinks_out_of_workdir_lead_nowhere(sandbox: Sandbox, secret_file) -> None:  # type: ignore[no-untyped-def]
    code = _SYMLINKS.format(secret=str(secret_file.path), folder=str(secret_file.path.parent))
    asked = [
        "secret_link",
        "folder_link/secret.txt",
        "sub/chain",
        "root_link/etc/passwd",
        "../secret.txt",
        str(secret_file.path),
        "proc_root/etc/hostname",
    ]
    result = await sandbox.run("python", code, return_files=asked)
    assert secret_file.token not in everything(result)
    kinds = {f.path: f.kind for f in result.files}
    assert kinds["secret_link"] == "symlink" and kinds["root_link"] == "symlink"
    assert not any(f.path.startswith(("root_link/", "folder_link/", "proc_root/")) for f in result.files)
    assert all(f.content is None for f in result.files)
    assert len(result.notes) == len(asked)


async def test_symlinks_are_not_followed_when_all_contents_are_asked(sandbox: Sandbox, secret_file) -> None:  # type: ignore[no-untyped-def]
    code = f"import os\nos.symlink({str(secret_file.path)!r}, 'a')\nopen('b', 'w').write('plain')"
    result = await sandbox.run("python", code, return_files=True)
    assert secret_file.token not in everything(result)
    assert {f.path: f.content for f in result.files} == {"a": None, "b": "plain"}


# ---------------------------------------------------------------- network


_CONNECT = """
import socket
try:
    s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
    s.sendall(b"leak")
    print("connected")
except OSError as e:
    print("blocked", type(e).__name__)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1)
    print("internet")
except OSError as e:
    print("no internet", type(e).__name__)
"""


async def test_tcp_to_host_loopback_is_blocked(sandbox: Sandbox, tcp_server) -> None:  # type: ignore[no-untyped-def]
    result = await sandbox.run("python", _CONNECT.format(port=tcp_server.port))
    await anyio.sleep(0.2)
    assert tcp_server.connections == []
    assert "blocked" in result.stdout and "connected" not in result.stdout and "internet\n" not in result.stdout


async def test_control_tcp_reaches_host_without_isolation(unsafe_sandbox: Sandbox, tcp_server) -> None:  # type: ignore[no-untyped-def]
    result = await unsafe_sandbox.run("python", _CONNECT.format(port=tcp_server.port))
    for _ in range(20):
        if tcp_server.connections:
            break
        await anyio.sleep(0.05)
    assert tcp_server.connections == [b"leak"], result


async def test_only_loopback_interface_exists(sandbox: Sandbox) -> None:
    result = await sandbox.run("bash", "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
    assert result.stdout.split() == ["lo"]


# ---------------------------------------------------------------- environment and processes


async def test_parent_environment_is_not_inherited(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "ENV-SECRET-" + secrets.token_hex(8)
    monkeypatch.setenv("TASKLOOM_TEST_SECRET", token)
    code = f"""
import os
print(dict(os.environ))
for path in ["/proc/self/environ", "/proc/1/environ", "/proc/{os.getpid()}/environ", "/proc/{os.getppid()}/environ"]:
    try:
        print(path, open(path, "rb").read())
    except OSError as e:
        print(path, "->", type(e).__name__)
os.system("env; cat /proc/*/environ 2>/dev/null")
"""
    result = await sandbox.run("python", code)
    assert token not in everything(result)
    env = eval(result.stdout.splitlines()[0])  # the dict printed first
    assert set(env) <= {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "USER", "PWD", "LC_CTYPE"}


async def test_parent_and_host_processes_cannot_be_signalled(sandbox: Sandbox, victim: subprocess.Popen[bytes]) -> None:
    code = f"""
import os, signal
for pid in [{victim.pid}, {os.getpid()}, os.getppid(), 1]:
    try:
        os.kill(pid, signal.SIGKILL)
        print(pid, "signalled")
    except OSError as e:
        print(pid, "->", type(e).__name__)
try:
    os.kill(-1, signal.SIGKILL)
except OSError as e:
    print(-1, "->", type(e).__name__)
"""
    result = await sandbox.run("python", code)
    await anyio.sleep(0.1)
    assert victim.poll() is None, "the sandbox killed a host process"
    print(result.stdout)


async def test_control_victim_dies_without_isolation(unsafe_sandbox: Sandbox, victim: subprocess.Popen[bytes]) -> None:
    await unsafe_sandbox.run("python", f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)")
    assert victim.wait(2) == -signal.SIGKILL


_DETACH = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", [{marker!r}, "30"])
    os._exit(0)
os.wait()
time.sleep(0.2)
def alive():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if {marker!r}.encode() in open(f"/proc/{{pid}}/cmdline", "rb").read():
                return True
        except OSError:
            pass
    return False
print("detached and alive" if alive() else "daemon did not start")
"""

_DETACH_BASH = """
( setsid bash -c 'exec -a {marker}-b sleep 30' & )
nohup bash -c 'exec -a {marker}-c sleep 30' >/dev/null 2>&1 &
disown
sleep 0.2
pgrep -f {marker} >/dev/null && echo "detached and alive"
"""


async def test_double_forked_daemon_does_not_outlive_the_call(
    sandbox: Sandbox, host_processes: Callable[[str], list[int]]
) -> None:
    marker = "detach-" + secrets.token_hex(6)
    result = await sandbox.run("python", _DETACH.format(marker=marker))
    result2 = await sandbox.run("bash", _DETACH_BASH.format(marker=marker))
    assert result.stdout.strip() == "detached and alive", result
    assert result2.stdout.strip() == "detached and alive", result2
    assert result.duration_s < 1.5 and result2.duration_s < 1.5
    for _ in range(10):
        if not host_processes(marker):
            break
        await anyio.sleep(0.05)
    assert host_processes(marker) == [], "a detached process outlived the call"


async def test_control_daemon_survives_without_isolation(
    unsafe_sandbox: Sandbox, host_processes: Callable[[str], list[int]]
) -> None:
    marker = "detach-" + secrets.token_hex(6)
    try:
        await unsafe_sandbox.run("python", _DETACH.format(marker=marker))
        assert host_processes(marker), "without namespaces the daemon should escape (the test would not see it)"
    finally:
        for pid in host_processes(marker):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- escapes through libraries


async def test_ctypes_escapes_fail(sandbox: Sandbox, secret_file, victim: subprocess.Popen[bytes]) -> None:  # type: ignore[no-untyped-def]
    code = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def show(name, value):
    print(name, value, os.strerror(ctypes.get_errno()) if value == -1 else "")
show("setuid0", libc.setuid(0))
show("unshare_user", libc.unshare(0x10000000))
show("unshare_mount", libc.unshare(0x00020000))
show("mount", libc.mount(b"none", b"/usr", b"tmpfs", 0, None))
show("chroot", libc.chroot(b"/"))
show("open_secret", libc.open({str(secret_file.path).encode()!r}, 0))
show("kill_victim", libc.kill({victim.pid}, 9))
show("reboot", libc.reboot(0x4321fedc))
"""
    result = await sandbox.run("python", code)
    assert result.exit_code == 0, result.stderr
    outcomes = {line.split()[0]: (int(line.split()[1]), line.split(None, 2)[2:]) for line in result.stdout.splitlines()}
    errors = {name: (text[0] if text else "") for name, (value, text) in outcomes.items()}
    assert {name: value for name, (value, _) in outcomes.items()} == dict.fromkeys(
        ["setuid0", "unshare_user", "unshare_mount", "mount", "chroot", "open_secret", "kill_victim", "reboot"], -1
    ), result.stdout
    assert errors == {
        "setuid0": "Invalid argument",  # uid 0 is not mapped in the sandbox's user namespace
        "unshare_user": "No space left on device",  # no nested user namespaces (max_user_namespaces = 1)
        "unshare_mount": "Operation not permitted",  # no capabilities
        "mount": "Operation not permitted",
        "chroot": "Operation not permitted",
        "open_secret": "No such file or directory",  # the host path does not exist in the sandbox
        "kill_victim": "No such process",  # the victim is in another PID namespace
        "reboot": "Operation not permitted",
    }, result.stdout
    assert victim.poll() is None and secret_file.token not in everything(result)


async def test_ptrace_of_the_sandbox_init_only_stalls_its_own_call(sandbox_with: Callable[..., Sandbox]) -> None:
    """The code may trace the sandbox's own init (same uid, no capabilities, inside every
    namespace): that stops the init, so the call ends at the wall clock, and all dies."""
    sandbox = sandbox_with(limits={"timeout_s": 1})
    code = "import ctypes\nprint(ctypes.CDLL(None).ptrace(16, 1, 0, 0))\nprint(ctypes.CDLL(None).ptrace(16, 0, 0, 0))"
    result = await sandbox.run("python", code)
    assert result.limits_hit == ["timeout"] and result.duration_s < 1.8


async def test_os_system_runs_inside_the_sandbox(sandbox: Sandbox, secret_file, open_dir: Path, victim) -> None:  # type: ignore[no-untyped-def]
    code = f"""
import os, subprocess
os.system("cat {secret_file.path} > leak 2>&1; kill -9 {victim.pid}; echo x > {open_dir}/pwned; id > id.txt")
print(subprocess.run(["sh", "-c", "cat {secret_file.path}; hostname; ls /proc | grep -c '^[0-9]'"],
                     capture_output=True, text=True).stdout)
"""
    result = await sandbox.run("python", code, return_files=True)
    assert secret_file.token not in everything(result)
    assert victim.poll() is None and list(open_dir.iterdir()) == []
    contents = {f.path: f.content for f in result.files}
    assert "No such file" in (contents["leak"] or "") and "uid=" in (contents["id.txt"] or "")
    assert result.stdout.split()[0] == "sandbox"
    assert int(result.stdout.split()[1]) <= 5, "the sandbox sees host processes"
