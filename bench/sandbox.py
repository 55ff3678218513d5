"""The Graph API sandbox in a process of its own, driven over its HTTP control API.

Meta is another machine: the sandbox runs as ``manage.py capi_sandbox`` in its own process,
on the second core, so it neither shares the dispatcher's interpreter lock nor its clock.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.harness import REPO, bench_environment, process_cpu_seconds


class SandboxProcess:
    """A running sandbox process: its ``url``, its control API and the CPU it has used."""

    def __init__(self, url: str, pid: int = 0) -> None:
        self.url = url
        self.pid = pid

    def cpu_seconds(self) -> float:
        """CPU seconds the sandbox process has used so far (0 if it cannot be read)."""
        return process_cpu_seconds(self.pid) if self.pid else 0.0

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/_sandbox/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read())

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change the fault settings (latency_ms, failure_rate, rate_limit_every, …)."""
        return self._call("POST", "faults", faults)

    def reset(self) -> None:
        """Open, no faults, no recorded traffic."""
        self._call("POST", "reset", {})

    def stats(self) -> dict[str, Any]:
        """Counts per pixel, totals, error codes and duplicates."""
        return self._call("GET", "stats")

    def event_ids(self, pixel_id: str) -> list[str]:
        """The event IDs the sandbox received for one pixel (test events excluded)."""
        answer = self._call("GET", f"events?pixel_id={pixel_id}&test=false")
        return [event["event_id"] for event in answer["events"]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def sandbox_process(database: str = "sqlite", **faults: Any) -> Iterator[SandboxProcess]:
    """Start ``manage.py capi_sandbox`` on a free loopback port; stop it on exit."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "capi_sandbox", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=bench_environment(database),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sandbox = SandboxProcess(f"http://127.0.0.1:{port}", process.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the sandbox exited: {process.stderr.read() if process.stderr else ''}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not start within 30 s") from None
                time.sleep(0.05)  # waiting for a process to listen, not synchronising threads
        if faults:
            sandbox.set_faults(**faults)
        yield sandbox
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
