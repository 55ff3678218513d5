"""The soak: start everything on loopback, run three phases under load, check the books.

1. **faults** — steady ingestion through gunicorn for ``--seconds`` while two ``qcluster``
   processes dispatch through Redis on PostgreSQL, health checks run, and the sandbox answers
   with 500s, rate limits, dropped connections, latency and a few invalid batches; one
   destination's token is revoked a quarter of the way in and replaced halfway.
2. **kill** — under load, Meta slows down so batches are in flight, and one ``qcluster`` is
   killed with SIGKILL (its whole process group) and started again.
3. **database** — under load, every PostgreSQL backend of the soak database is terminated three
   times (``pg_terminate_backend``); nothing is restarted by hand.

After each phase Meta recovers, the queue drains (bounded), and the books are checked
(:mod:`soak.accounting`). The results go to ``<workdir>/results.json``; the exit status says
whether every check held.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import string
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soak.load import EventMaker, LoadReport, SteadyLoad, Target
from soak.processes import (
    PYTHON,
    Service,
    free_port,
    manage,
    port_answers,
    run_manage,
    wait_until,
)
from soak.sandbox_control import SandboxControl

NORMAL_FAULTS = {
    "latency_ms": 20,
    "failure_rate": 0.05,
    "rate_limit_every": 200,
    "rate_limit_minutes": 0,
    "drop_rate": 0.01,
}
NO_FAULTS = {"latency_ms": 0, "failure_rate": 0.0, "rate_limit_every": 0, "drop_rate": 0.0}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", "120")),
        help="length of the faults phase; the kill and database phases take a quarter each",
    )
    parser.add_argument("--rate", type=float, default=40.0, help="ingest requests per second")
    parser.add_argument("--drain-seconds", type=float, default=180.0, help="most a drain waits")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/soak"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6379/8")
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp") / f"capi-soak-{datetime.now(UTC):%Y%m%d-%H%M%S}",  # noqa: S108
        help="logs and results.json",
    )
    return parser.parse_args(argv)


def random_token() -> str:
    """A well-formed fake CAPI token: EAA and 187 letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return "EAA" + "".join(secrets.choice(alphabet) for _ in range(187))


def prepare_database(database_url: str) -> None:
    """Drop and create the soak's own database (never another one)."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    if name in ("postgres", "template0", "template1") or not name.isidentifier():
        raise SystemExit(f"refusing to recreate database {name!r}")
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def flush_redis(redis_url: str) -> None:
    """Empty the soak's own Redis database number (broker queue and cache)."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()


class Soak:
    """The services, the destinations, the timeline and the results of one run."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.workdir: Path = options.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sandbox_port = free_port()
        self.web_port = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "soak.settings",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(40),
            "FERNET_KEYS": secrets.token_urlsafe(32),
            "DATABASE_URL": options.database_url,
            "REDIS_URL": options.redis_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CAPI_GRAPH_API_BASE_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "CAPI_LOG_LEVEL": "WARNING",
            "Q_WORKERS": "2",
            "PYTHONUNBUFFERED": "1",
            "PYTHONWARNINGS": "ignore",
        }
        self.sandbox = SandboxControl(f"http://127.0.0.1:{self.sandbox_port}")
        self.services: dict[str, Service] = {}
        self.targets: list[Target] = []
        self.tokens: dict[int, str] = {}
        self.old_tokens: list[str] = []
        self.maker = EventMaker(datetime.now(UTC).strftime("%H%M%S"), seed=8)
        self.results: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat()}
        # (start, end) in Unix seconds during which a second copy at Meta is excused.
        self.excused_windows: list[tuple[float, float]] = []
        self.timeline: list[tuple[float, str]] = []
        self._health_stop = threading.Event()

    # --- services --------------------------------------------------------------------------

    def service(self, name: str, command: list[str]) -> Service:
        service = Service(name, command, self.workdir / f"{name}.log", self.env)
        self.services[name] = service
        return service.start()

    def note(self, text: str) -> None:
        self.timeline.append((time.time(), text))
        print(f"[soak {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)

    def start_services(self) -> None:
        faults = NORMAL_FAULTS
        self.service(
            "sandbox",
            manage(
                "capi_sandbox",
                "--port",
                str(self.sandbox_port),
                "--latency-ms",
                str(faults["latency_ms"]),
                "--failure-rate",
                str(faults["failure_rate"]),
                "--rate-limit-every",
                str(faults["rate_limit_every"]),
                "--drop-rate",
                str(faults["drop_rate"]),
                "--seed",
                "8",
            ),
        )
        if not wait_until(lambda: port_answers(self.sandbox_port), timeout=30):
            raise SystemExit("the sandbox did not start; see sandbox.log")
        self.sandbox.set_faults(rate_limit_minutes=0)
        run_manage(self.env, "migrate", "--noinput")
        self.note("database migrated")

    def start_workers(self) -> None:
        self.service(
            "gunicorn",
            [
                PYTHON,
                "-m",
                "gunicorn",
                "project.wsgi:application",
                "--workers",
                "2",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--timeout",
                "60",
            ],
        )
        for number in (1, 2):
            self.service(f"qcluster-{number}", manage("qcluster"))
        if not wait_until(lambda: port_answers(self.web_port), timeout=60):
            raise SystemExit("gunicorn did not start; see gunicorn.log")
        self.note("gunicorn (2 workers) and 2 qcluster processes started")

    def stop_services(self) -> None:
        self._health_stop.set()
        for name in ("gunicorn", "qcluster-1", "qcluster-2", "sandbox"):
            if name in self.services:
                self.services[name].stop()

    # --- the data ----------------------------------------------------------------------------

    def create_destinations(self) -> None:
        """Two clients; live, consent-requiring, test-mode and disabled destinations."""
        from capi_destinations import destinations
        from capi_destinations.models import ConsentPolicy, Tenant

        plan = [("live", {})] * 8 + [
            ("consent", {"consent_policy": ConsentPolicy.REQUIRE_CONSENT}),
            ("test", {"test_event_code": "TEST4242"}),
            ("disabled", {"enabled": False}),
        ]
        tenants = [
            Tenant.objects.create(name=f"Soak client {number}", slug=f"soak-{number}")
            for number in (1, 2)
        ]
        for number, (kind, extra) in enumerate(plan):
            pixel_id = str(7_000_000_000_000_000 + number)
            token = random_token()
            self.sandbox.register_pixel(pixel_id, f"Soak pixel {number}", [token])
            destination, secret = destinations.create_destination(
                tenants[number % 2],
                actor=None,
                name=f"Soak {kind} {number}",
                pixel_id=pixel_id,
                access_token=token,
                **extra,
            )
            self.tokens[destination.pk] = token
            self.targets.append(Target(destination.pk, destination.ingest_key, secret, kind))
        self.note(f"{len(self.targets)} destinations created in 2 tenants")

    @property
    def destination_ids(self) -> list[int]:
        return [target.destination_id for target in self.targets]

    # --- background health checks -----------------------------------------------------------

    def start_health_checks(self, every: float = 20.0) -> None:
        """``capi_healthcheck`` every ``every`` seconds, besides the cluster's schedule."""

        def loop() -> None:
            log = (self.workdir / "healthcheck.log").open("a")
            while not self._health_stop.wait(every):
                try:
                    # It exits non-zero while a destination is unhealthy (the disabled one is).
                    log.write(run_manage(self.env, "capi_healthcheck", timeout=120, check=False))
                except Exception as error:
                    log.write(f"health check run failed: {error}\n")
                log.flush()

        threading.Thread(target=loop, daemon=True, name="health-checks").start()

    # --- phases ------------------------------------------------------------------------------

    def load(self, seconds: float) -> SteadyLoad:
        return SteadyLoad(
            port=self.web_port,
            targets=self.targets,
            rate=self.options.rate,
            seconds=seconds,
            maker=self.maker,
        ).start()

    def at(self, begin: float, offset: float) -> None:
        """Wait until ``offset`` seconds after ``begin`` (a monotonic time)."""
        delay = begin + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def phase_faults(self) -> dict[str, Any]:
        seconds = self.options.seconds
        revoked = next(target for target in self.targets if target.kind == "live")
        begin = time.monotonic()
        since = datetime.now(UTC)
        running = self.load(seconds)
        self.note(f"phase 1: faults {NORMAL_FAULTS}, load {self.options.rate}/s for {seconds}s")
        self.at(begin, seconds * 0.15)
        self.sandbox.answer_error(100, times=3)
        self.note("3 batches answered as invalid (code 100): the worker bisects them")
        self.at(begin, seconds * 0.25)
        revoked_since = datetime.now(UTC)
        self.old_tokens.append(self.tokens[revoked.destination_id])
        self.sandbox.revoke(self.tokens[revoked.destination_id])
        self.note(f"token of destination {revoked.destination_id} revoked at Meta")
        self.at(begin, seconds * 0.5)
        blocked = self.blocked_reason(revoked.destination_id)
        restored_at = datetime.now(UTC)
        self.restore_token(revoked.destination_id)
        self.note(
            f"token of destination {revoked.destination_id} replaced (it was blocked: "
            f"{bool(blocked)})"
        )
        report = running.join()
        result = self.finish_phase(
            "faults", report, since, extra={"revoked_was_blocked": bool(blocked)}
        )
        from capi_destinations.models import Event

        held = Event.objects.filter(
            destination_id=revoked.destination_id,
            created_at__gte=revoked_since,
            created_at__lt=restored_at,
        )
        result["revoked_token"] = {
            "blocked_reason": blocked,
            "events_recorded_while_revoked": held.count(),
            "of_which_delivered_after_the_new_token": held.filter(status="delivered").count(),
            "of_which_pending": held.filter(status="pending").count(),
        }
        if not blocked or held.filter(status="pending").exists():
            result["problems"].append("the revoked destination was not blocked, or never resumed")
        return result

    def blocked_reason(self, destination_id: int) -> str:
        from capi_destinations.models import Destination

        return Destination.objects.get(pk=destination_id).blocked_reason

    def restore_token(self, destination_id: int) -> None:
        """The marketer pastes a new token: Meta knows it, the app saves it."""
        from capi_destinations import destinations
        from capi_destinations.models import Destination

        destination = Destination.objects.get(pk=destination_id)
        token = random_token()
        self.sandbox.register_pixel(destination.pixel_id, "Soak pixel (new token)", [token])
        destinations.update_destination(destination, actor=None, access_token=token)
        self.tokens[destination_id] = token

    def phase_kill(self) -> dict[str, Any]:
        from capi_destinations.models import QueuedEvent

        seconds = max(self.options.seconds / 4, 30)
        begin = time.monotonic()
        since = datetime.now(UTC)
        self.sandbox.set_faults(**NORMAL_FAULTS)
        running = self.load(seconds)
        self.note(f"phase 2: kill a qcluster mid-batch, load for {seconds:.0f}s")
        self.at(begin, seconds * 0.3)
        # Meta slows down so requests stay in flight; with three of the four workers holding a
        # lease, each cluster has at least one worker in the middle of a batch.
        self.sandbox.set_faults(latency_ms=5000)
        sending = QueuedEvent.objects.filter(lease_token__isnull=False)
        wait_until(
            lambda: sending.order_by().values("lease_token").distinct().count() >= 3,
            timeout=30,
            interval=0.1,
        )
        in_flight = set(sending.values_list("pk", "lease_token"))
        victim = self.services["qcluster-2"]
        killed_at = time.time()
        pids = victim.kill_group()
        # The sandbox records a request when its latency ends, up to 5 s after the kill.
        self.excused_windows.append((killed_at - 10, killed_at + 10))
        self.note(f"SIGKILL to qcluster-2 (pids {pids}) with {len(in_flight)} events in flight")
        self.sandbox.set_faults(latency_ms=NORMAL_FAULTS["latency_ms"])
        # The survivor's requests finish within the latency; what is still leased afterwards
        # belonged to the killed worker and waits for its lease to run out.
        time.sleep(7)
        orphaned = QueuedEvent.objects.filter(
            pk__in=[pk for pk, _ in in_flight],
            lease_token__in=[token for _, token in in_flight],
        ).count()
        victim.start()
        self.note(f"qcluster-2 started again; {orphaned} events left leased by the killed worker")
        report = running.join()
        leases = len({token for _, token in in_flight})
        result = self.finish_phase(
            "kill",
            report,
            since,
            extra={
                "killed_pids": pids,
                "events_in_flight_at_kill": len(in_flight),
                "leases_in_flight_at_kill": leases,
                "events_orphaned_by_the_kill": orphaned,
            },
        )
        if not orphaned:
            result["problems"].append("the kill hit no batch in flight: nothing was proven")
        return result

    def terminate_backends(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(cursor.fetchone()[0])

    def phase_database(self) -> dict[str, Any]:
        from capi_destinations.models import DeliveryAttempt, Event

        seconds = max(self.options.seconds / 4, 30)
        begin = time.monotonic()
        since = datetime.now(UTC)
        cluster_pids = {name: self.services[name].pid for name in ("qcluster-1", "qcluster-2")}
        self.sandbox.set_faults(**{**NORMAL_FAULTS, "latency_ms": 200})
        running = self.load(seconds)
        self.note(f"phase 3: terminate database backends under load for {seconds:.0f}s")
        terminations = []
        for offset in (0.25, 0.45, 0.65):
            self.at(begin, seconds * offset)
            count = self.terminate_backends()
            moment = time.time()
            terminations.append({"at": moment, "backends": count})
            self.excused_windows.append((moment - 3, moment + 3))
            self.note(f"pg_terminate_backend: {count} backends of the soak database terminated")
        last = datetime.fromtimestamp(terminations[-1]["at"], UTC)
        report = running.join()
        result = self.finish_phase("database", report, since, extra={"terminations": terminations})
        after = Event.objects.filter(destination_id__in=self.destination_ids, created_at__gt=last)
        result["recovery"] = {
            "qclusters_never_restarted": all(
                self.services[name].pid == pid and self.services[name].alive()
                for name, pid in cluster_pids.items()
            ),
            "gunicorn_alive": self.services["gunicorn"].alive(),
            "events_recorded_after_last_termination": after.count(),
            "of_which_delivered": after.filter(status="delivered").count(),
            "requests_to_meta_after_last_termination": DeliveryAttempt.objects.filter(
                started_at__gt=last
            ).count(),
            "ingest_5xx_answers": report.http_statuses.get(500, 0)
            + report.http_statuses.get(502, 0)
            + report.http_statuses.get(503, 0),
        }
        recovery = result["recovery"]
        if not recovery["qclusters_never_restarted"] or not recovery["gunicorn_alive"]:
            result["problems"].append("a process died after its database connection was cut")
        if (
            recovery["of_which_delivered"] == 0
            or recovery["requests_to_meta_after_last_termination"] == 0
        ):
            result["problems"].append("nothing was delivered after the last termination")
        return result

    # --- after each phase ----------------------------------------------------------------------

    def drain(self) -> dict[str, Any]:
        """Meta recovers; wait (bounded) until the sendable destinations' queues are empty."""
        from capi_destinations.models import Event, EventStatus

        self.sandbox.set_faults(**NO_FAULTS)
        sendable = [target.destination_id for target in self.targets if target.kind != "disabled"]
        waiting = Event.objects.filter(destination_id__in=sendable, status=EventStatus.PENDING)
        started = time.monotonic()
        emptied = wait_until(
            lambda: not waiting.exists(), timeout=self.options.drain_seconds, interval=2
        )
        seconds = round(time.monotonic() - started, 1)
        self.note(f"drained in {seconds}s" if emptied else f"{waiting.count()} still waiting")
        return {"emptied": emptied, "seconds": seconds, "left_waiting": waiting.count()}

    def finish_phase(
        self, name: str, report: LoadReport, since: datetime, *, extra: dict[str, Any]
    ) -> dict[str, Any]:
        from soak import accounting

        self.note(f"phase {name}: load finished, {report.summary()['events_sent']} events sent")
        drain = self.drain()
        ids = self.destination_ids
        books = accounting.event_books(ids)
        received, first_at = self.sandbox.traffic()
        sandbox = accounting.compare_with_sandbox(
            accounting.delivered_keys(ids), received, first_at, self.excused_windows
        )
        stored = accounting.stored_keys(ids)
        client = report.summary()
        problems = books.problems + sandbox["problems"]
        lost_answers = report.accepted - stored
        if lost_answers:
            problems.append(f"{len(lost_answers)} events answered 202 are not stored")
        if report.unanswered:
            problems.append(f"{len(report.unanswered)} new events never got an answer")
        disabled = [target.destination_id for target in self.targets if target.kind == "disabled"]
        pending_disabled = accounting.event_books(disabled).by_status.get("pending", 0)
        result = {
            "load": client,
            "drain": drain,
            "pending_on_the_disabled_destination": pending_disabled,
            "books": books.as_dict(),
            "sandbox": sandbox,
            "delivery_latency": accounting.delivery_latency(ids, since),
            "attempt_outcomes": accounting.attempt_outcomes(ids),
            "problems": problems,
            **extra,
        }
        self.note(f"phase {name}: books {books.as_dict()} problems {problems}")
        return result

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> int:
        prepare_database(self.options.database_url)
        flush_redis(self.options.redis_url)
        self.note(f"workdir {self.workdir}")
        try:
            self.start_services()
            os.environ.update(self.env)
            import django

            django.setup()
            self.create_destinations()
            self.start_workers()
            self.start_health_checks()
            phases = {
                "faults": self.phase_faults(),
                "kill": self.phase_kill(),
                "database": self.phase_database(),
            }
            self.results.update(self.summarise(phases))
        finally:
            self.stop_services()
        path = self.workdir / "results.json"
        path.write_text(json.dumps(self.results, indent=2, default=str))
        failed = [name for name, phase in phases.items() if phase["problems"]]
        self.note(f"results in {path}; " + (f"FAILED: {failed}" if failed else "every check held"))
        return 1 if failed else 0

    def tokens_in_logs(self) -> dict[str, int]:
        """How often any token (or its first 20 characters) appears in each log of the run."""
        needles = [*self.tokens.values(), *self.old_tokens]
        needles += [token[:20] for token in needles]
        found = {}
        for path in sorted(self.workdir.glob("*.log")):
            text = path.read_text(errors="replace")
            count = sum(text.count(needle) for needle in needles)
            if count:
                found[path.name] = count
        return found

    def summarise(self, phases: dict[str, Any]) -> dict[str, Any]:
        from django.db.models import Count
        from django_q.models import Task

        from capi_destinations.models import HealthCheck

        logs = {}
        for name, service in self.services.items():
            text = service.log_path.read_text(errors="replace") if service.log_path.exists() else ""
            logs[name] = {
                "tracebacks": text.count("Traceback"),
                "timeouts": text.lower().count("timed out") + text.count("timeout"),
                "starts": service.starts,
            }
        secrets_seen = self.tokens_in_logs()
        if secrets_seen:
            phases["database"]["problems"].append(f"tokens found in logs: {secrets_seen}")
        return {
            "finished_at": datetime.now(UTC).isoformat(),
            "tokens_found_in_logs": secrets_seen,
            "options": {key: str(value) for key, value in vars(self.options).items()},
            "phases": phases,
            "sandbox_stats": {
                key: value
                for key, value in self.sandbox.stats().items()
                if key in ("requests", "events", "test_events", "errors")
            },
            "health_checks": dict(
                HealthCheck.objects.values_list("status").annotate(count=Count("pk")).order_by()
            ),
            "task_failures": Task.objects.filter(success=False).count(),
            "tasks_done": Task.objects.count(),
            "logs": logs,
            "timeline": [
                (datetime.fromtimestamp(at, UTC).isoformat(), text) for at, text in self.timeline
            ],
        }


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every check held."""
    return Soak(parse_arguments(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
