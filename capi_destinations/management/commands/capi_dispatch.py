"""``manage.py capi_dispatch [--loop] [--destination ID]``: deliver due events without a cluster."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from capi_destinations import dispatch


class Command(BaseCommand):
    help = (
        "Send due events to Meta: one pass, or --loop to keep going until stopped "
        "(for cron users and sites without a django-q2 cluster)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop", action="store_true", help="Keep dispatching until interrupted."
        )
        parser.add_argument(
            "--destination", type=int, metavar="ID", help="Only this destination's events."
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=1.0,
            metavar="SECONDS",
            help="With --loop: how long to wait when nothing was due (default 1).",
        )
        parser.add_argument(
            "--max-batches",
            type=int,
            metavar="N",
            help="Stop a pass after claiming N batches (default: until nothing is due).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["loop"]:
            self._report(self._one_pass(options))
            return
        stop = threading.Event()

        # Finish the batch in hand on Ctrl-C or SIGTERM, so no lease is left behind.
        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        stop_signals = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, request_stop) for signum in stop_signals}
        try:
            while not stop.is_set():
                report = self._one_pass(options)
                if report.claimed or report.expired or report.leases_released:
                    self._report(report)
                if not report.claimed:
                    close_old_connections()
                    stop.wait(options["interval"])
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _one_pass(self, options: dict[str, Any]) -> dispatch.DispatchReport:
        return dispatch.dispatch_pending(options["destination"], max_batches=options["max_batches"])

    def _report(self, report: dispatch.DispatchReport) -> None:
        self.stdout.write(" ".join(f"{name}={count}" for name, count in report.to_dict().items()))
