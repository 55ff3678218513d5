"""HTTP ingest: the demo site under gunicorn (2 workers) on loopback, loaded by ``wrk``.

Two phases, each for a bounded time after a short warm-up: single events (one event per
request) and batches (100 events per request), each request with its own event IDs, over
keep-alive connections, authenticated as a server (``Authorization: Bearer <secret>``).
``wrk`` (Debian's package; ``make bench`` installs it) is a C load generator: it takes a
fraction of a core where a Python generator would compete with the server for the same two.

Checks: no socket error and no answer other than 202; every event of every answered
request is in the database once (a request still in flight when the time is up may add
its events too, so at most one request per connection more), none rejected.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.harness import REPO, Result, bench_environment, empty_tables, sized

GOAL_REQUESTS_PER_SECOND = 2_000
GOAL_P99_MS = 50.0
GOAL_BATCH_EVENTS_PER_SECOND = 15_000
WORKERS = 2
BATCH_SIZE = 100
_ERROR_KEYS = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")

# One request's body: event IDs are "<phase><thread>-<request>[-<n>]", unique per run.
_LUA = r"""
local counter = 0
local thread_id = 0
local threads = {}
local path = "%(path)s"
local per_request = %(per_request)d
local phase = "%(phase)s"
local event_time = %(event_time)d
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer %(secret)s",
}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = wrk.thread:get("thread_id")
end

local function event(id, n)
  return string.format(
    '{"event_name":"Purchase","event_time":%%d,"event_id":"%%s","action_source":"website",' ..
    '"event_source_url":"https://shop.example.com/checkout",' ..
    '"user_data":{"email":"Customer.%%s@Example.com","phone":"+1 650 555 %%04d",' ..
    '"client_ip_address":"203.0.113.%%d","client_user_agent":"Mozilla/5.0 (X11; Linux x86_64)",' ..
    '"fbp":"fb.1.1700000000000.%%d"},' ..
    '"custom_data":{"value":%%d.99,"currency":"usd"}}',
    event_time, id, id, n %% 10000, n %% 250, 1000000000 + n, n %% 500)
end

function request()
  if per_request == 0 then
    return wrk.format("GET", path)
  end
  counter = counter + 1
  local base = phase .. thread_id .. "-" .. counter
  local body
  if per_request == 1 then
    body = event(base, counter)
  else
    local parts = {}
    for i = 1, per_request do
      parts[i] = event(base .. "-" .. i, counter * per_request + i)
    end
    body = '{"data":[' .. table.concat(parts, ",") .. ']}'
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  io.write("WRK_JSON " .. string.format(
    '{"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect_errors":%%d,"read_errors":%%d,' ..
    '"write_errors":%%d,"status_errors":%%d,"timeouts":%%d,"latency_mean_us":%%.1f,' ..
    '"latency_p50_us":%%d,"latency_p90_us":%%d,"latency_p99_us":%%d,"latency_max_us":%%d}',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max) .. "\n")
end
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_listening(port: int, process: subprocess.Popen[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # waiting for a server to start, not synchronising threads
    raise RuntimeError(f"gunicorn did not listen on port {port} within {seconds} s")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def _processes(*, parent: int | None = None, name: str | None = None) -> list[int]:
    """Pids of the children of ``parent`` or of the processes called ``name``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if (name is not None and comm == name) or (
            parent is not None and int(rest.split()[1]) == parent
        ):
            found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds spent by the site's gunicorn processes, PostgreSQL's processes and wrk.

    Tells what one request costs the machine, whatever else shares it: the two cores divided by
    that cost is the most requests per second this machine could serve. PostgreSQL is counted
    twice: every ``postgres`` process of the machine (``postgresql``), and only the backends
    connected to the benchmark's own database (``postgresql_own``), which is what the site's
    requests cost when other work shares the server.
    """

    def __init__(self, gunicorn_pid: int) -> None:
        self.gunicorn_pid = gunicorn_pid

    def sample(self) -> dict[str, Any]:
        site = [self.gunicorn_pid, *_processes(parent=self.gunicorn_pid)]
        children = os.times()  # wrk runs as this process's child
        return {
            "site": sum(_cpu_seconds(pid) for pid in site),
            "postgresql": sum(_cpu_seconds(pid) for pid in _processes(name="postgres")),
            "wrk": children.children_user + children.children_system,
            "backends": {pid: _cpu_seconds(pid) for pid in _own_backends()},
        }

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        """CPU seconds per part between two samples."""
        spent = {part: after[part] - before[part] for part in ("site", "postgresql", "wrk")}
        # A backend that started in between counts from zero; one that ended is not seen.
        spent["postgresql_own"] = sum(
            cpu - before["backends"].get(pid, 0.0) for pid, cpu in after["backends"].items()
        )
        return spent


def _own_backends() -> list[int]:
    """Pids of the PostgreSQL backends connected to this benchmark's database (but ours)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [pid for (pid,) in cursor.fetchall()]


@contextmanager
def gunicorn(database: str, *, worker_class: str, threads: int) -> Iterator[tuple[int, int]]:
    """The demo site under gunicorn with 2 workers on a free loopback port; yields the port and
    the master's pid."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "project.wsgi:application",
        "--workers",
        str(WORKERS),
        "--worker-class",
        worker_class,
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--backlog",
        "2048",
        "--keep-alive",
        "75",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=bench_environment(database),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_listening(port, process, 30)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wrk(
    port: int,
    *,
    path: str,
    secret: str,
    phase: str,
    per_request: int,
    seconds: int,
    connections: int,
) -> dict[str, Any]:
    script = _LUA % {
        "path": path,
        "per_request": per_request,
        "phase": phase,
        "event_time": int(time.time()) - 60,
        "secret": secret,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = Path(handle.name)
    try:
        completed = subprocess.run(
            [
                "wrk",
                "--threads",
                "1",
                "--connections",
                str(connections),
                "--duration",
                f"{seconds}s",
                "--timeout",
                "10s",
                "--script",
                str(script_path),
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    finally:
        script_path.unlink(missing_ok=True)
    for line in completed.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line.removeprefix("WRK_JSON "))
    raise RuntimeError("wrk printed no summary:\n" + completed.stdout + completed.stderr)


def _stored(prefix: str) -> tuple[int, int, int]:
    """(rows, distinct event IDs, rejected rows) of the events whose ID starts with prefix."""
    from capi_destinations.models import Event

    rows = Event.objects.filter(event_id__startswith=prefix)
    return (
        rows.count(),
        rows.values("event_id").distinct().count(),
        rows.exclude(status="pending").count(),
    )


def run(mode: str, database: str) -> Result:
    """Load the endpoint with single events, then batches; check every event was stored."""
    from django.urls import reverse

    from bench.fixtures import create_destinations

    if shutil.which("wrk") is None:
        raise RuntimeError(
            "wrk is not installed: `apt-get install wrk` (make bench does it when run as root)"
        )
    seconds = sized(mode, full=20, quick=4, smoke=2)
    warmup = sized(mode, full=3, quick=1, smoke=1)
    worker_class = os.environ.get("BENCH_GUNICORN_WORKER_CLASS", "gthread")
    threads = int(os.environ.get("BENCH_GUNICORN_THREADS", "4"))

    empty_tables()
    (destination,) = create_destinations(1, prefix="http")
    secret = destination.set_ingest_secret()
    destination.save()
    path = reverse("capi_destinations:ingest_events", args=[destination.ingest_key])

    phases = {
        "single": {"per_request": 1, "connections": 8},
        "batch": {"per_request": BATCH_SIZE, "connections": 4},
    }
    measured: dict[str, dict[str, Any]] = {}
    cpu_ms: dict[str, dict[str, float]] = {}
    with gunicorn(database, worker_class=worker_class, threads=threads) as (port, pid):
        meter = CpuMeter(pid)
        # The ceiling: the same site, workers and middleware answering a request that does no
        # work (the root URL's redirect), so the table shows what is left for recording events.
        ceiling_common = {"path": "/", "secret": "", "per_request": 0, "connections": 8}
        _wrk(port, phase="warmceiling", seconds=warmup, **ceiling_common)
        before = meter.sample()
        ceiling = _wrk(port, phase="ceiling", seconds=seconds, **ceiling_common)
        after = meter.sample()
        cpu_ms["ceiling"] = {
            part: round(seconds * 1000 / max(1, ceiling["requests"]), 3)
            for part, seconds in meter.spent(before, after).items()
        }
        for name, phase in phases.items():
            common = {
                "path": path,
                "secret": secret,
                "per_request": phase["per_request"],
                "connections": phase["connections"],
            }
            _wrk(port, phase=f"warm{name}", seconds=warmup, **common)
            before = meter.sample()
            measured[name] = _wrk(port, phase=name, seconds=seconds, **common)
            after = meter.sample()
            requests = max(1, measured[name]["requests"])
            cpu_ms[name] = {
                part: round(seconds * 1000 / requests, 3)
                for part, seconds in meter.spent(before, after).items()
            }
        # Requests still in flight when wrk stopped finish before the server is stopped.

    single, batch = measured["single"], measured["batch"]
    ceiling_rps = ceiling["requests"] / (ceiling["duration_us"] / 1e6)
    single_rps = single["requests"] / (single["duration_us"] / 1e6)
    batch_rps = batch["requests"] / (batch["duration_us"] / 1e6)
    batch_eps = batch_rps * BATCH_SIZE
    p99_ms = single["latency_p99_us"] / 1000

    result = Result(
        row="http",
        title="HTTP ingest",
        database=database,
        mode=mode,
        summary=(
            f"single: {single_rps:,.0f} req/s, p50 {single['latency_p50_us'] / 1000:.1f} ms, "
            f"p99 {p99_ms:.1f} ms; batches of {BATCH_SIZE}: {batch_eps:,.0f} events/s "
            f"({batch_rps:,.0f} req/s, p99 {batch['latency_p99_us'] / 1000:.0f} ms); "
            f"{seconds} s each, gunicorn {WORKERS} × {worker_class}"
            + (f" ({threads} threads)" if worker_class == "gthread" else "")
        ),
        details={
            "wrk": measured,
            "ceiling": ceiling,
            "worker_class": worker_class,
            "threads": threads,
            "cpu_ms_per_request": cpu_ms,
        },
    )
    single_cpu = cpu_ms["single"]
    cpu_per_request = single_cpu["site"] + single_cpu["postgresql"] + single_cpu["wrk"]
    cores = os.cpu_count() or 1
    result.notes.append(
        f"CPU per single-event request: {single_cpu['site']:.2f} ms in the site's gunicorn "
        f"workers, {single_cpu['postgresql']:.2f} ms in PostgreSQL's processes on the machine "
        f"({single_cpu['postgresql_own']:.2f} ms in the backends of the bench's database: the "
        f"machine-wide figure has other work in it on a shared machine, and loses a process "
        f"that exits), "
        f"{single_cpu['wrk']:.2f} ms in wrk; {cores} cores at {cpu_per_request:.2f} ms a "
        f"request serve at most "
        f"{cores * 1000 / cpu_per_request:,.0f} req/s, whatever the concurrency (a request "
        f"that does nothing costs the site {cpu_ms['ceiling']['site']:.2f} ms)"
    )
    batch_cpu = cpu_ms["batch"]
    batch_us = {
        part: batch_cpu[part] * 1000 / BATCH_SIZE for part in ("site", "postgresql_own", "wrk")
    }
    batch_per_event = sum(batch_us.values())
    result.notes.append(
        f"CPU per event in batches of {BATCH_SIZE}: {batch_us['site']:.0f} µs in the site's "
        f"gunicorn workers, {batch_us['postgresql_own']:.0f} µs in the bench database's "
        f"backends, {batch_us['wrk']:.0f} µs in wrk; {cores} cores at {batch_per_event:.0f} µs "
        f"an event record at most {cores * 1e6 / batch_per_event:,.0f} events/s"
    )
    result.notes.append(
        f"ceiling on this machine: the same gunicorn workers answer a request that does "
        f"nothing (the demo site's root redirect, full middleware, no database) at "
        f"{ceiling_rps:,.0f} req/s (p99 {ceiling['latency_p99_us'] / 1000:.1f} ms); a single-"
        # A machine loaded by others can leave the ceiling's phase without one answer.
        f"event request reaches {single_rps / ceiling_rps if ceiling_rps else 0:.0%} of it"
    )
    for name, numbers in measured.items():
        errors = sum(numbers[key] for key in _ERROR_KEYS)
        result.check(
            f"{name}: zero errors",
            errors == 0,
            f"{numbers['requests']:,} requests; socket errors, timeouts and non-2xx answers: "
            f"{errors}",
        )
        per_request = phases[name]["per_request"]
        rows, distinct, not_pending = _stored(name)
        answered = numbers["requests"] * per_request
        at_most = answered + phases[name]["connections"] * per_request
        result.check(
            f"{name}: every event stored once",
            answered <= rows <= at_most and rows == distinct and not_pending == 0,
            f"{answered:,} events answered 202, {rows:,} rows ({distinct:,} distinct IDs; "
            f"in-flight allowance {at_most - answered}), {not_pending} not pending",
        )
    result.goal(
        "single events req/s",
        f"≥ {GOAL_REQUESTS_PER_SECOND:,}",
        f"{single_rps:,.0f}",
        single_rps >= GOAL_REQUESTS_PER_SECOND,
    )
    result.goal("single events p99", f"< {GOAL_P99_MS:.0f} ms", f"{p99_ms:.1f} ms", p99_ms < 50)
    result.goal(
        "batch events/s",
        f"≥ {GOAL_BATCH_EVENTS_PER_SECOND:,}",
        f"{batch_eps:,.0f}",
        batch_eps >= GOAL_BATCH_EVENTS_PER_SECOND,
    )
    return result
