"""A process of its own that marks orders paid, in step with another one (tests/test_rules.py).

``python -m tests.shop.pay_orders <destination id> <order id>...`` registers the shop's rule and,
for each order: reads it in a transaction, prints ``ready <id>``, waits for the line ``go`` on
its standard input (the test sends it once every process is ready: no sleeps), marks it paid
and commits; the rule then fires after the commit, in this process. At the end it prints
``fired <n> failed <n>``: how many firings recorded the event here, and how many failed.
"""

from __future__ import annotations

import logging
import sys

import django


class _Firings(logging.Handler):
    """Counts the rules module's log lines: "… fired for …" and the exceptions it logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fired = 0
        self.failed = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.failed += 1
            sys.stderr.write(self.format(record) + "\n")
        elif "fired for" in record.getMessage():
            self.fired += 1


def main(destination_id: int, order_ids: list[int]) -> None:
    django.setup()
    from django.db import transaction

    from capi_destinations import rules
    from tests.shop.conversions import order_paid
    from tests.shop.models import Order

    firings = _Firings()
    logger = logging.getLogger("capi_destinations.rules")
    logger.addHandler(firings)
    logger.setLevel(logging.INFO)
    rules.register(order_paid(destination_id))
    for order_id in order_ids:
        with transaction.atomic():
            order = Order.objects.get(pk=order_id)
            print(f"ready {order_id}", flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("no go")
            order.status = "paid"
            order.save()
    print(f"fired {firings.fired} failed {firings.failed}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), [int(arg) for arg in sys.argv[2:]])
