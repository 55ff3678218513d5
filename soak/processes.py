"""Starting, watching, killing and stopping the soak's processes.

Each service runs in a session (process group) of its own, so a qcluster and the worker
processes it forked can be killed together with one signal, exactly as an OOM killer or a lost
host would, and everything the soak started is stopped at the end — and only that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python")
MANAGE = str(REPO / "manage.py")


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def port_answers(port: int) -> bool:
    """Whether something accepts connections on ``127.0.0.1:port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@dataclass
class Service:
    """One started process (and its group): how to start it again, where it logs."""

    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: list[float] = field(default_factory=list)

    def start(self) -> Service:
        """Start (or start again) in a new session, appending to the log."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            self.command,
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        """Whether the main process still runs."""
        return self.process is not None and self.process.poll() is None

    def group_pids(self) -> list[int]:
        """Every live process of this service's group (the main one and what it forked)."""
        if self.process is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Field 5 of /proc/<pid>/stat is the process group; the name may hold spaces.
                stat = (entry / "stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[2]) == self.pid and fields[0] != "Z":
                    found.append(int(entry.name))
        return sorted(found)

    def kill_group(self) -> list[int]:
        """SIGKILL the whole group at once (no cleanup anywhere); returns the pids killed."""
        pids = self.group_pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)
        self.kills.append(time.time())
        return pids

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # Children that outlived their parent (a forked worker) go too.
        for pid in self.group_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def manage(*arguments: str) -> list[str]:
    """A ``manage.py`` command line with the project's interpreter."""
    return [PYTHON, MANAGE, *arguments]


def run_manage(
    env: dict[str, str], *arguments: str, timeout: float = 300, check: bool = True
) -> str:
    """Run a ``manage.py`` command to completion; its output (an error if ``check`` fails)."""
    done = subprocess.run(  # noqa: S603
        manage(*arguments),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(arguments)} failed:\n{done.stdout}{done.stderr}")
    return f"{done.stdout}{done.stderr}(exit status {done.returncode})\n"
