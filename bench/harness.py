"""What every benchmark shares: alternating timed rounds, medians, goals, checks, results.

A benchmark module exposes ``run(mode, database) -> Result``. It times its sides with
:func:`alternate` (same inputs, rounds alternating the order, medians and the ratio reported,
because these machines are shared and noisy), checks that the output is right with
:meth:`Result.check` (a fast wrong answer cannot pass), and states its goals with
:meth:`Result.goal`. ``bench/__main__.py`` runs each module in a process of its own and
writes the table.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: ``smoke``: seconds, only proves the harness runs; ``quick``: the whole table in under two
#: minutes, smaller sizes; ``full``: the sizes the goals are stated for.
MODES = ("smoke", "quick", "full")


def sized(mode: str, *, full: int, quick: int, smoke: int) -> int:
    """The size of an input for ``mode``."""
    return {"full": full, "quick": quick, "smoke": smoke}[mode]


# --- timing --------------------------------------------------------------------------------


@dataclass
class Timing:
    """The rounds of one side: seconds and units of work (records, events, …) per round."""

    name: str
    seconds: list[float] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    # CPU seconds of this process in each round: what a neighbour's load cannot inflate by
    # taking the CPU away (it still can through shared caches).
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        """Units per second of each round."""
        return [units / seconds for units, seconds in zip(self.units, self.seconds, strict=True)]

    @property
    def cpu_rates(self) -> list[float]:
        """Units per CPU second of each round."""
        return [
            units / seconds for units, seconds in zip(self.units, self.cpu_seconds, strict=True)
        ]

    @property
    def median_rate(self) -> float:
        """The median of the per-round rates: robust to one round slowed by a neighbour."""
        return statistics.median(self.rates)

    @property
    def median_cpu_rate(self) -> float:
        """The median of the per-round rates per CPU second."""
        return statistics.median(self.cpu_rates)

    @property
    def median_seconds(self) -> float:
        """The median duration of one round."""
        return statistics.median(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        """Rounds and medians, for the JSON result."""
        return {
            "seconds": [round(value, 4) for value in self.seconds],
            "cpu_seconds": [round(value, 4) for value in self.cpu_seconds],
            "units": self.units,
            "rates": [round(value, 1) for value in self.rates],
            "median_rate": round(self.median_rate, 1),
            "median_cpu_rate": round(self.median_cpu_rate, 1),
        }


def alternate(
    sides: Mapping[str, Callable[[int], int | tuple[int, float, float]]], *, rounds: int
) -> dict[str, Timing]:
    """Run each side once per round, in alternating order, and time it.

    Each side is called with the round number and returns how many units it processed, or
    ``(units, seconds, cpu_seconds)`` when it timed itself (to leave its own checking off the
    clock).
    Round 0 runs the sides in the given order, round 1 in reverse, and so on, so neither side
    always runs first (warm caches, CPU boost, a neighbour's burst). The garbage collector
    runs before each call so one side's garbage is not collected on the other's clock.
    """
    timings = {name: Timing(name) for name in sides}
    names = list(sides)
    for round_number in range(rounds):
        order = names if round_number % 2 == 0 else list(reversed(names))
        for name in order:
            gc.collect()
            started, started_cpu = time.perf_counter(), time.process_time()
            outcome = sides[name](round_number)
            elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            units, seconds, cpu_seconds = (
                outcome if isinstance(outcome, tuple) else (outcome, elapsed, elapsed_cpu)
            )
            timings[name].seconds.append(seconds)
            timings[name].cpu_seconds.append(max(cpu_seconds, 1e-9))
            timings[name].units.append(units)
    return timings


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` (0..1) percentile of ``values`` by the nearest-rank method."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's resident set size now, in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


# --- results -------------------------------------------------------------------------------


@dataclass
class Goal:
    """One goal of the issue's table, with what was measured against it."""

    name: str
    target: str
    measured: str
    met: bool


@dataclass
class Check:
    """One correctness check: the output was right, or the benchmark does not count."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Result:
    """The outcome of one benchmark row on one database."""

    row: str
    title: str
    database: str
    mode: str
    summary: str = ""
    goals: list[Goal] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def goal(self, name: str, target: str, measured: str, met: bool) -> None:
        """Record a goal of the issue and whether the measurement meets it."""
        self.goals.append(Goal(name, target, measured, bool(met)))

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record a correctness check (same hashes, each event once, …)."""
        self.checks.append(Check(name, bool(ok), detail))

    @property
    def correct(self) -> bool:
        """Every check passed, and there was at least one."""
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def goals_met(self) -> bool:
        """Every goal met (True when the row states none)."""
        return all(goal.met for goal in self.goals)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as passed from a benchmark's process to the runner."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """The inverse of :meth:`to_dict`."""
        values = dict(data)
        values["goals"] = [Goal(**goal) for goal in values.get("goals", [])]
        values["checks"] = [Check(**check) for check in values.get("checks", [])]
        return cls(**values)


def rate_text(rate: float, unit: str) -> str:
    """``23,456 events/s``."""
    return f"{rate:,.0f} {unit}/s"


# --- the machine ---------------------------------------------------------------------------


def machine_info(postgres_url: str | None = None) -> dict[str, str]:
    """Cores, memory, CPU model, OS, Python, Django and database versions, git commit."""
    info: dict[str, str] = {
        "cores": str(os.cpu_count() or "?"),
        "cpu": _cpu_model(),
        "memory": _memory_total(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    try:
        import django

        info["django"] = django.get_version()
    except ImportError:  # pragma: no cover - Django is a dependency
        pass
    import sqlite3

    info["sqlite"] = sqlite3.sqlite_version
    if postgres_url:
        info["postgresql"] = postgres_version(postgres_url) or "not reachable"
    info["load_average"] = " ".join(f"{value:.2f}" for value in os.getloadavg())
    info["commit"] = _git_commit()
    return info


def postgres_version(url: str) -> str | None:
    """The server version string (``15.20``) of the PostgreSQL at ``url``, or None."""
    try:
        import psycopg

        with psycopg.connect(_maintenance_url(url), connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except Exception:
        return None
    return str(row[0]).split()[0] if row else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_total() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _git_commit() -> str:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    commit = completed.stdout.strip() or "?"
    return commit + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


# --- databases -----------------------------------------------------------------------------

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench"


def postgres_url() -> str:
    """The benchmark's own PostgreSQL database (``BENCH_POSTGRES_URL``)."""
    return os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def sqlite_path() -> Path:
    """The benchmark's SQLite file (``BENCH_SQLITE_PATH``), in the temp directory by default."""
    default = Path(os.environ.get("TMPDIR", "/tmp")) / f"capi-bench-{os.getuid()}.sqlite3"
    return Path(os.environ.get("BENCH_SQLITE_PATH", str(default)))


def database_url(database: str) -> str:
    """The ``DATABASE_URL`` of ``postgresql`` or ``sqlite`` for the benchmark."""
    if database == "postgresql":
        return postgres_url()
    if database == "sqlite":
        return f"sqlite:///{sqlite_path()}"
    raise ValueError(f"unknown database {database!r}")


def _maintenance_url(url: str) -> str:
    # The server's own "postgres" database, to create or drop the benchmark's.
    head, _, _name = url.rpartition("/")
    return f"{head}/postgres"


def recreate_postgres_database(url: str) -> None:
    """Drop and create the benchmark's PostgreSQL database, so its schema is the current one.

    While nothing is released the one migration is regenerated after model changes, so an
    old database could claim to be migrated with another schema; a fresh one cannot.
    """
    import psycopg
    from psycopg import sql

    name = url.rpartition("/")[2].split("?")[0]
    with psycopg.connect(_maintenance_url(url), autocommit=True, connect_timeout=5) as conn:
        identifier = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(identifier))


def migrate(database: str, **extra: str) -> str | None:
    """Django's migrate on the benchmark's ``database`` (``extra``: environment, such as another
    ``DATABASE_URL``), in a process of its own; why it failed, or None."""
    completed = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "--verbosity", "0"],
        cwd=REPO,
        env=bench_environment(database, **extra),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        return "migrate failed: " + completed.stderr.strip()[-2000:]
    return None


def fresh_postgres_database(url: str, *, setting: str) -> None:
    """Drop, create and migrate the PostgreSQL database at ``url`` for a tool run on its own
    (``bench.floor``, ``bench.ingest_statement``); exits saying why when it cannot, naming the
    environment ``setting`` that chooses the database."""
    if postgres_version(url) is None:
        sys.exit(f"PostgreSQL is not reachable at {url} (set {setting})")
    recreate_postgres_database(url)
    problem = migrate("postgresql", DATABASE_URL=url)
    if problem is not None:
        sys.exit(problem)


def run_in_fresh_process(module: str, database: str, *args: str) -> dict[str, Any]:
    """Run ``python -m <module> <args>`` on ``database`` and return the JSON its last line prints.

    For rows that measure a whole process (peak RSS): a fresh interpreter per run, so one run's
    memory never counts against the next.
    """
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=bench_environment(database),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def bench_environment(database: str, **extra: str) -> dict[str, str]:
    """Environment for a benchmark process running the demo site's settings on ``database``.

    The demo site's production settings (``DEBUG`` off) are what is measured; the keys here are
    benchmark-only values, never used anywhere else.
    """
    environment = dict(os.environ)
    environment.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": database_url(database),
            "BENCH_DATABASE": database,
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-secret-key-not-for-any-real-site-0123456789",
            "FERNET_KEYS": "bench-only-fernet-key-not-for-any-real-site",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "PYTHONPATH": str(REPO),
        }
    )
    environment.update(extra)
    return environment


def setup_django() -> None:
    """``django.setup()`` for a benchmark process started with :func:`bench_environment`."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()


def empty_tables() -> None:
    """Delete every row of the app's and django-q2's tables (schema and users kept)."""
    from django.apps import apps
    from django.core.management.color import no_style
    from django.db import connection

    models = [
        model
        for app_label in ("capi_destinations", "django_q")
        for model in apps.get_app_config(app_label).get_models(include_auto_created=True)
    ]
    tables = [model._meta.db_table for model in models]
    statements = connection.ops.sql_flush(
        no_style(), tables, reset_sequences=True, allow_cascade=True
    )
    connection.ops.execute_sql_flush(statements)


def analyze(*, vacuum: bool = False) -> None:
    """Refresh the planner's statistics after a bulk load (PostgreSQL; SQLite's ANALYZE).

    ``vacuum`` also clears the dead rows bulk updates leave, as autovacuum does on a database
    in steady state (PostgreSQL only).
    """
    from django.db import connection

    with connection.cursor() as cursor:
        full = vacuum and connection.vendor == "postgresql"
        cursor.execute("VACUUM ANALYZE" if full else "ANALYZE")


def backend_cpu_seconds() -> float:
    """CPU seconds the PostgreSQL backend serving this process's connection has used (0 on
    SQLite, or when its ``/proc`` entry is not readable: another host, another user).

    What PostgreSQL spends on the worker's statements, apart from the other work sharing the
    machine (read from ``/proc/<pid>/stat``: user plus system time, in clock ticks).
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return process_cpu_seconds(pid)


class BackendsCpu:
    """CPU seconds of every PostgreSQL backend of the benchmark's database since ``start``,
    those the worker opens and closes meanwhile included (``bench.backend_sampler``, a process
    of its own, so that its sampling is not counted on the worker's clock). Started once,
    before the timed rounds (a process start is not cheap); ``seconds`` is a pipe round trip.

    ``backend_cpu_seconds`` reads the worker's own connection only; dispatch also writes on a
    second connection (its recorder thread), closed at the end of each pass.
    """

    def __init__(self) -> None:
        self._sampler: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self._sampler = subprocess.Popen(
            [sys.executable, "-m", "bench.backend_sampler", postgres_url()],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._sampler.stdout is not None
        self._sampler.stdout.readline()  # "ready": the first sample is taken

    def seconds(self) -> float:
        """CPU seconds used since ``start`` (0 when not started: SQLite)."""
        sampler = self._sampler
        if sampler is None:
            return 0.0
        assert sampler.stdin is not None
        assert sampler.stdout is not None
        sampler.stdin.write("\n")
        sampler.stdin.flush()
        return float(json.loads(sampler.stdout.readline())["seconds"])

    def stop(self) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is None:
            return
        assert sampler.stdin is not None
        sampler.stdin.close()
        sampler.wait(timeout=30)


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user plus system, every thread) process ``pid`` has used; 0 when its
    ``/proc`` entry is not readable (another host, another user)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # utime and stime are the 14th and 15th fields; the text after ")" starts at the 3rd.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_json(path: str | None, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` to ``path``, or to stdout when ``path`` is ``-`` or empty."""
    text = json.dumps(payload, indent=2, default=str)
    if not path or path == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(path).write_text(text + "\n")
