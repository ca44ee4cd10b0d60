"""Run a Python command line (``python -m module``, ``python script.py``, ``python -c code``) as a user
would, without paying the interpreter's start-up each time.

Each command runs in a process of its own, forked from a server that imported torch, MONAI, ignite and
the other heavy libraries once (the ``forkserver`` start method of :mod:`multiprocessing`); the project
itself is imported afresh by every command. The command sees its own ``sys.argv``, working folder,
environment, ``__main__`` and ``sys.path[0]`` as ``python`` would set them, its uncaught exception goes
through ``sys.excepthook`` and its ``atexit`` functions run, and the caller gets its exit status, stdout
and stderr as :func:`subprocess.run` gives them. A start-up costs about 0.3 s here against about 8 s for
a new interpreter on a 2-core CPU, and the suite has about 30 such commands.

:func:`start_command` starts one without waiting, for a test that kills it. ``python -m
torch.distributed.run`` runs here too; the ranks it starts are new interpreters, as for a user.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Imported once by the server: what every command of the suite imports (about 8 s on 2 cores).
PRELOAD = ["torch", "monai", "ignite.engine", "scipy.ndimage", "SimpleITK", "nibabel", "fire", "matplotlib"]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def _exit_code(code: object) -> int:
    """The exit status ``python`` gives ``SystemExit(code)``: an int as is, ``None`` 0, else 1 (printed)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _child(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """Body of the forked process: set up what ``python <argv>`` would, run it, exit with its status."""
    import atexit
    import runpy

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:  # read by torch at import, which the server did before this command
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path.insert(0, cwd)
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            sys.path.insert(0, cwd)
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            script = os.path.abspath(argv[0])
            sys.argv = [argv[0], *argv[1:]]
            sys.path.insert(0, os.path.dirname(script))
            runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def torchrun(nproc: int, log_dir: Path) -> list[str]:
    """The start of a ``python -m torch.distributed.run`` command line: ``nproc`` ranks on this machine,
    on a free port (``--standalone``, so two such commands never meet on a fixed one), each rank's stdout
    and stderr also written under ``log_dir`` (:func:`rank_logs` reads them when the command fails)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "--log-dir",
        str(log_dir),
        "--redirects",
        "3",
        "--tee",
        "3",
    ]


def rank_logs(log_dir: Path, tail: int = 4000) -> str:
    """The end of every rank's output written by a :func:`torchrun` command, each under its file's name: what
    a failed multi-process test shows, since a rank's own error may lie far from the launcher's last lines."""
    files = sorted(p for p in Path(log_dir).rglob("*") if p.is_file())
    parts = [f"--- {p.relative_to(log_dir)} ---\n{p.read_text(errors='replace')[-tail:]}" for p in files]
    return "\n".join(parts)


def start_command(
    cmd: Sequence[str], *, cwd: str | Path = ROOT, env: Mapping[str, str] | None = None
) -> multiprocessing.process.BaseProcess:
    """Start ``cmd`` as :func:`run_command` runs it, without waiting; its output is discarded. Returns the
    process (``is_alive()``, ``kill()`` sends SIGKILL, ``join()``, ``exitcode``)."""
    return _start(cmd, cwd, env, os.devnull, os.devnull)


def _start(
    cmd: Sequence[str], cwd: str | Path, env: Mapping[str, str] | None, out: str, err: str
) -> multiprocessing.process.BaseProcess:
    """Fork the process that runs ``cmd`` (this interpreter's command line), stdout and stderr to files."""
    if len(cmd) < 2 or cmd[0] != sys.executable:
        raise ValueError(f"only this interpreter's command lines run here, not {list(cmd[:2])}")
    argv = [str(c) for c in cmd[1:]]
    child_env = dict(os.environ if env is None else env)
    process = _context.Process(target=_child, args=(argv, str(cwd), child_env, out, err))
    process.start()
    return process


def run_command(
    cmd: Sequence[str],
    *,
    cwd: str | Path = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (``[sys.executable, *python_args]``) and return what :func:`subprocess.run` with
    ``capture_output=True, text=True`` returns; ``check`` raises :class:`subprocess.CalledProcessError`
    on a non-zero status, and a command still running after ``timeout`` seconds is killed and raises
    :class:`subprocess.TimeoutExpired`."""
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryDirectory(prefix="command-") as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        for path in (out, err):  # there even if the process fails before the command starts
            Path(path).touch()
        process = _start(cmd, cwd, env, out, err)
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(cmd, timeout, Path(out).read_text(), Path(err).read_text())
        result = subprocess.CompletedProcess(
            cmd, process.exitcode, Path(out).read_text(), Path(err).read_text()
        )
    if check:
        result.check_returncode()
    return result
