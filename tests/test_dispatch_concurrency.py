"""Exactly-once delivery with several workers, faults injected by the sandbox, and dead workers.

Threads run on every database. Separate processes need a database they can all open, so they
run on PostgreSQL (and on SQLite when ``CAPI_TEST_SQLITE`` puts the test database in a file);
the suite's default in-memory SQLite database lives inside the test process only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from capi_destinations import clock as app_clock
from capi_destinations import dispatch
from capi_destinations.models import Destination, Event, EventStatus, QueuedEvent
from capi_destinations.sandbox import Sandbox
from tests.conftest import (
    close_thread_connection,
    queue_events,
    server_event,
    terminate_backend,
)

REPO = Path(__file__).resolve().parents[1]
FAULTS = {"failure_rate": 0.1, "drop_rate": 0.05, "rate_limit_every": 9, "latency_ms": 5, "seed": 7}


def wait_until(condition: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` seconds)."""
    waiter = threading.Event()
    deadline = timezone.now() + timedelta(seconds=timeout)
    while not condition():
        assert timezone.now() < deadline, "condition not reached in time"
        waiter.wait(0.02)


def seed_events(
    destinations: list[Destination], per_destination: int, *, bad_every: int = 0
) -> set[str]:
    """Pending due events; every ``bad_every``-th carries an unhashed email. Returns bad ids."""
    now = app_clock.now()
    rows, bad = [], set()
    for destination in destinations:
        for index in range(per_destination):
            event_id = f"d{destination.pk}-e{index}"
            payload = server_event(event_id, event_time=now)
            if bad_every and index % bad_every == bad_every - 1:
                payload["user_data"]["em"] = ["plain@example.com"]
                bad.add(event_id)
            rows.append(
                Event(
                    destination=destination,
                    event_name="Purchase",
                    event_id=event_id,
                    event_time=now,
                    action_source="website",
                    payload=payload,
                )
            )
    queue_events(Event.objects.bulk_create(rows, batch_size=500), due_at=now)
    return bad


def drain(sandbox: Sandbox) -> None:
    """Faults off, a day later (every retry and pause is due): dispatch until nothing is left."""
    sandbox.set_faults(failure_rate=0.0, drop_rate=0.0, rate_limit_every=0, latency_ms=0)
    app_clock.freeze(timezone.now() + timedelta(days=1))
    for _ in range(10):
        if dispatch.dispatch_pending().claimed == 0:
            return


def assert_every_event_settled_with_a_reason() -> None:
    """Delivered, failed or waiting; anything not delivered says why (or waits on a pause)."""
    paused = set(
        Destination.objects.filter(paused_until__gt=timezone.now()).values_list("pk", flat=True)
    )
    for status, reason, destination_id in Event.objects.values_list(
        "status", "status_reason", "destination_id"
    ):
        assert status in (EventStatus.DELIVERED, EventStatus.FAILED, EventStatus.PENDING)
        if status == EventStatus.FAILED:
            assert reason.startswith("Meta rejected this event")
        if status == EventStatus.PENDING and not reason:
            # Never tried yet: its destination was paused by a rate limit before its turn.
            assert destination_id in paused


def assert_exactly_once(sandbox: Sandbox, bad: set[str]) -> None:
    delivered = set(
        Event.objects.filter(status=EventStatus.DELIVERED).values_list("event_id", flat=True)
    )
    failed = set(Event.objects.filter(status=EventStatus.FAILED).values_list("event_id", flat=True))
    assert failed == bad
    assert delivered | failed == set(Event.objects.values_list("event_id", flat=True))
    received = [record["event_id"] for record in sandbox.events()]
    assert len(received) == len(set(received)), "an event reached Meta twice"
    assert set(received) == delivered
    assert sandbox.stats()["duplicates"] == []


@pytest.fixture
def unfrozen_clock() -> Iterator[Any]:
    """Real time while workers run (subprocesses cannot share a frozen clock)."""
    app_clock.unfreeze()
    yield app_clock
    app_clock.unfreeze()


@pytest.fixture
def destinations(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> list[Destination]:
    return [make_destination() for _ in range(8)]


# --- threads -----------------------------------------------------------------------------------


def run_in_threads(count: int, target: Callable[[], Any]) -> list[Any]:
    results: list[Any] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(target())
        except BaseException as error:  # reported by the test thread
            errors.append(error)
        finally:
            close_thread_connection()

    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_threads_deliver_every_event_exactly_once_despite_faults(
    unfrozen_clock: Any, use_sandbox: Sandbox, destinations: list[Destination], settings: Any
) -> None:
    # Small claims, so every thread gets a share of the work.
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "BATCH_SIZE": 100}
    bad = seed_events(destinations, 250, bad_every=120)
    use_sandbox.set_faults(**FAULTS)

    reports = run_in_threads(4, dispatch.dispatch_pending)

    assert sum(1 for report in reports if report.claimed) >= 2, "the threads did not share"
    assert_every_event_settled_with_a_reason()
    delivered = set(
        Event.objects.filter(status=EventStatus.DELIVERED).values_list("event_id", flat=True)
    )
    received = [record["event_id"] for record in use_sandbox.events()]
    assert len(received) == len(set(received))
    assert set(received) == delivered

    drain(use_sandbox)
    assert_exactly_once(use_sandbox, bad)


@pytest.mark.django_db(transaction=True)
def test_of_workers_running_at_once_one_sends_a_blocked_destinations_canary(
    unfrozen_clock: Any, use_sandbox: Sandbox, destinations: list[Destination]
) -> None:
    """A canary is one of the destination's own events, and one at a time (compare-and-set)."""
    destination = destinations[0]
    seed_events([destination], 5)
    now = app_clock.now()
    Destination.objects.filter(pk=destination.pk).update(
        blocked_reason="Meta refused the access token.",
        blocked_at=now - timedelta(minutes=5),
        canary_due_at=now,
    )
    use_sandbox.answer_error(190, message="Error validating access token", times=50, method="POST")
    # Meta answers slowly: the first canary is still in flight while the other workers look.
    use_sandbox.set_faults(latency_ms=300)

    run_in_threads(4, lambda: dispatch.dispatch_pending(destination.pk))

    posts = [request for request in use_sandbox.requests() if request["method"] == "POST"]
    assert [request["event_count"] for request in posts] == [1]
    assert set(Event.objects.values_list("status", "attempts")) == {(EventStatus.PENDING, 0)}
    assert Destination.objects.get(pk=destination.pk).is_blocked


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_lease_ran_out_overwrites_nothing(
    clock: Any, use_sandbox: Sandbox, destination: Destination
) -> None:
    seed_events([destination], 5)
    # The first worker's request gets a 500, but only after the second worker has taken the
    # events over and delivered them.
    use_sandbox.set_faults(latency_ms=600)
    use_sandbox.answer_next(status=500, error={"message": "boom", "code": 2, "is_transient": True})

    slow_reports: list[dispatch.DispatchReport] = []

    def slow_worker() -> None:
        try:
            slow_reports.append(dispatch.dispatch_pending())
        finally:
            close_thread_connection()

    slow_thread = threading.Thread(target=slow_worker)
    slow_thread.start()
    wait_until(lambda: len(use_sandbox.requests()) == 1)

    app_clock.advance(timedelta(seconds=301))
    takeover = dispatch.dispatch_pending()
    slow_thread.join(timeout=30)

    assert takeover.leases_released == 5
    assert takeover.delivered == 5
    assert slow_reports[0].retrying == 0
    assert set(Event.objects.values_list("status", flat=True)) == {EventStatus.DELIVERED}
    assert set(Event.objects.values_list("attempts", flat=True)) == {1}


# --- processes ---------------------------------------------------------------------------------


def _database_is_shared() -> bool:
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("postgresql"):
        return True
    return bool(database.get("TEST", {}).get("NAME"))


def worker_environment(tmp_path: Path, sandbox: Sandbox, **capi: Any) -> dict[str, str]:
    """Settings for a ``manage.py`` subprocess: this test database, the sandbox."""
    database = dict(connection.settings_dict)
    module = tmp_path / "h5_worker_settings.py"
    module.write_text(
        "from tests.settings import *  # noqa: F403\n"
        f"DATABASES = {{'default': {{**DATABASES['default'], 'NAME': {database['NAME']!r}, "
        "'TEST': {}}}\n"
        f"CAPI_DESTINATIONS = {{'GRAPH_API_BASE_URL': {sandbox.url!r}, **{capi!r}}}\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "h5_worker_settings"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    return env


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "capi_dispatch", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


if _database_is_shared():

    @pytest.mark.django_db(transaction=True)
    def test_processes_deliver_every_event_exactly_once_despite_faults(
        unfrozen_clock: Any,
        use_sandbox: Sandbox,
        destinations: list[Destination],
        tmp_path: Path,
    ) -> None:
        bad = seed_events(destinations, 500, bad_every=200)
        use_sandbox.set_faults(**{**FAULTS, "latency_ms": 20})
        env = worker_environment(tmp_path, use_sandbox, BATCH_SIZE=200)

        workers = [start_worker(env) for _ in range(3)]
        outputs = [worker.communicate(timeout=90) for worker in workers]

        claimed = []
        for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, stderr
            claimed.append(int(re.search(r"claimed=(\d+)", stdout).group(1)))
        # (Rate-limited destinations pause, so not every event is claimed in this phase.)
        assert sum(1 for count in claimed if count) >= 2, "the workers did not share the work"
        assert_every_event_settled_with_a_reason()

        drain(use_sandbox)
        assert_exactly_once(use_sandbox, bad)

    @pytest.mark.django_db(transaction=True)
    def test_a_killed_worker_loses_nothing(
        unfrozen_clock: Any, use_sandbox: Sandbox, destination: Destination, tmp_path: Path
    ) -> None:
        seed_events([destination], 50)
        # The request hangs at "Meta" until the worker is killed in the middle of it.
        use_sandbox.set_faults(latency_ms=60_000)
        worker = start_worker(worker_environment(tmp_path, use_sandbox))
        try:
            wait_until(lambda: len(use_sandbox.requests()) == 1, timeout=30)
            assert set(Event.objects.values_list("status", flat=True)) == {EventStatus.PENDING}
            assert not QueuedEvent.objects.filter(lease_token__isnull=True).exists()
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.communicate(timeout=10)

        use_sandbox.set_faults(latency_ms=0)
        app_clock.freeze(timezone.now() + timedelta(seconds=301))
        report = dispatch.dispatch_pending()

        assert report.leases_released == 50
        assert report.delivered == 50
        assert_exactly_once(use_sandbox, set())


if connection.vendor == "postgresql":

    @pytest.mark.django_db(transaction=True)
    def test_a_connection_cut_after_meta_accepted_sends_nothing_twice(
        clock: Any, use_sandbox: Sandbox, destination: Destination
    ) -> None:
        seed_events([destination], 20)
        worker_pid = connection.cursor().connection.info.backend_pid

        def cut_the_worker_s_connection(method: str, path: str) -> None:
            # Meta has accepted the events; the worker's database connection dies before it
            # can record that.
            if method == "POST":
                use_sandbox.app.before_answer = None
                terminate_backend(worker_pid)

        use_sandbox.app.before_answer = cut_the_worker_s_connection

        report = dispatch.dispatch_pending()

        assert report.delivered == 20
        assert set(Event.objects.values_list("status", flat=True)) == {EventStatus.DELIVERED}
        app_clock.advance(timedelta(seconds=301))
        assert dispatch.dispatch_pending().claimed == 0
        received = [record["event_id"] for record in use_sandbox.events()]
        assert len(received) == len(set(received)) == 20
