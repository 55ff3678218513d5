"""Each domain fact has one home, and the model fields take their choices from it."""

from __future__ import annotations

from capi_destinations import consent, graph, graph_errors, models, user_data_keys
from capi_destinations.models import DeliveryAttempt, Destination


def test_attempt_categories_are_the_graph_error_categories() -> None:
    field = DeliveryAttempt._meta.get_field("category")

    assert field.choices == graph_errors.Category.choices
    assert [value for value, _ in field.choices] == list(graph.CATEGORIES)
    assert graph.AUTH == graph_errors.Category.AUTH == "auth"


def test_the_consent_choices_are_the_consent_rules_own() -> None:
    assert models.ConsentPolicy is consent.ConsentPolicy
    assert models.MissingConsent is consent.MissingConsent
    assert Destination._meta.get_field("consent_policy").choices == consent.ConsentPolicy.choices
    assert consent.GRANTED == consent.MissingConsent.GRANTED == "granted"


def test_identifier_labels_live_with_the_key_lists() -> None:
    known = set(user_data_keys.CUSTOMER_INFO_KEYS)

    assert set(user_data_keys.IDENTIFIER_LABELS) <= known
    assert set(user_data_keys.FIELD_LABELS) <= known
    assert user_data_keys.TOP_IDENTIFIERS[:3] == ("em", "ph", "external_id")
