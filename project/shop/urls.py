"""The demo shop's pages (``project/shop/views.py``), under ``/shop/`` in the demo site."""

from __future__ import annotations

from django.urls import path

from project.shop import views

app_name = "demo_shop"

urlpatterns = [
    path("", views.landing, name="landing"),
    path("checkout/", views.checkout, name="checkout"),
    path("orders/<str:number>/", views.order_page, name="order"),
    path("orders/<str:number>/payment-webhook/", views.payment_webhook, name="payment_webhook"),
    path("orders/<str:number>/forget/", views.forget_customer, name="forget"),
]
