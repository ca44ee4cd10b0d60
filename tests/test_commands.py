"""``tests.commands.run_command`` gives what a new interpreter (``subprocess.run``) gives for the same
command line: exit status, stdout, stderr, ``sys.argv``, ``__name__``, ``sys.path[0]``, working folder,
environment, uncaught exceptions, ``sys.exit`` messages and ``atexit`` output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.commands import run_command, start_command

SCRIPT = textwrap.dedent(
    """
    import atexit, os, sys
    atexit.register(lambda: print("bye", flush=True))
    print(__name__, sys.argv[1:], os.path.basename(os.getcwd()), os.environ.get("PROBE"))
    print(os.path.basename(sys.path[0]) if sys.path[0] else "<cwd>", sys.path[0] in ("", os.getcwd()))
    print("to stderr", file=sys.stderr)
    if sys.argv[1:] == ["raise"]:
        raise ValueError("wrong value")
    if sys.argv[1:] == ["exit"]:
        sys.exit("a message")
    sys.exit(int(sys.argv[1]) if sys.argv[1:] else 0)
    """
)


def _both(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, ...]:
    fresh = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return fresh, run_command(cmd, cwd=cwd, env=env)


@pytest.mark.parametrize("args", [[], ["3"], ["raise"], ["exit"]])
def test_a_script_and_a_module_run_as_in_a_new_interpreter(tmp_path: Path, args: list[str]) -> None:
    package = tmp_path / "code"
    package.mkdir()
    (package / "probe.py").write_text(SCRIPT)
    env = {**os.environ, "PROBE": "seen"}
    for cmd in ([sys.executable, str(package / "probe.py"), *args], [sys.executable, "-m", "probe", *args]):
        fresh, forked = _both(cmd, package, env)
        assert forked.returncode == fresh.returncode == {"3": 3, "raise": 1, "exit": 1}.get("".join(args), 0)
        assert forked.stdout == fresh.stdout and "code" in fresh.stdout and "seen" in fresh.stdout
        assert forked.stdout.endswith("bye\n")
        assert forked.stderr.splitlines()[0] == "to stderr"
        assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]  # the error, or the message


def test_code_with_c_the_timeout_check_and_a_killed_start(tmp_path: Path) -> None:
    code = "import sys; print(sys.argv, __name__)"
    fresh, forked = _both([sys.executable, "-c", code, "x"], tmp_path, dict(os.environ))
    assert forked.stdout == fresh.stdout == "['-c', 'x'] __main__\n"
    with pytest.raises(subprocess.CalledProcessError):
        run_command([sys.executable, "-c", "raise SystemExit(2)"], check=True)
    with pytest.raises(subprocess.TimeoutExpired):
        run_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout=2)
    with pytest.raises(ValueError, match="this interpreter"):
        run_command(["ls"])
    started = start_command([sys.executable, "-c", "import time; time.sleep(30)"])
    assert started.is_alive()
    started.kill()
    started.join(10)
    assert started.exitcode == -signal.SIGKILL
