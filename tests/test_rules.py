"""Conversion rules: an order becoming paid records one Purchase, once per order (issue 20)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction

from capi_destinations import rules
from capi_destinations.models import Destination, Event, RuleFiring
from tests.conftest import close_thread_connection
from tests.shop.models import Order


def purchase_of(order: Order) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": f"order-{order.pk}",
        "action_source": "system_generated",
        "user_data": {"email": order.email},
        "custom_data": {"value": float(order.total), "currency": order.currency},
    }


@pytest.fixture
def order_paid(destination: Destination) -> Iterator[rules.ConversionRule]:
    rule = rules.register(
        rules.ConversionRule(
            name="order-paid",
            model="shop.Order",
            when=lambda order: order.status == "paid",
            event=purchase_of,
            destinations=lambda order: Destination.objects.filter(pk=destination.pk),
        )
    )
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
