"""A steady ingest load against the HTTP endpoint, as a site's servers would send it.

A pacing thread releases requests at a fixed rate; sender threads post them over keep-alive
connections with the destination's server secret. Like any well-behaved client, a request that
fails in transport or with a 5xx is retried (the endpoint is idempotent on event_id, so a retry
never stores an event twice). Most events are ordinary purchases; a share are meant to be
rejected (no customer information), suppressed (consent denied on a destination that requires
it), resent (duplicates) or nearly 7 days old (they expire before they can be sent).
"""

from __future__ import annotations

import http.client
import itertools
import json
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SEVEN_DAYS = 7 * 24 * 3600
MAX_TRIES = 6


@dataclass(frozen=True)
class Target:
    """A destination the load posts to, and what kind of events it should get."""

    destination_id: int
    ingest_key: str
    secret: str
    kind: str  # "live", "consent", "test", "disabled"


@dataclass
class LoadReport:
    """What the load sent and what the endpoint answered."""

    started_at: float = 0.0
    finished_at: float = 0.0
    requests: int = 0
    tries: int = 0
    http_statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    results: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)
    # (destination_id, event_name, event_id) of every new event the endpoint answered for.
    accepted: set[tuple[int, str, str]] = field(default_factory=set)
    # New events whose request never got an answer after every retry.
    unanswered: set[tuple[int, str, str]] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    server_error_times: list[float] = field(default_factory=list)
    behind_schedule_max: int = 0

    def merge(self, other: LoadReport) -> None:
        """Add another report's counts (sender threads keep their own)."""
        self.requests += other.requests
        self.tries += other.tries
        self.http_statuses.update(other.http_statuses)
        self.transport_errors += other.transport_errors
        self.results.update(other.results)
        self.intents.update(other.intents)
        self.accepted |= other.accepted
        self.unanswered |= other.unanswered
        self.latencies_ms += other.latencies_ms
        self.server_error_times += other.server_error_times

    def summary(self) -> dict[str, Any]:
        """Plain numbers for the results file."""
        seconds = max(self.finished_at - self.started_at, 1e-9)
        ordered = sorted(self.latencies_ms) or [0.0]
        return {
            "seconds": round(seconds, 1),
            "requests": self.requests,
            "requests_per_second": round(self.requests / seconds, 1),
            "events_sent": sum(self.intents.values()),
            "events_per_second": round(sum(self.intents.values()) / seconds, 1),
            "retried_tries": self.tries - self.requests,
            "http_statuses": dict(self.http_statuses),
            "transport_errors": self.transport_errors,
            "answers": dict(self.results),
            "intents": dict(self.intents),
            "accepted_new_events": len(self.accepted),
            "unanswered_new_events": len(self.unanswered),
            "latency_ms_p50": round(ordered[len(ordered) // 2], 1),
            "latency_ms_p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
            "latency_ms_max": round(ordered[-1], 1),
            "most_requests_behind_schedule": self.behind_schedule_max,
        }


class EventMaker:
    """Builds the events of one request; ids are unique per run."""

    def __init__(self, run_id: str, seed: int) -> None:
        self.run_id = run_id
        self.random = random.Random(seed)
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.sent: list[tuple[Target, dict[str, Any]]] = []

    def _purchase(self, number: int) -> dict[str, Any]:
        return {
            "event_name": "Purchase",
            "event_id": f"soak-{self.run_id}-{number}",
            "event_time": int(time.time()),
            "action_source": "website",
            "event_source_url": "https://shop.example.com/checkout",
            "user_data": {
                "email": f"customer{number}@example.com",
                "client_ip_address": "203.0.113.7",
                "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) soak",
            },
            "custom_data": {"value": round(self.random.uniform(5, 500), 2), "currency": "EUR"},
        }

    def request_events(self, target: Target) -> list[tuple[str, dict[str, Any]]]:
        """(intent, event) pairs for one request to ``target``."""
        with self.lock:
            size = 1 if self.random.random() < 0.7 else self.random.randint(2, 10)
            events = []
            for _ in range(size):
                number = next(self.counter)
                event = self._purchase(number)
                draw = self.random.random()
                intent = "deliver"
                if target.kind == "consent" and draw < 0.5:
                    event["consent"] = {"ad_storage": "denied", "ad_user_data": "denied"}
                    intent = "suppress"
                elif draw < 0.05:
                    event["user_data"] = {}
                    intent = "reject"
                elif draw < 0.08 and self.sent:
                    _, earlier = self.random.choice(self.sent[-500:])
                    event = dict(earlier)
                    intent = "duplicate"
                elif draw < 0.10:
                    # Inside Meta's window when recorded, outside it before it can be sent.
                    event["event_time"] = int(time.time()) - SEVEN_DAYS + 20
                    intent = "expire"
                if target.kind == "disabled" and intent == "deliver":
                    intent = "hold"
                if intent != "duplicate":
                    self.sent.append((target, event))
                events.append((intent, event))
            return events


class SteadyLoad:
    """Posts ``rate`` requests a second for ``seconds`` to the targets, from ``threads``."""

    def __init__(
        self,
        *,
        port: int,
        targets: list[Target],
        rate: float,
        seconds: float,
        maker: EventMaker,
        threads: int = 8,
    ) -> None:
        self.port = port
        self.targets = targets
        self.rate = rate
        self.seconds = seconds
        self.maker = maker
        self.threads = threads
        self.report = LoadReport()
        self._queue: queue.Queue[Target | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._reports: list[LoadReport] = []
        self._pacer: threading.Thread | None = None
        self._weights = [4 if target.kind == "live" else 1 for target in targets]
        self._choice = random.Random(maker.random.random())

    def start(self) -> SteadyLoad:
        """Start pacing and sending in the background."""
        self.report.started_at = time.time()
        for _ in range(self.threads):
            report = LoadReport()
            self._reports.append(report)
            worker = threading.Thread(target=self._send_loop, args=(report,), daemon=True)
            worker.start()
            self._workers.append(worker)
        self._pacer = threading.Thread(target=self._pace, daemon=True)
        self._pacer.start()
        return self

    def join(self) -> LoadReport:
        """Wait for the load to finish; the merged report."""
        assert self._pacer is not None
        self._pacer.join()
        for worker in self._workers:
            worker.join()
        self.report.finished_at = time.time()
        for report in self._reports:
            self.report.merge(report)
        return self.report

    def _pace(self) -> None:
        interval = 1.0 / self.rate
        begin = time.monotonic()
        for tick in itertools.count():
            due = begin + tick * interval
            if due - begin >= self.seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            target = self._choice.choices(self.targets, weights=self._weights)[0]
            self._queue.put(target)
            self.report.behind_schedule_max = max(
                self.report.behind_schedule_max, self._queue.qsize()
            )
        for _ in self._workers:
            self._queue.put(None)

    def _send_loop(self, report: LoadReport) -> None:
        connection: http.client.HTTPConnection | None = None
        while True:
            target = self._queue.get()
            if target is None:
                break
            events = self.maker.request_events(target)
            connection = self._post(connection, target, events, report)
        if connection is not None:
            connection.close()

    def _post(
        self,
        connection: http.client.HTTPConnection | None,
        target: Target,
        events: list[tuple[str, dict[str, Any]]],
        report: LoadReport,
    ) -> http.client.HTTPConnection | None:
        body = json.dumps({"data": [event for _, event in events]})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {target.secret}"}
        path = f"/capi/v1/destinations/{target.ingest_key}/events"
        keys = [
            (target.destination_id, event["event_name"], event["event_id"])
            for intent, event in events
            if intent != "duplicate"
        ]
        report.requests += 1
        report.intents.update(intent for intent, _ in events)
        for attempt in range(MAX_TRIES):
            report.tries += 1
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                connection.request("POST", path, body=body, headers=headers)
                answer = connection.getresponse()
                content = answer.read()
            except (OSError, http.client.HTTPException):
                report.transport_errors += 1
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.2 * (attempt + 1))
                continue
            report.latencies_ms.append((time.perf_counter() - started) * 1000)
            report.http_statuses[answer.status] += 1
            if answer.status >= 500:
                report.server_error_times.append(time.time())
                time.sleep(0.2 * (attempt + 1))
                continue
            if answer.status == 202:
                report.results.update(item["status"] for item in json.loads(content)["events"])
                report.accepted.update(keys)
            return connection
        report.unanswered.update(keys)
        return connection
