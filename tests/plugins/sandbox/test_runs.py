"""Ordinary runs and bad input: results, files, input files, limits, languages."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from taskloom_sandbox import (
    InputFileError,
    LimitError,
    LimitOverrides,
    Limits,
    Sandbox,
    SandboxConfig,
    SandboxError,
    UnknownLanguage,
)

pytestmark = pytest.mark.anyio


async def test_python_result_has_output_status_and_duration(sandbox: Sandbox) -> None:
    result = await sandbox.run("python", "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (result.stdout, result.stderr, result.exit_code, result.signal) == ("out\n", "err\n", 3, None)
    assert result.isolation == "bwrap" and result.limits_hit == [] and 0 < result.duration_s < 2
    assert not result.ok and "exit code 3" in result.to_text()


async def test_bash_runs(sandbox: Sandbox) -> None:
    result = await sandbox.run("bash", "set -e\necho $((6 * 7))\necho $HOME $PWD")
    assert result.ok and result.stdout == "42\n/work /work\n"


async def test_signal_is_reported_by_name(sandbox: Sandbox) -> None:
    result = await sandbox.run("python", "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    assert result.exit_code is None and result.signal == "SIGTERM" and result.limits_hit == []


async def test_syntax_error_is_returned_not_raised(sandbox: Sandbox) -> None:
    result = await sandbox.run("python", "def broken(:\n    pass\n")
    assert result.exit_code == 1 and "SyntaxError" in result.stderr and result.stdout == ""
    bash = await sandbox.run("bash", "if then fi (")
    assert bash.exit_code == 2 and "syntax error" in bash.stderr


async def test_non_utf8_output_is_replaced_not_fatal(sandbox: Sandbox) -> None:
    result = await sandbox.run(
        "python", "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe\\x80 end\\n')\nsys.stderr.buffer.write(b'\\xc3')"
    )
    assert result.ok and result.stdout == "ok \ufffd\ufffd\ufffd end\n" and result.stderr == "\ufffd"


async def test_unicode_code_and_output(sandbox: Sandbox) -> None:
    result = await sandbox.run("python", "print('héllo → 世界')")
    assert result.stdout == "héllo → 世界\n"


async def test_created_files_are_listed_with_sizes_and_contents_on_request(sandbox: Sandbox) -> None:
    code = "import os\nos.makedirs('out/deep')\nopen('out/deep/a.txt', 'w').write('hello')\nopen('b.bin', 'wb').write(bytes(100))"
    listed = await sandbox.run("python", code)
    assert [(f.path, f.kind, f.size) for f in listed.files] == [
        ("b.bin", "file", 100),
        ("out", "dir", 0),
        ("out/deep", "dir", 0),
        ("out/deep/a.txt", "file", 5),
    ]
    assert all(f.content is None for f in listed.files)
    asked = await sandbox.run("python", code, return_files=["out/deep/a.txt", "/work/b.bin", "missing.txt"])
    contents = {f.path: f.content for f in asked.files}
    assert contents["out/deep/a.txt"] == "hello" and contents["b.bin"] == "\x00" * 100
    assert asked.notes == [
        "content of 'missing.txt' not returned: not found (only regular files are read; links are never followed)"
    ]
    assert "out/deep/a.txt (5 bytes)" in asked.to_text() and "hello" in asked.to_text()


async def test_file_contents_and_listing_are_capped(sandbox_with: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_with(max_listed_files=3, max_file_content_bytes=10)
    result = await sandbox.run(
        "python", "for i in range(5):\n    open(f'f{i}', 'w').write('x' * 50)", return_files=True
    )
    assert [f.path for f in result.files] == ["f0", "f1", "f2"] and result.files_truncated
    assert result.files[0].content == "x" * 10 and result.files[0].content_truncated
    assert result.files[1].content == "" and result.files[1].content_truncated


async def test_input_files_are_copied_from_the_allowlist(sandbox_with: Callable[..., Sandbox], tmp_path: Path) -> None:
    allowed = tmp_path / "data"
    (allowed / "nested").mkdir(parents=True)
    (allowed / "numbers.csv").write_text("1\n2\n3\n")
    (allowed / "nested" / "more.txt").write_text("more")
    original = (allowed / "numbers.csv").stat().st_mtime
    sandbox = sandbox_with(input_paths=[str(allowed)])
    code = "print(sum(int(x) for x in open('numbers.csv')))\nprint(open('nested/more.txt').read())\nopen('numbers.csv', 'a').write('4\\n')"
    result = await sandbox.run("python", code, files=[str(allowed / "numbers.csv"), str(allowed / "nested")])
    assert result.stdout == "6\nmore\n", result.stderr
    assert (allowed / "numbers.csv").read_text() == "1\n2\n3\n" and (
        allowed / "numbers.csv"
    ).stat().st_mtime == original


async def test_input_files_outside_the_allowlist_are_refused(
    sandbox_with: Callable[..., Sandbox], tmp_path: Path
) -> None:
    allowed = tmp_path / "data"
    allowed.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (allowed / "link").symlink_to(secret)
    sandbox = sandbox_with(input_paths=[str(allowed)])
    for path in [str(secret), str(allowed / "link"), str(allowed / ".." / "secret.txt"), "/etc/passwd"]:
        with pytest.raises(InputFileError, match="not inside an allowed input path"):
            await sandbox.run("python", "print(1)", files=[path])
    with pytest.raises(InputFileError, match="does not exist"):
        await sandbox.run("python", "print(1)", files=[str(allowed / "nope")])
    with pytest.raises(InputFileError, match="input_paths"):
        await sandbox_with().run("python", "print(1)", files=[str(secret)])


async def test_symlink_inside_an_allowed_directory_is_copied_as_a_dead_link(
    sandbox_with: Callable[..., Sandbox], tmp_path: Path
) -> None:
    allowed = tmp_path / "data"
    allowed.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    (allowed / "link").symlink_to(secret)
    sandbox = sandbox_with(input_paths=[str(allowed)])
    result = await sandbox.run("bash", "cat data/link; echo rc=$?", files=[str(allowed)], return_files=True)
    assert "TOPSECRET" not in result.model_dump_json() and "rc=1" in result.stdout


# ---------------------------------------------------------------- limits and languages


async def test_per_call_limits_can_tighten(sandbox: Sandbox) -> None:
    result = await sandbox.run("python", "print('x' * 100)", limits={"output_bytes": 10})
    assert result.limits_hit == ["output"] and result.stdout.startswith("x" * 10 + "\n[...")


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"timeout_s": 60}, "timeout_s=60 is above the configured 5"),
        ({"memory_mb": 4096, "processes": 1000}, "memory_mb=4096 is above the configured 256"),
        ({"timeout_s": -1}, "timeout_s: Input should be greater than 0"),
        ({"timeout_s": float("nan")}, "timeout_s: Input should be a finite number"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"memory_mb": "lots"}, "memory_mb: Input should be a valid integer"),
        ({"cpu_s": 0}, "cpu_s: Input should be greater than or equal to 1"),
        ({"processes": 1.5}, "processes: Input should be a valid integer"),
        ({"output_bytes": 10**12}, "output_bytes: Input should be less than or equal to"),
        ({"wall": 3}, "wall: Extra inputs are not permitted"),
    ],
)
async def test_nonsense_limits_are_a_validation_error(
    sandbox: Sandbox, limits: dict[str, object], message: str
) -> None:
    with pytest.raises(LimitError, match=r"per-call limits may only tighten|invalid limits") as info:
        await sandbox.run("python", "print(1)", limits=limits)
    assert message in str(info.value)


def test_limit_overrides_tighten_only() -> None:
    base = Limits(timeout_s=10, memory_mb=512)
    assert LimitOverrides(timeout_s=2).tighten(base).timeout_s == 2
    assert LimitOverrides().tighten(base) == base
    with pytest.raises(LimitError, match="raise the default"):
        LimitOverrides(memory_mb=1024).tighten(base)


@pytest.mark.parametrize(
    "config",
    [
        {"languages": ["ruby"]},
        {"languages": ["python", "python"]},
        {"isolation": "docker"},
        {"limits": {"timeout_s": 0}},
        {"limits": {"memory_mb": -5}},
        {"limits": {"cpu_s": "forever"}},
        {"limit": {}},
    ],
)
def test_nonsense_config_is_rejected(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SandboxConfig.model_validate(config)


async def test_unknown_language_is_refused(sandbox: Sandbox, sandbox_with: Callable[..., Sandbox]) -> None:
    with pytest.raises(UnknownLanguage, match="unknown language 'ruby'; the sandbox runs python, bash"):
        await sandbox.run("ruby", "puts 1")
    with pytest.raises(UnknownLanguage, match="'bash' is not enabled; enabled: python"):
        await sandbox_with(languages=["python"]).run("bash", "echo 1")


async def test_concurrent_runs_are_independent(sandbox: Sandbox) -> None:
    import anyio

    results: dict[int, str] = {}

    async def one(i: int) -> None:
        r = await sandbox.run(
            "python", f"import os\nopen('mine', 'w').write('{i}')\nprint(os.listdir('.'), open('mine').read())"
        )
        results[i] = r.stdout.strip()

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
    assert results == {i: f"['mine'] {i}" for i in range(4)}


async def test_working_directories_are_removed(sandbox_with: Callable[..., Sandbox]) -> None:
    root = Path(tempfile.mkdtemp(prefix="sandbox-runs-"))
    root.chmod(0o755)
    sandbox = sandbox_with(work_root=str(root))
    first = await sandbox.run("bash", "mkdir -p a/b && touch a/b/c && chmod 000 a/b a && echo done")
    second = await sandbox.run("python", "while True: pass", limits={"timeout_s": 0.3})
    assert first.stdout == "done\n" and second.limits_hit == ["timeout"]
    assert os.listdir(root) == []
    root.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the code to another uid")
async def test_unreachable_work_root_is_a_clear_error(sandbox_with: Callable[..., Sandbox], tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(SandboxError, match=r"cannot enter .*private.*work_root"):
        await sandbox_with(work_root=str(private)).run("python", "print(1)")


async def test_cancelled_call_kills_the_code(sandbox: Sandbox, host_processes: Callable[[str], list[int]]) -> None:
    import secrets

    import anyio

    marker = "cancel-" + secrets.token_hex(6)
    with anyio.move_on_after(0.5) as scope:
        await sandbox.run("bash", f"exec -a {marker} sleep 30")
    assert scope.cancelled_caught
    for _ in range(20):
        if not host_processes(marker):
            break
        await anyio.sleep(0.05)
    assert host_processes(marker) == []
