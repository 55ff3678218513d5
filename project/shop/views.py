"""The demo shop's own pages: issue 18 end to end in the demo site.

A visitor lands from an ad (``/shop/?fbclid=…``): ``ClickIdMiddleware`` (installed in
``project/settings.py``) keeps ``_fbc``/``_fbp`` as first-party cookies. The checkout records an
InitiateCheckout with ``track(..., request=request)``, so it carries them and the app remembers
them with the customer's hashed email. **Payment webhook** marks the order paid as the payment
provider would: the shop's conversion rule records the Purchase with no request and no cookies,
and the app fills in the click IDs seen at checkout. **Forget this customer** is an erasure
request (``capi_destinations.forget``): a later order's Purchase gains nothing.

The pages record to Acme web shop, the demo's well-instrumented destination.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

import capi_destinations
from capi_destinations import clock
from capi_destinations.management.commands.capi_demo import ACME_WEB_SHOP
from capi_destinations.models import Destination, Event
from project.shop.models import Order

# The one pair of shoes every demo order buys.
CART_TOTAL = Decimal("49.90")
CART_CURRENCY = "EUR"
CART_CONTENTS = [{"id": "SHOE-42", "quantity": 1}]


def shop_destination() -> Destination:
    """Acme web shop, as ``capi_demo`` created it (404 before the demo ran)."""
    destination = Destination.objects.filter(
        tenant__slug=ACME_WEB_SHOP.tenant_slug, pixel_id=ACME_WEB_SHOP.pixel_id
    ).first()
    if destination is None:
        raise Http404("Run `manage.py capi_demo` first: the shop records to Acme web shop.")
    return destination


@require_GET
def landing(request: HttpRequest) -> HttpResponse:
    """The shop's page: the visitor's click IDs as the site's own server keeps them."""
    shop_destination()
    return render(request, "shop/landing.html", {"cookies": _click_cookies(request)})


@require_POST
def checkout(request: HttpRequest) -> HttpResponse:
    """Keep the order and record its InitiateCheckout from this request (cookies included)."""
    destination = shop_destination()
    email = request.POST.get("email", "").strip()
    try:
        validate_email(email)
    except ValidationError:
        return render(
            request,
            "shop/landing.html",
            {"cookies": _click_cookies(request), "error": "Enter an email address."},
            status=400,
        )
    order = Order.objects.create(
        number=f"shop-{uuid.uuid4().hex[:12]}",
        destination=destination,
        email=email,
        client_ip_address=request.META.get("REMOTE_ADDR", ""),
        client_user_agent=request.headers.get("user-agent", ""),
        checkout_url=request.build_absolute_uri(reverse("demo_shop:landing")),
        total=CART_TOTAL,
        currency=CART_CURRENCY,
        contents=CART_CONTENTS,
    )
    capi_destinations.track(
        destination,
        {
            "event_name": "InitiateCheckout",
            "event_id": order.number,
            "event_time": int(clock.now().timestamp()),
            "action_source": "website",
            "event_source_url": order.checkout_url,
            "user_data": {"email": email},
            "custom_data": {"value": float(order.total), "currency": order.currency},
        },
        request=request,
    )
    return redirect("demo_shop:order", number=order.number)


@require_GET
def order_page(request: HttpRequest, number: str) -> HttpResponse:
    """The order, its two events as recorded, and the webhook and erasure buttons."""
    order = get_object_or_404(Order, number=number)
    destination = shop_destination()
    events = {
        event.event_name: event
        for event in Event.objects.filter(
            destination=destination, event_id__in=[order.number, f"order-paid-{order.number}"]
        )
    }
    context: dict[str, Any] = {
        "order": order,
        "checkout": _shown(events.get("InitiateCheckout"), destination),
        "purchase": _shown(events.get("Purchase"), destination),
        "forgotten": request.GET.get("forgotten"),
    }
    return render(request, "shop/order.html", context)


@require_POST
def payment_webhook(request: HttpRequest, number: str) -> HttpResponse:
    """What the payment provider's webhook does: mark the order paid (no customer browser).

    The conversion rule records the Purchase after the commit, from the order alone.
    """
    order = get_object_or_404(Order, number=number, status=Order.Status.OPEN)
    order.status = Order.Status.PAID
    order.paid_at = clock.now()
    order.save()
    return redirect("demo_shop:order", number=order.number)


@require_POST
def forget_customer(request: HttpRequest, number: str) -> HttpResponse:
    """An erasure request for the order's customer: the click IDs remembered for them go."""
    order = get_object_or_404(Order, number=number)
    erased = capi_destinations.forget(shop_destination().tenant, email=order.email)
    return redirect(
        f"{reverse('demo_shop:order', kwargs={'number': order.number})}?forgotten={erased}"
    )


def _click_cookies(request: HttpRequest) -> dict[str, str]:
    return {name: request.COOKIES.get(f"_{name}", "") for name in ("fbc", "fbp")}


def _shown(event: Event | None, destination: Destination) -> dict[str, Any] | None:
    if event is None:
        return None
    user_data = event.payload.get("user_data", {}) if isinstance(event.payload, dict) else {}
    return {
        "fbc": user_data.get("fbc", ""),
        "fbp": user_data.get("fbp", ""),
        "filled": [d["message"] for d in event.diagnostics if d.get("code") == "click_id_filled"],
        "url": reverse(
            "capi_destinations:event", kwargs={"code": destination.code, "event_pk": event.pk}
        ),
    }
