"""Conversion rules: a model's change of state records a conversion, once per object.

A host site declares, in code, that an ``Order`` becoming paid is a ``Purchase``::

    from capi_destinations import rules

    rules.register(rules.ConversionRule(
        name="order-paid",
        model="shop.Order",
        when=lambda order: order.status == "paid",
        event=lambda order: {
            "event_name": "Purchase",
            "event_id": f"order-{order.pk}",   # the browser's eventID too: they deduplicate
            "action_source": "website",
            "user_data": {"email": order.email, "external_id": str(order.customer_id)},
            "custom_data": {"value": order.total, "currency": order.currency},
        },
        destinations=lambda order: [order.shop.capi_destination],
    ))

(in an ``AppConfig.ready()``). Whenever an object of the model is saved (``receivers`` connects
:func:`on_save` to ``post_save`` once, for every model), the rule asks
``when(obj)``; the first time it holds, the event is recorded for each destination after the
saving transaction commits (a rolled-back save records nothing), together with a
``RuleFiring`` row whose unique key (rule, object) makes it once per object however many times,
and from however many processes at once, the object is saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.apps import apps
from django.db import IntegrityError, models, router, transaction

from capi_destinations import clock, ingest
from capi_destinations.models import Destination, RuleFiring

logger = logging.getLogger("capi_destinations.rules")

#: The rules registered, by name.
registered: dict[str, ConversionRule] = {}


@dataclass(frozen=True)
class ConversionRule:
    """When ``when(obj)`` first holds for a saved ``model`` object, record ``event(obj)``.

    ``destinations`` is a list of destinations, or a function of the object returning them
    (each client's own pixel); an empty answer records nothing (and does not count as fired).
    ``event`` returns the event as ``track()`` takes it; give it an ``event_id`` made from the
    object (``f"order-{order.pk}"``) so the Pixel's event with the same eventID deduplicates.
    """

    name: str
    model: type[models.Model] | str
    when: Callable[[Any], bool]
    event: Callable[[Any], Mapping[str, Any]]
    destinations: Iterable[Destination] | Callable[[Any], Iterable[Destination]] = field(
        default_factory=list
    )

    def model_class(self) -> type[models.Model]:
        if isinstance(self.model, str):
            return apps.get_model(self.model)
        return self.model

    def destinations_for(self, obj: Any) -> list[Destination]:
        chosen = self.destinations(obj) if callable(self.destinations) else self.destinations
        return [destination for destination in chosen or () if destination is not None]


def register(rule: ConversionRule) -> ConversionRule:
    """Register ``rule`` (a rule of the same name is replaced)."""
    if len(rule.name) > 100:
        raise ValueError("A rule's name is at most 100 characters.")
    registered[rule.name] = rule
    return rule


def unregister(name: str) -> None:
    """Forget a rule (tests, or a rule a site stops using)."""
    registered.pop(name, None)


def on_save(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    """``post_save`` of every model: the rules of ``sender`` whose condition now holds fire
    after the saving transaction commits. Nothing to do (a dict walk) for other models."""
    if not registered or kwargs.get("raw"):
        return  # no rules; or loading fixtures, which is not a business event
    for rule in list(registered.values()):
        if rule.model_class() is not sender or not rule.when(instance):
            continue
        using = kwargs.get("using") or router.db_for_write(sender)
        transaction.on_commit(partial(_fire_safely, rule, sender, instance.pk), using=using)


def _fire_safely(rule: ConversionRule, model: type[models.Model], pk: Any) -> None:
    """Fire after commit, on the object as committed; never fail the host's save."""
    try:
        obj = model._default_manager.filter(pk=pk).first()
        if obj is not None:
            fire(rule, obj)
    except Exception:
        # The save committed; a conversion that could not be recorded must not turn the
        # host's request into an error. The log names the rule and object, never the event.
        logger.exception("Conversion rule %s could not fire for %s:%s", rule.name, model, pk)


def object_key(obj: models.Model) -> str:
    return f"{obj._meta.label_lower}:{obj.pk}"


def fire(rule: ConversionRule, obj: Any) -> list[ingest.TrackResult] | None:
    """Record ``rule``'s event for ``obj`` unless it already fired for it; the results, or None.

    The ``RuleFiring`` row and the events are written in one transaction: either the rule fired
    (and its events are stored) or it did not, whoever else is firing it at the same moment.
    """
    if not rule.when(obj):
        return None  # changed again before this ran: the state it fired for is gone
    destinations = rule.destinations_for(obj)
    if not destinations:
        return None
    event = rule.event(obj)
    try:
        with transaction.atomic():
            RuleFiring.objects.create(
                rule=rule.name, object_key=object_key(obj), fired_at=clock.now()
            )
            results = [ingest.track(destination, event) for destination in destinations]
    except IntegrityError:
        return None  # fired already (another save, another process)
    logger.info("Conversion rule %s fired for %s", rule.name, object_key(obj))
    return results
