"""The sandbox's Dataset Quality API: Event Match Quality from the events it has received.

Meta's ``GET /{version}/dataset_quality?dataset_id=…&fields=web{…}`` answers, per web event
name, ``event_match_quality`` with a ``composite_score`` (0-10) and ``match_key_feedback``, a
list of ``{"identifier": …, "coverage": {"percentage": …}}`` (Meta's example answer on
developers.facebook.com/documentation/ads-commerce/conversions-api/dataset-quality-api). The
sandbox answers in exactly that shape, with numbers of its own:

- ``coverage.percentage`` is the share of the pixel's events of that name, received in the last
  7 days, that carried the key (one decimal). Keys no event carried are left out, as in Meta's
  examples, which list only keys being sent (*unconfirmed* that Meta never lists a 0).
- ``composite_score`` is **the sandbox's own approximation, not Meta's formula** (Meta says only
  that it looks at which keys are received, their quality and the share of events matched):
  ``10 * (1 - product of (1 - weight * coverage))`` over the keys below, one decimal.
- The identifier names ``email``, ``phone``, ``external_id``, ``ip_address``, ``user_agent``
  and ``fbc`` appear in Meta's example and in answers quoted in public code; the names of the
  other keys (``fbp``, ``first_name``, …) are *guessed*.

The 7-day window is the sandbox's choice (Meta says the score "is calculated in real time").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

# (user_data key, Meta's identifier, the sandbox's weight), most valuable first.
MATCH_KEYS: tuple[tuple[str, str, float], ...] = (
    ("em", "email", 0.45),
    ("ph", "phone", 0.35),
    ("external_id", "external_id", 0.20),
    ("fbc", "fbc", 0.20),
    ("fbp", "fbp", 0.15),
    ("client_ip_address", "ip_address", 0.20),
    ("client_user_agent", "user_agent", 0.10),
    ("fn", "first_name", 0.05),
    ("ln", "last_name", 0.05),
    ("ct", "city", 0.03),
    ("st", "state", 0.03),
    ("zp", "zip", 0.03),
    ("country", "country", 0.03),
    ("db", "date_of_birth", 0.03),
    ("ge", "gender", 0.02),
)
WINDOW_SECONDS = 7 * 24 * 3600


def dataset_quality(received: Iterable[Mapping[str, Any]], *, now: float) -> dict[str, Any]:
    """Meta's answer body ``{"web": [...]}`` for the received events of one pixel.

    ``received`` are the sandbox's records of the pixel's events (``received_at`` in Unix
    seconds and ``event`` as sent); event names come out in order of first arrival.
    """
    since = now - WINDOW_SECONDS
    counts: dict[str, int] = {}
    carried: dict[str, defaultdict[str, int]] = {}
    for record in received:
        if float(record.get("received_at") or 0) < since:
            continue
        event = record.get("event")
        if not isinstance(event, Mapping) or not isinstance(event.get("event_name"), str):
            continue
        name = event["event_name"]
        counts[name] = counts.get(name, 0) + 1
        user_data = event.get("user_data")
        keys = carried.setdefault(name, defaultdict(int))
        for key, _identifier, _weight in MATCH_KEYS:
            if isinstance(user_data, Mapping) and _filled(user_data.get(key)):
                keys[key] += 1
    return {"web": [_entry(name, total, carried[name]) for name, total in counts.items()]}


def _entry(name: str, total: int, carried: Mapping[str, int]) -> dict[str, Any]:
    unmatched = 1.0
    feedback = []
    for key, identifier, weight in MATCH_KEYS:
        share = carried.get(key, 0) / total
        if share <= 0:
            continue
        unmatched *= 1.0 - weight * share
        feedback.append(
            {"identifier": identifier, "coverage": {"percentage": round(100 * share, 1)}}
        )
    return {
        "event_match_quality": {
            "composite_score": round(10 * (1 - unmatched), 1),
            "match_key_feedback": feedback,
        },
        "event_name": name,
    }


def _filled(value: Any) -> bool:
    if isinstance(value, list):
        return any(isinstance(item, str) and item for item in value)
    return isinstance(value, str) and bool(value.strip())
