"""``chalice local``, stopped with everything it started: ``python -m tools.chalice_local [options]``.

``chalice local`` reloads on code changes by default (``--autoreload``): the process you start
only watches, and serves nothing; the server is a child it starts again after each change. Chalice
stops that child on Ctrl-C in a terminal (the terminal sends SIGINT to both), but a SIGTERM to
the process you started (``kill <pid>``, a supervisor, an IDE's stop button, ``timeout``) ends
it alone and leaves the child serving the port, orphaned. That is Chalice's reloader (1.34), not
imageshelf's code, and ``--no-autoreload`` avoids it (one process, nothing to reload).

This wrapper runs ``chalice local`` (``--stage local`` unless another ``--stage`` is given; any
other option is passed on) in a process group of its own, passes SIGINT, SIGTERM and SIGHUP to
the whole group, and once ``chalice local`` has exited makes sure nothing of the group is left:
SIGTERM, then SIGKILL after ``GRACE`` seconds. Only a SIGKILL of the wrapper itself cannot be
passed on.

    AWS_ENDPOINT_URL=http://127.0.0.1:9000 .venv/bin/python -m tools.chalice_local --port 8000
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
GRACE = 5.0


def command(args: list[str]) -> list[str]:
    """The ``chalice local`` command line for ``args``, with ``--stage local`` by default."""
    chalice = Path(sys.executable).with_name("chalice")
    base = [str(chalice)] if chalice.exists() else [sys.executable, "-m", "chalice.cli"]
    if not any(a == "--stage" or a.startswith("--stage=") for a in args):
        args = ["--stage", "local", *args]
    return [*base, "--project-dir", str(ROOT), "local", *args]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    child = subprocess.Popen(command(args), start_new_session=True)
    group = child.pid  # a new session: its own process group, whose id is its pid
    stopped: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopped.append(signum)
        _signal_group(group, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    code = child.wait()
    end_group(group)
    return 0 if stopped else code


def end_group(group: int, grace: float = GRACE) -> None:
    """SIGTERM whatever is left in process group ``group``, then SIGKILL it after ``grace`` s."""
    if not _signal_group(group, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _signal_group(group, 0):
            return
        time.sleep(0.1)
    _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, signum: int) -> bool:
    """Send ``signum`` to the group; False if no process of it is left."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # a zombie member on some systems: treat as gone
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
