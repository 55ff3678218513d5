"""Conversion rules: an order becoming paid records one Purchase, once per order (issue 20).

Once per order however it is saved: again and again, in a transaction that fails and is
retried, after a firing that failed, from two threads and from two processes at the same moment
(PostgreSQL); a rolled-back save records nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction

from capi_destinations import rules
from capi_destinations.models import Destination, Event, RuleFiring
from tests.conftest import close_thread_connection
from tests.shop.conversions import order_paid as order_paid_rule
from tests.shop.conversions import purchase_of
from tests.shop.models import Order

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def order_paid(destination: Destination) -> Iterator[rules.ConversionRule]:
    rule = rules.register(order_paid_rule(destination.pk))
    yield rule
    rules.unregister(rule.name)


def pay(order: Order) -> None:
    order.status = "paid"
    order.save()


@pytest.mark.django_db(transaction=True)
def test_an_order_becoming_paid_records_one_purchase_however_often_it_is_saved(
    order_paid: rules.ConversionRule,
) -> None:
    order = Order.objects.create(email="jane@example.com", total="49.90")
    assert not Event.objects.exists()  # open: not a conversion

    pay(order)
    order.total = "59.90"
    order.save()
    order.save()

    event = Event.objects.get()
    assert event.event_name == "Purchase"
    assert event.event_id == f"order-{order.pk}"
    assert event.payload["custom_data"] == {"value": 49.9, "currency": "EUR"}
    assert "event_id_reused" not in {item["code"] for item in event.diagnostics}
    assert RuleFiring.objects.get().object_key == f"shop.order:{order.pk}"


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_save_records_nothing(order_paid: rules.ConversionRule) -> None:
    order = Order.objects.create(email="jane@example.com", total="10")

    def pay_then_fail() -> None:
        with transaction.atomic():
            pay(order)
            raise RuntimeError("the payment provider's callback failed")

    with pytest.raises(RuntimeError):
        pay_then_fail()

    assert not Event.objects.exists()
    assert not RuleFiring.objects.exists()
    pay(Order.objects.get(pk=order.pk))
    assert Event.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_rule_that_cannot_record_never_fails_the_hosts_save(
    destination: Destination, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(order: Order) -> dict[str, Any]:
        raise KeyError("customer")

    rules.register(
        rules.ConversionRule(
            name="broken",
            model=Order,
            when=lambda o: True,
            event=broken,
            destinations=[destination],
        )
    )
    try:
        Order.objects.create(email="jane@example.com")  # must not raise
    finally:
        rules.unregister("broken")
    assert "Conversion rule broken could not fire" in caplog.text
    assert not RuleFiring.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rule_picks_each_objects_destinations(
    make_destination: Any, destination: Destination
) -> None:
    other = make_destination(name="Client B")
    rules.register(
        rules.ConversionRule(
            name="to-both",
            model=Order,
            when=lambda o: o.status == "paid",
            event=purchase_of,
            destinations=lambda order: [destination, other],
        )
    )
    try:
        pay(Order.objects.create(email="jane@example.com"))
    finally:
        rules.unregister("to-both")
    assert sorted(Event.objects.values_list("destination_id", flat=True)) == sorted(
        [destination.pk, other.pk]
    )


def with_retries(work: Any, *, attempts: int = 3) -> None:
    """How a host site retries a transaction that failed (a deadlock, a lost connection)."""
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                work(attempt)
            return
        except OperationalError:
            if attempt == attempts:
                raise


@pytest.mark.django_db(transaction=True)
def test_a_transaction_retried_after_a_failure_records_once(
    order_paid: rules.ConversionRule,
) -> None:
    """The payment webhook's transaction fails after marking the order paid and is retried;
    then the provider delivers the same webhook again: one Purchase, one firing."""
    order = Order.objects.create(email="jane@example.com", total="25")

    def payment_webhook(attempt: int) -> None:
        pay(Order.objects.get(pk=order.pk))
        if attempt == 1:
            raise OperationalError("deadlock detected")  # what PostgreSQL answers, say

    with_retries(payment_webhook)
    assert Event.objects.filter(event_id=f"order-{order.pk}").count() == 1
    with_retries(payment_webhook)  # delivered again by the provider

    assert Event.objects.filter(event_id=f"order-{order.pk}").count() == 1
    assert RuleFiring.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_firing_that_failed_is_retried_by_the_next_save_and_records_once(
    destination: Destination, caplog: pytest.LogCaptureFixture
) -> None:
    """The rule could not record (its destination lookup failed): nothing is marked fired, so
    the order's next save fires it, once."""
    lookups = []

    def destinations_of(order: Order) -> list[Destination]:
        lookups.append(order.pk)
        if len(lookups) == 1:
            raise ConnectionError("the CRM did not answer")
        return [destination]

    rules.register(
        rules.ConversionRule(
            name="order-paid-flaky",
            model=Order,
            when=lambda order: order.status == "paid",
            event=purchase_of,
            destinations=destinations_of,
        )
    )
    try:
        order = Order.objects.create(email="jane@example.com", status="paid")
        assert not Event.objects.exists()
        assert not RuleFiring.objects.exists()
        order.save()
        order.save()
    finally:
        rules.unregister("order-paid-flaky")

    assert "Conversion rule order-paid-flaky could not fire" in caplog.text
    assert Event.objects.filter(event_id=f"order-{order.pk}").count() == 1
    assert RuleFiring.objects.get().rule == "order-paid-flaky"


# PostgreSQL only: the test's in-memory SQLite database, shared by threads, answers "table is
# locked" to a reader while another thread writes; the same pattern as test_member_concurrency.
if connection.vendor == "postgresql":

    @pytest.mark.django_db(transaction=True)
    @pytest.mark.parametrize("round_", range(3))
    def test_concurrent_saves_fire_the_rule_once(
        order_paid: rules.ConversionRule, round_: int
    ) -> None:
        """Two requests mark the same order paid at the same moment, each in its own transaction
        and connection: one Purchase, one firing, no error."""
        order = Order.objects.create(email="jane@example.com", total="10")
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def mark_paid() -> None:
            try:
                with transaction.atomic():
                    mine = Order.objects.get(pk=order.pk)
                    barrier.wait()
                    pay(mine)
            except BaseException as error:
                errors.append(error)
            finally:
                close_thread_connection()

        threads = [threading.Thread(target=mark_paid) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        assert Event.objects.filter(event_id=f"order-{order.pk}").count() == 1
        assert RuleFiring.objects.count() == 1


# --- two processes ------------------------------------------------------------------------------


def process_environment(tmp_path: Path) -> dict[str, str]:
    """Settings for a process of its own on this test's database."""
    module = tmp_path / "rule_process_settings.py"
    module.write_text(
        "from tests.settings import *  # noqa: F403\n"
        f"DATABASES = {{'default': {{**DATABASES['default'], "
        f"'NAME': {connection.settings_dict['NAME']!r}, 'TEST': {{}}}}}}\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "rule_process_settings"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    return env


def start_paying(env: dict[str, str], destination: Destination, orders: list[Order]) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.shop.pay_orders", str(destination.pk)]
        + [str(order.pk) for order in orders],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# Two processes need a database both can open: PostgreSQL (the suite's SQLite is in memory).
if connection.vendor == "postgresql":

    @pytest.mark.django_db(transaction=True)
    def test_two_processes_saving_the_same_orders_at_once_fire_the_rule_once_per_order(
        destination: Destination, tmp_path: Path
    ) -> None:
        """Two processes (two web workers, say) each mark the same orders paid at the same
        moment, order after order, in their own transactions; the rule fires in each after its
        commit. One Purchase and one firing per order, and no firing failed."""
        orders = [Order.objects.create(email=f"buyer{n}@example.com", total="10") for n in range(8)]
        env = process_environment(tmp_path)
        workers = [start_paying(env, destination, orders) for _ in range(2)]
        try:
            for order in orders:
                # Both have read the order in their open transaction: let them pay it together.
                for worker in workers:
                    line = worker.stdout.readline()
                    assert line.split() == ["ready", str(order.pk)], worker.stderr.read()
                for worker in workers:
                    worker.stdin.write("go\n")
                    worker.stdin.flush()
            outputs = [worker.communicate(timeout=60) for worker in workers]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.communicate()

        fired = failed = 0
        for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, stderr
            _, mine, _, my_failures = stdout.split()
            fired, failed = fired + int(mine), failed + int(my_failures)
        assert (fired, failed) == (len(orders), 0)  # each order recorded by one process only
        for order in orders:
            assert Event.objects.filter(event_id=f"order-{order.pk}").count() == 1
        assert RuleFiring.objects.count() == len(orders)
