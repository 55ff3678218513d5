"""Normalize + hash user data: ``normalize.py`` against Meta's official SDK, side by side.

Both sides get the same varied records (``bench/data.py``). Our side is what ``track_many``
calls for each event, ``normalize_user_data_report`` (the user data and its diagnostics). The
SDK side is what an integration using ``facebook-business`` runs: build a ``UserData`` from
the record (aliases mapped to its arguments, gender as its ``Gender`` enum), call
``UserData.normalize()``, and hash ``external_id`` itself because the SDK sends it raw while
Meta recommends hashing it.
Goal: identical hashes, and at least 3x the SDK's records per second.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench.data import user_data_records
from bench.harness import Result, alternate, rate_text, sized

GOAL_RATIO = 3.0
Normalizer = Callable[[Mapping[str, Any]], dict[str, Any]]
CHUNK = 1000

# Input key (Meta's or the alias) → UserData constructor argument; lists for hashed keys.
_SDK_LIST_ARGUMENTS = {
    "em": "emails",
    "email": "emails",
    "ph": "phones",
    "phone": "phones",
    "fn": "first_names",
    "first_name": "first_names",
    "ln": "last_names",
    "last_name": "last_names",
    "db": "dates_of_birth",
    "date_of_birth": "dates_of_birth",
    "ct": "cities",
    "city": "cities",
    "st": "states",
    "state": "states",
    "zp": "zip_codes",
    "zip": "zip_codes",
    "country": "country_codes",
    "external_id": "external_ids",
    "ge": "genders",
    "gender": "genders",
}
_SDK_SCALAR_ARGUMENTS = {
    "client_ip_address": "client_ip_address",
    "ip": "client_ip_address",
    "client_user_agent": "client_user_agent",
    "user_agent": "client_user_agent",
    "fbp": "fbp",
    "fbc": "fbc",
}
_HASHED = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")


def sdk_normalizer() -> Normalizer:
    """The official SDK's normalization of one record, as an integration would call it."""
    from facebook_business.adobjects.serverside.gender import Gender
    from facebook_business.adobjects.serverside.user_data import UserData

    genders = {"m": Gender.MALE, "male": Gender.MALE, "f": Gender.FEMALE, "female": Gender.FEMALE}

    def normalize(record: Mapping[str, Any]) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        for key, value in record.items():
            values = value if isinstance(value, list) else [value]
            if key in _SDK_LIST_ARGUMENTS:
                name = _SDK_LIST_ARGUMENTS[key]
                if name == "genders":
                    values = [genders[item.strip().lower()] for item in values]
                arguments[name] = values
            else:
                arguments[_SDK_SCALAR_ARGUMENTS[key]] = values[0].strip()
        normalized = UserData(**arguments).normalize()
        external_ids = normalized.get("external_id")
        if external_ids:
            normalized["external_id"] = [
                hashlib.sha256(item.encode("utf-8")).hexdigest() for item in external_ids
            ]
        return normalized

    return normalize


def comparable(user_data: Mapping[str, Any]) -> dict[str, Any]:
    """Output in a form where order does not matter (the SDK deduplicates through a set)."""
    return {key: frozenset(value) if key in _HASHED else value for key, value in user_data.items()}


def run(mode: str, database: str = "-") -> Result:
    """Time both sides over the same records and check that every hash is the same.

    A first, untimed pass runs both sides over every record and compares them. Then the timed
    rounds run each side over the records in chunks of 1,000 (as ``track_many`` does), and
    after each chunk, off the clock, compare the chunk's output with the first pass's: every
    output of every timed round is checked. Holding all 100,000 outputs at once instead
    would make the garbage collector, not normalization, the thing measured.
    """
    from capi_destinations.normalize import normalize_user_data, normalize_user_data_report

    count = sized(mode, full=100_000, quick=20_000, smoke=300)
    rounds = sized(mode, full=5, quick=3, smoke=1)
    records = user_data_records(count)
    sdk_normalize = sdk_normalizer()

    expected = [comparable(normalize_user_data(record)) for record in records]
    from_sdk = [comparable(sdk_normalize(record)) for record in records]
    mismatches = [index for index in range(count) if expected[index] != from_sdk[index]]
    hashes = sum(
        len(value) for output in expected for key, value in output.items() if key in _HASHED
    )
    del from_sdk
    # The inputs and the reference stay alive all along: keep them out of the collector's
    # way, for both sides alike.
    gc.collect()
    gc.freeze()

    chunks = [range(start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]
    wrong: dict[str, int] = {"normalize.py": 0, "official SDK": 0}

    def timed(
        name: str, normalize: Callable[[Mapping[str, Any]], Any], read: Callable[[Any], Any]
    ) -> tuple[int, float, float]:
        seconds = cpu_seconds = 0.0
        for chunk in chunks:
            started, started_cpu = time.perf_counter(), time.process_time()
            outputs = [normalize(records[index]) for index in chunk]
            seconds += time.perf_counter() - started
            cpu_seconds += time.process_time() - started_cpu
            wrong[name] += sum(
                comparable(read(output)) != expected[index]
                for index, output in zip(chunk, outputs, strict=True)
            )
        return count, seconds, cpu_seconds

    timings = alternate(
        {
            # What track_many calls per event; its user_data is what is compared.
            "normalize.py": lambda _round: timed(
                "normalize.py", normalize_user_data_report, lambda report: report.user_data
            ),
            "official SDK": lambda _round: timed("official SDK", sdk_normalize, lambda out: out),
        },
        rounds=rounds,
    )
    gc.unfreeze()
    # Per CPU second: single-threaded work on a shared machine, where a neighbour taking the
    # CPU away would otherwise count against whichever side it happened to hit.
    ours_rate = timings["normalize.py"].median_cpu_rate
    sdk_rate = timings["official SDK"].median_cpu_rate
    ratio = ours_rate / sdk_rate
    wall_ratio = timings["normalize.py"].median_rate / timings["official SDK"].median_rate

    result = Result(
        row="normalize",
        title="normalize + hash user data",
        database="-",
        mode=mode,
        summary=(
            f"{rate_text(ours_rate, 'records')} vs SDK {rate_text(sdk_rate, 'records')} "
            f"(per CPU second): **{ratio:.1f}×** ({wall_ratio:.1f}× by wall clock)"
        ),
        details={
            "records": count,
            "rounds": rounds,
            "timings": {name: timing.to_dict() for name, timing in timings.items()},
        },
    )
    result.check(
        "identical hashes",
        not mismatches,
        f"{count:,} records, {hashes:,} hashes; {len(mismatches)} differ from the SDK's"
        + (f" (first: #{mismatches[0]}: {records[mismatches[0]]!r})" if mismatches else ""),
    )
    result.check(
        "every timed output checked",
        not any(wrong.values()),
        f"{rounds} rounds × {count:,} records per side compared with the first pass; "
        f"{sum(wrong.values())} differ",
    )
    result.goal(
        "records/s vs the SDK", f"≥ {GOAL_RATIO:.0f}×", f"{ratio:.2f}×", ratio >= GOAL_RATIO
    )
    return result
