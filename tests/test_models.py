from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from capi_destinations.models import Destination, Event
from tests.conftest import make_token


def raw_token_column(destination: Destination) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token FROM capi_destinations_destination WHERE id = %s", [destination.pk]
        )
        (value,) = cursor.fetchone()
    return bytes(value)


def test_token_is_encrypted_at_rest_and_reads_back(destination: Destination, token: str) -> None:
    destination.access_token = token
    destination.save()

    stored = raw_token_column(destination)
    assert token.encode() not in stored
    assert token[:20].encode() not in stored
    assert Destination.objects.get(pk=destination.pk).access_token == token


def test_token_hint_shows_only_prefix_and_last_four(destination: Destination, token: str) -> None:
    destination.access_token = token
    destination.save()
    destination.refresh_from_db()
    assert destination.token_hint == f"EAA…{token[-4:]}"
    assert token not in repr(destination)
    assert token not in str(destination)


def test_surrounding_whitespace_is_stripped(make_destination, token: str) -> None:
    destination = make_destination(access_token=f"  \n{token}\t ")
    assert Destination.objects.get(pk=destination.pk).access_token == token


@pytest.mark.parametrize(
    ("value", "code", "fragment"),
    [
        ("", "token_missing", "Paste the Conversions API access token"),
        ("EAA" + "a" * 90 + " " + "b" * 96, "token_whitespace", "space or line break"),
        ("EAA" + "a" * 90 + "\n" + "b" * 96, "token_whitespace", "space or line break"),
        ("EAA" + "a" * 90 + "-" + "b" * 96, "token_characters", "other than letters and digits"),
        ('"EAA' + "a" * 187 + '"', "token_characters", "other than letters and digits"),
        ("EAA" + "é" * 187, "token_characters", "other than letters and digits"),
        ("XYZ" + "a" * 187, "token_prefix", "starts with “EAA”; this one starts with “XYZ”"),
        ("EAA" + "a" * 55, "token_truncated", "looks truncated: 58 characters"),
    ],
)
def test_each_token_rule_has_its_own_message(
    make_destination, value: str, code: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        make_destination(access_token=value)
    assert caught.value.code == code
    assert fragment in caught.value.messages[0]
    assert not Destination.objects.exists()


def test_truncated_message_names_typical_length(make_destination) -> None:
    with pytest.raises(ValidationError) as caught:
        make_destination(access_token="EAA" + "a" * 55)
    assert caught.value.messages[0].startswith(
        "The token looks truncated: 58 characters, a CAPI token is about 190"
    )


def test_token_errors_never_repeat_the_token(make_destination) -> None:
    bad = "EAA" + "Secretish" * 10 + " tail"
    with pytest.raises(ValidationError) as caught:
        make_destination(access_token=bad)
    assert "Secretish" not in str(caught.value)


def test_prefixes_are_a_setting(make_destination, settings) -> None:
    settings.CAPI_DESTINATIONS = {"TOKEN_PREFIXES": ()}
    destination = make_destination(access_token="ZZZ" + "a" * 187)
    assert destination.token_hint == "ZZZ…aaaa"


def test_full_clean_reports_token_problem_on_the_field(tenant) -> None:
    destination = Destination(
        tenant=tenant, name="x", pixel_id="1234567890123456", access_token="EAAshort"
    )
    with pytest.raises(ValidationError) as caught:
        destination.full_clean()
    assert "access_token" in caught.value.message_dict


def test_unchanged_token_is_not_revalidated(destination: Destination, settings) -> None:
    # A token saved under an older, looser rule must not make every later save fail.
    settings.CAPI_DESTINATIONS = {"TOKEN_MIN_LENGTH": 500}
    destination = Destination.objects.get(pk=destination.pk)
    destination.name = "Renamed"
    destination.save()
    assert Destination.objects.get(pk=destination.pk).name == "Renamed"


def test_key_rotation(destination: Destination, settings) -> None:
    token = make_token("rotation")
    settings.FERNET_KEYS = ["key-A"]
    destination.access_token = token
    destination.save()
    encrypted_with_a = raw_token_column(destination)

    settings.FERNET_KEYS = ["key-B", "key-A"]
    call_command("capi_rotate_keys")
    assert raw_token_column(destination) != encrypted_with_a

    settings.FERNET_KEYS = ["key-B"]
    assert Destination.objects.get(pk=destination.pk).access_token == token


def test_without_the_key_the_token_cannot_be_read(destination: Destination, settings) -> None:
    from cryptography.fernet import InvalidToken

    settings.FERNET_KEYS = ["some-other-key"]
    with pytest.raises(InvalidToken):
        Destination.objects.get(pk=destination.pk)


@pytest.mark.parametrize(
    "pixel_id", ["12345", "12345678901234567890123", "1234abcd567890", " 123456789012345"]
)
def test_pixel_id_must_be_10_to_20_digits(tenant, token: str, pixel_id: str) -> None:
    destination = Destination(tenant=tenant, name="x", pixel_id=pixel_id, access_token=token)
    with pytest.raises(ValidationError) as caught:
        destination.full_clean()
    assert "pixel_id" in caught.value.message_dict


def test_pixel_id_unique_within_tenant(make_destination, other_tenant) -> None:
    make_destination(pixel_id="1234567890123456")
    make_destination(pixel_id="1234567890123456", tenant=other_tenant)
    with pytest.raises(IntegrityError):
        make_destination(pixel_id="1234567890123456")


def test_event_unique_on_destination_name_and_id(destination: Destination, clock) -> None:
    fields = {
        "destination": destination,
        "event_name": "Purchase",
        "event_id": "order-1",
        "event_time": clock.now(),
    }
    Event.objects.create(**fields)
    Event.objects.create(**{**fields, "event_name": "AddToCart"})
    with pytest.raises(IntegrityError):
        Event.objects.create(**fields)


def test_ingest_secret_is_stored_as_hash(destination: Destination) -> None:
    secret = destination.set_ingest_secret()
    destination.save()
    destination.refresh_from_db()
    assert secret not in destination.ingest_secret_hash
    assert destination.check_ingest_secret(secret)
    assert not destination.check_ingest_secret(secret + "x")
    assert not destination.check_ingest_secret("")


@pytest.mark.parametrize("field", ["payload", "diagnostics", "consent"])
@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_an_events_json_refuses_what_json_cannot_hold(
    make_event, field: str, number: float
) -> None:
    # Stored, a NaN or Infinity would be a jsonb error on PostgreSQL and, on some SQLite
    # versions, a payload the dispatcher sends to Meta as invalid JSON. Refused alike everywhere,
    # before anything is written.
    event = make_event(event_id="kept")
    value = {"custom_data": {"value": number}} if field != "diagnostics" else [{"x": number}]
    setattr(event, field, value)
    with pytest.raises(ValueError, match="JSON compliant"), transaction.atomic():
        event.save()
    with pytest.raises(ValueError, match="JSON compliant"), transaction.atomic():
        Event.objects.create(
            destination=event.destination,
            event_name="Purchase",
            event_id="never",
            event_time=event.event_time,
            **{field: value},
        )
    assert list(Event.objects.values_list("event_id", flat=True)) == ["kept"]


def test_big_integers_and_negative_zero_are_json_and_are_kept(make_event) -> None:
    event = make_event(event_id="big")
    event.payload = {**event.payload, "custom_data": {"big": 10**400, "zero": -0.0}}
    event.save()
    event.refresh_from_db()
    assert event.payload["custom_data"]["big"] == 10**400
    assert event.payload["custom_data"]["zero"] == 0
