"""A process clock that only moves when told: libfaketime preloaded with a timestamp file.

``faketime -f "@2026-11-25 23:59:59" CMD`` starts a clock that ticks from the exec, so which
records a process writes before midnight depends on how long its start-up took (seconds on a
loaded machine). Here the process's wall clock (``time.time()``) is frozen at the instant
written in a file, ``YYYY-MM-DD HH:MM:SS[.ffffff]`` in UTC, and the file is read again at every
reading: the process itself (``move_clock``) or the test (``FakeClock.set``) moves it, so what a
test asserts about days does not depend on load or the scheduler.

The monotonic clock stays real (``FAKETIME_DONT_FAKE_MONOTONIC``), so timed waits and leases
behave as usual. libfaketime (0.9.10) then fails ``time.sleep`` with EINVAL: a process on this
clock must not sleep (it fails loudly if it does; it never hangs).

The processes the tests start import ``move_clock`` from here (``sys.path.append(HERE)``), so
this module imports only the standard library and pytest.
"""

from __future__ import annotations

import glob
import os
import sysconfig
from pathlib import Path

import pytest

CLOCK_FILE = "FAKETIME_TIMESTAMP_FILE"
HERE = str(Path(__file__).resolve().parent)  # for a script's sys.path


def find_libfaketime(name: str = "libfaketime.so.1") -> str | None:
    """The path of libfaketime (``name``: ``libfaketime.so.1``, or ``libfaketimeMT.so.1`` the
    multithreaded build), looked up where Debian's ``faketime`` wrapper loads it from
    (``/usr/$LIB/faketime``) and the other usual folders; None when it is not installed."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    folders = [
        f"/usr/lib/{arch}/faketime" if arch else "",
        "/usr/lib/faketime",
        "/usr/lib64/faketime",
        "/usr/local/lib/faketime",
        *sorted(glob.glob("/usr/lib/*/faketime")),
    ]
    for folder in filter(None, folders):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


LIBFAKETIME = find_libfaketime()
LIBFAKETIME_MT = find_libfaketime("libfaketimeMT.so.1")

needs_fake_clock = pytest.mark.skipif(
    LIBFAKETIME is None or LIBFAKETIME_MT is None,
    reason="needs libfaketime (Debian's faketime package; .ci/run installs it)",
)


def set_clock(path: str | os.PathLike[str], when: str) -> None:
    """Write ``when`` (``YYYY-MM-DD HH:MM:SS[.ffffff]``, UTC) to the clock file at ``path``,
    atomically: a process reading it sees the old instant or the new one, never half."""
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(when + "\n")
    os.replace(tmp, path)


def move_clock(when: str) -> None:
    """In a process started with ``FakeClock.env``: move its own clock to ``when`` (UTC); its
    next ``time.time()`` returns that instant."""
    set_clock(os.environ[CLOCK_FILE], when)


class FakeClock:
    """A clock file, frozen at ``when`` (UTC) until moved, and the environment that puts a
    process on it."""

    def __init__(self, path: Path, when: str) -> None:
        self.path = path
        self.set(when)

    def set(self, when: str) -> None:
        """Move the clock to ``when`` (UTC) for every process on it."""
        set_clock(self.path, when)

    def env(self, threads: bool = False) -> dict[str, str]:
        """This process's environment with libfaketime preloaded on this clock (the
        multithreaded build when ``threads``) and TZ=UTC."""
        lib = LIBFAKETIME_MT if threads else LIBFAKETIME
        if lib is None:
            pytest.skip("needs libfaketime (Debian's faketime package; .ci/run installs it)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAKETIME")}
        preload = env.get("LD_PRELOAD", "")
        env.update(
            LD_PRELOAD=f"{lib} {preload}".strip(),
            FAKETIME_TIMESTAMP_FILE=str(self.path),
            FAKETIME_NO_CACHE="1",
            FAKETIME_DONT_FAKE_MONOTONIC="1",
            TZ="UTC",
        )
        return env
