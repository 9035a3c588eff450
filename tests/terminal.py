"""Running the installed ``rtrace`` with its stdout on a real pseudo-terminal, as a person at a
terminal sees it (tables, words, colours), while stderr stays a separate pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

RTRACE = shutil.which("rtrace")
_STYLE = re.compile("\x1b\\[[0-9;]*m")


def rtrace_command() -> list[str]:
    """The installed console script (or the module, where the script is not on PATH)."""
    return [RTRACE] if RTRACE else [sys.executable, "-m", "reasoning_trace"]


def on_a_terminal(
    root: Path | None,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``rtrace [--dir root] args`` with stdout on a pty 400 columns wide and no colours
    (``NO_COLOR``), stderr on a pipe; stdout comes back with the pty's ``\\r\\n`` as ``\\n``."""
    cmd = [*rtrace_command(), *(["--dir", str(root)] if root is not None else []), *args]
    full_env = {**os.environ, "COLUMNS": "400", "TERM": "xterm-256color", "NO_COLOR": "1"}
    out, err, code = run_with_pty_stdout(cmd, {**full_env, **(env or {})}, stdin, timeout)
    text = _STYLE.sub("", out.decode(errors="replace")).replace("\r\n", "\n")
    return subprocess.CompletedProcess(cmd, code, text, err.decode())


def run_with_pty_stdout(
    cmd: list[str], env: dict[str, str], stdin: str | None, timeout: float
) -> tuple[bytes, bytes, int]:
    """Run ``cmd`` with stdout on a new pty and stderr on a pipe until it exits."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cmd,
        stdout=slave,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        env=env,
    )
    os.close(slave)
    if stdin is not None and proc.stdin is not None:
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    assert proc.stderr is not None
    out, err = b"", b""
    open_fds = {master, proc.stderr.fileno()}
    deadline = time.monotonic() + timeout
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                raise TimeoutError(f"{cmd} still running after {timeout} s")
            ready, _, _ = select.select(list(open_fds), [], [], left)
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    open_fds.discard(fd)
                elif fd == master:
                    out += chunk
                else:
                    err += chunk
    finally:
        os.close(master)
        proc.stderr.close()
    return out, err, proc.wait(timeout=timeout)
