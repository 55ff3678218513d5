"""Offline and CRM conversions from CSV files: ``imports.import_csv`` and the command (issue 20).

Mixed good and bad rows, each accounted for once; an unreadable row never stops the rest;
re-importing stores nothing twice; the command and the function give the same results; no
plain customer data in what is stored.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from capi_destinations import clock as app_clock
from capi_destinations import imports, retention, tasks
from capi_destinations.models import Destination, Event, EventStatus, ImportRun, ImportStatus
from capi_destinations.routing import EventFilter

pytestmark = pytest.mark.django_db

MAPPING = {
    "event_time": "Date",
    "order_id": "Order",
    "value": "Total",
    "currency": "Currency",
    "email": "Email",
    "phone": "Phone",
    "first_name": "First name",
    "country": "Country",
}

HEADER = "Date,Order,Total,Currency,Email,Phone,First name,Country\n"
GOOD = (
    "2026-11-20 10:15,A-1,49.90,EUR,jane@example.com,+33 6 12 34 56 78,Jane,FR\n"
    '2026-11-21,A-2,"1,234.50",EUR,john@example.com,,John,FR\n'
)
# Line 4: a date that is none; 5: a column short; 6: not UTF-8; 7: 80 days old (over 62);
# 8: a value that is no number; 9: good again.
BAD_THEN_GOOD = (
    b"yesterday,A-3,10,EUR,a@example.com,,Annika,FR\n"
    b"2026-11-22,A-4,10,EUR,b@example.com,Bobby,FR\n"
    b"2026-11-22,A-5,10,EUR,c\xe9@example.com,,Chlo\xe9,FR\n"
    b"2026-09-05,A-6,10,EUR,d@example.com,,Danuta,FR\n"
    b"2026-11-22,A-7,ten,EUR,e@example.com,,Evelina,FR\n"
    b"2026-11-23T08:00:00+01:00,A-8,15,EUR,f@example.com,,Fay,FR\n"
)


def csv_bytes(body: bytes | str = GOOD, header: str = HEADER) -> bytes:
    text = body if isinstance(body, bytes) else body.encode()
    return header.encode() + text


def test_good_rows_are_stored_as_store_purchases_with_hashed_customer_data(
    destination: Destination, clock: Any
) -> None:
    summary = imports.import_csv(destination, io.BytesIO(csv_bytes()), MAPPING)

    assert summary.counts() == {
        "rows_read": 2,
        "stored": 2,
        "duplicates": 0,
        "rejected": 0,
        "suppressed": 0,
    }
    event = Event.objects.get(destination=destination, event_id="order-A-2")
    assert event.event_name == "Purchase"
    assert event.action_source == "physical_store"
    assert event.payload["custom_data"]["value"] == 1234.5
    assert event.payload["custom_data"]["order_id"] == "A-2"
    stored = json.dumps(event.payload)
    assert "john@example.com" not in stored
    assert len(event.payload["user_data"]["em"][0]) == 64


def test_mixed_rows_each_accounted_once_with_line_and_reason(
    destination: Destination, clock: Any
) -> None:
    summary = imports.import_csv(
        destination, io.BytesIO(csv_bytes(GOOD.encode() + BAD_THEN_GOOD)), MAPPING
    )

    assert summary.rows_read == 8
    assert summary.accounted == 8
    assert summary.stored == 3  # lines 2, 3 and 9
    assert summary.rejected == 5
    reasons = {row.line: row.reason for row in summary.rejected_rows}
    assert sorted(reasons) == [4, 5, 6, 7, 8]
    assert "not a date" in reasons[4]
    assert "7 columns where the first line names 8" in reasons[5]
    assert "UTF-8" in reasons[6]
    assert "62 days" in reasons[7]
    assert "not a number" in reasons[8]
    assert Event.objects.filter(destination=destination, event_id="order-A-8").exists()


def test_rejected_rows_keep_no_personal_data(destination: Destination, clock: Any) -> None:
    summary = imports.import_csv(destination, io.BytesIO(csv_bytes(BAD_THEN_GOOD)), MAPPING)

    kept = json.dumps([row.to_dict() for row in summary.rejected_rows])
    for personal in ("a@example.com", "b@example.com", "Annika", "Bobby", "Danuta", "Evelina"):
        assert personal not in kept
    assert summary.rejected_rows[0].columns["order_id"] == "A-3"


def test_reimporting_the_same_file_stores_nothing_twice(
    destination: Destination, clock: Any
) -> None:
    data = csv_bytes(GOOD.encode() + BAD_THEN_GOOD)
    first = imports.import_csv(destination, io.BytesIO(data), MAPPING)
    count = Event.objects.filter(destination=destination).count()

    again = imports.import_csv(destination, io.BytesIO(data), MAPPING)

    assert Event.objects.filter(destination=destination).count() == count
    assert again.stored == 0
    assert again.duplicates == first.stored + 1  # and the too-old row, stored rejected once
    assert again.rejected == first.rejected - 1


def test_without_order_id_the_event_id_comes_from_the_row(
    destination: Destination, clock: Any
) -> None:
    data = (
        b"When,Mail,Amount\n2026-11-20,x@example.com,5 EUR\n2026-11-20,x@example.com,5 EUR\n"
        b"2026-11-20,y@example.com,5 EUR\n"
    )
    mapping = {"event_time": "When", "email": "Mail"}

    summary = imports.import_csv(destination, io.BytesIO(data), mapping, event_name="Lead")
    again = imports.import_csv(destination, io.BytesIO(data), mapping, event_name="Lead")

    assert (summary.stored, summary.duplicates) == (2, 1)  # the identical row is the same sale
    assert (again.stored, again.duplicates) == (0, 3)
    ids = set(Event.objects.filter(destination=destination).values_list("event_id", flat=True))
    assert all(event_id.startswith("row-") and len(event_id) == 36 for event_id in ids)


def test_item_number_tells_lines_of_one_order_apart(destination: Destination, clock: Any) -> None:
    data = b"Date;Order;Item;Mail\n2026-11-20;77;1;a@example.com\n2026-11-20;77;2;a@example.com\n"
    mapping = {"event_time": "Date", "order_id": "Order", "item_number": "Item", "email": "Mail"}

    summary = imports.import_csv(destination, io.BytesIO(data), mapping, event_name="Lead")

    assert summary.stored == 2
    assert set(Event.objects.values_list("event_id", flat=True)) == {"order-77-1", "order-77-2"}


def test_filtered_rows_are_suppressed_with_the_reason(
    make_destination: Callable[..., Destination], clock: Any
) -> None:
    destination = make_destination(event_filter=EventFilter.DENY, event_filter_names="Purchase")

    summary = imports.import_csv(destination, io.BytesIO(csv_bytes()), MAPPING)

    assert summary.suppressed == 2
    assert set(Event.objects.values_list("status", flat=True)) == {EventStatus.SUPPRESSED}


def test_mapped_event_name_and_action_source_win_over_the_defaults(
    destination: Destination, clock: Any
) -> None:
    data = (
        b"time,type,channel,crm\n"
        b"2026-11-23 09:00,Lead,system_generated,C-9\n2026-11-23 09:00,,,C-10\n"
    )
    mapping = {
        "event_time": "time",
        "event_name": "type",
        "action_source": "channel",
        "external_id": "crm",
    }

    imports.import_csv(destination, io.BytesIO(data), mapping, event_name="CompleteRegistration")

    rows = {event.event_name: event.action_source for event in Event.objects.all()}
    assert rows == {"Lead": "system_generated", "CompleteRegistration": "physical_store"}


@pytest.mark.parametrize(
    ("data", "mapping", "message"),
    [
        (b"", MAPPING, "empty"),
        (b"just one column\n1\n", {"event_time": "just one column"}, "one column"),
        (csv_bytes(), {**MAPPING, "shoe_size": "Total"}, "Unknown field"),
        (csv_bytes(), {**MAPPING, "email": "E-mail"}, "no column “E-mail”"),
        (csv_bytes(), {"order_id": "Order"}, "Event time"),
    ],
)
def test_an_unusable_file_or_mapping_is_refused_before_any_row(
    destination: Destination, data: bytes, mapping: dict[str, str], message: str
) -> None:
    with pytest.raises(imports.ImportRefused, match=message):
        imports.import_csv(destination, io.BytesIO(data), mapping)
    assert not Event.objects.exists()


def test_a_path_a_text_stream_and_a_byte_stream_read_alike(
    destination: Destination, clock: Any, tmp_path: Path
) -> None:
    path = tmp_path / "sales.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_bytes())  # Excel's "CSV UTF-8" starts with a BOM

    from_path = imports.import_csv(destination, path, MAPPING)
    from_text = imports.import_csv(destination, io.StringIO(csv_bytes().decode()), MAPPING)

    assert from_path.stored == 2
    assert from_text.duplicates == 2


def test_time_formats(destination: Destination, clock: Any) -> None:
    now = int(clock.now().timestamp())
    data = f"t,o,m\n{now - 3600},1,a@x.com\n{(now - 7200) * 1000},2,a@x.com\n21/11/2026,3,a@x.com\n"
    mapping = {"event_time": "t", "order_id": "o", "email": "m"}

    summary = imports.import_csv(destination, io.BytesIO(data.encode()), mapping, event_name="Lead")
    with_format = imports.import_csv(
        destination,
        io.BytesIO(b"t,o,m\n21/11/2026,3,a@x.com\n"),
        mapping,
        event_name="Lead",
        date_format="%d/%m/%Y",
    )

    assert (summary.stored, summary.rejected) == (2, 1)
    assert with_format.stored == 1
    assert Event.objects.get(event_id="order-3").event_time.day == 21


def test_progress_is_reported_after_each_chunk(destination: Destination, clock: Any) -> None:
    rows = "".join(f"2026-11-20,{n},1,EUR,a@example.com,,,\n" for n in range(25))
    seen: list[tuple[int, int]] = []

    imports.import_csv(
        destination,
        io.BytesIO(csv_bytes(rows)),
        MAPPING,
        chunk_size=10,
        progress=lambda summary, read: seen.append((summary.stored, read)),
    )

    assert [stored for stored, _ in seen] == [10, 20, 25]


def test_guess_mapping_from_remembered_then_header_words() -> None:
    header = ["Date", "Order #", "Total", "E-mail", "Shop"]

    guessed = imports.guess_mapping(header, remembered={"value": "Shop", "phone": "Gone"})

    assert guessed == {
        "value": "Shop",
        "event_time": "Date",
        "order_id": "Order #",
        "email": "E-mail",
    }


def test_preview_shows_diagnostics_and_stores_nothing(destination: Destination, clock: Any) -> None:
    rows = imports.preview_csv(
        destination, io.BytesIO(csv_bytes(GOOD.encode() + BAD_THEN_GOOD)), MAPPING, rows=6
    )

    assert [row.line for row in rows] == [2, 3, 4, 5, 6, 7]
    assert rows[0].customer_fields == ["Email", "Phone", "First name", "Country"]
    assert "not a date" in rows[2].error
    assert any(finding.code == "event_time_too_old" for finding in rows[5].diagnostics)
    assert not Event.objects.exists()


# --- the command gives the function's results -----------------------------------------------


def test_the_command_gives_the_same_results_as_the_function(
    make_destination: Callable[..., Destination], clock: Any, tmp_path: Path
) -> None:
    path = tmp_path / "store.csv"
    path.write_bytes(csv_bytes(GOOD.encode() + BAD_THEN_GOOD))
    by_function = make_destination()
    by_command = make_destination()
    summary = imports.import_csv(by_function, path, MAPPING)
    out = io.StringIO()

    call_command(
        "capi_import_csv",
        str(by_command.code),
        str(path),
        *(f"--map={field}={column}" for field, column in MAPPING.items()),
        "--json",
        stdout=out,
    )

    printed = json.loads(out.getvalue())
    assert {key: printed[key] for key in summary.counts()} == summary.counts()
    assert printed["rejected_rows"] == [row.to_dict() for row in summary.rejected_rows]
    run = ImportRun.objects.get(destination=by_command)
    assert run.status == ImportStatus.DONE
    assert (run.rows_read, run.stored, run.rejected) == (8, 3, 5)
    assert run.file_name == "store.csv"

    def stored(destination: Destination) -> set[tuple[str, str]]:
        return set(Event.objects.filter(destination=destination).values_list("event_id", "status"))

    assert stored(by_function) == stored(by_command)


def test_the_command_refuses_a_bad_mapping_clearly(
    destination: Destination, tmp_path: Path
) -> None:
    path = tmp_path / "store.csv"
    path.write_bytes(csv_bytes())

    with pytest.raises(CommandError, match="no column “Mail”"):
        call_command(
            "capi_import_csv",
            str(destination.code),
            str(path),
            "--map=email=Mail",
            "--map=event_time=Date",
        )
    with pytest.raises(CommandError, match="field=column"):
        call_command("capi_import_csv", str(destination.code), str(path), "--map=email")


def test_the_command_remembers_the_mapping_for_the_page(
    destination: Destination, clock: Any, tmp_path: Path
) -> None:
    path = tmp_path / "store.csv"
    path.write_bytes(csv_bytes())
    call_command(
        "capi_import_csv",
        str(destination.code),
        str(path),
        *(f"--map={field}={column}" for field, column in MAPPING.items()),
        stdout=io.StringIO(),
    )

    assert imports.remembered_mapping(destination) == MAPPING


def test_a_queued_run_imports_once_and_removes_its_file(
    destination: Destination, clock: Any, settings: Any, tmp_path: Path
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "IMPORT_DIRECTORY": str(tmp_path)}
    data = csv_bytes()
    run = ImportRun.objects.create(
        destination=destination,
        file_name="a.csv",
        file_size=len(data),
        mapping=MAPPING,
        status=ImportStatus.QUEUED,
    )
    imports.save_upload(run, [data])

    imports.run_import(run.pk)
    twice = imports.run_import(run.pk)

    run.refresh_from_db()
    assert (run.status, run.stored, run.percent) == (ImportStatus.DONE, 2, 100)
    assert twice is None
    assert not imports.upload_path(run).exists()


def test_a_column_mapped_wrongly_brings_no_email_into_the_report(
    destination: Destination, clock: Any
) -> None:
    # The email column mapped as the event time: every row is rejected, no address is kept.
    summary = imports.import_csv(
        destination, io.BytesIO(csv_bytes()), {"event_time": "Email", "order_id": "Order"}
    )

    assert summary.rejected == 2
    kept = json.dumps([row.to_dict() for row in summary.rejected_rows])
    assert "@" not in kept
    assert "not kept: looks like an email address" in kept


def test_a_row_with_shifted_columns_keeps_none_of_them(
    destination: Destination, clock: Any
) -> None:
    data = csv_bytes("2026-11-20,A-1,jane@example.com,+33 6 12 34 56 78\n")

    summary = imports.import_csv(destination, io.BytesIO(data), MAPPING)

    assert summary.rejected_rows[0].columns == {}


def test_uploads_left_at_the_mapping_step_are_forgotten_after_a_day(
    destination: Destination, clock: Any, settings: Any, tmp_path: Path
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "IMPORT_DIRECTORY": str(tmp_path)}
    left = ImportRun.objects.create(destination=destination, file_name="left.csv")
    imports.save_upload(left, [csv_bytes()])
    clock.advance(timedelta(hours=23))
    assert imports.forget_abandoned_uploads() == 0

    clock.advance(timedelta(hours=2))
    fresh = ImportRun.objects.create(destination=destination, file_name="fresh.csv")

    assert imports.forget_abandoned_uploads() == 1
    assert not imports.upload_path(left).exists()
    assert list(ImportRun.objects.all()) == [fresh]


def many_rows(count: int) -> bytes:
    """``count`` sales, every 7th with a date that is none."""
    lines = [
        f"{'someday' if n % 7 == 3 else '2026-11-20 10:00'},S-{n},5,EUR,s{n}@example.com,,,FR\n"
        for n in range(count)
    ]
    return csv_bytes("".join(lines))


def test_an_import_stopped_at_its_deadline_resumes_where_it_stopped(
    destination: Destination, clock: Any
) -> None:
    data = many_rows(25)

    first = imports.import_csv(destination, io.BytesIO(data), MAPPING, chunk_size=10, deadline=0)
    assert (first.complete, first.rows_read, first.accounted) == (False, 10, 10)
    second = imports.import_csv(
        destination, io.BytesIO(data), MAPPING, chunk_size=10, deadline=0, resume=first
    )
    assert (second.complete, second.rows_read) == (False, 20)
    last = imports.import_csv(destination, io.BytesIO(data), MAPPING, chunk_size=10, resume=second)

    assert last.complete
    assert last.counts() == {
        "rows_read": 25,
        "stored": 21,
        "duplicates": 0,
        "rejected": 4,
        "suppressed": 0,
    }
    assert [row.line for row in last.rejected_rows] == [5, 12, 19, 26]
    assert Event.objects.filter(destination=destination).count() == 21


def test_a_background_import_in_slices_gives_the_functions_results(
    make_destination: Callable[..., Destination], clock: Any, settings: Any, tmp_path: Path
) -> None:
    # Each task imports one chunk of 500 rows, then queues the rest (django-q2's sync mode here
    # runs the next slice at once).
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "IMPORT_DIRECTORY": str(tmp_path),
        "IMPORT_TASK_SECONDS": 0,
    }
    data = many_rows(1_200)
    by_task, by_function = make_destination(), make_destination()
    run = ImportRun.objects.create(
        destination=by_task, file_size=len(data), mapping=MAPPING, status=ImportStatus.QUEUED
    )
    imports.save_upload(run, [data])

    imports.run_import(run.pk)

    run.refresh_from_db()
    expected = imports.import_csv(by_function, io.BytesIO(data), MAPPING)
    assert run.status == ImportStatus.DONE
    assert {name: getattr(run, name) for name in expected.counts()} == expected.counts()
    assert run.rejected_rows == [row.to_dict() for row in expected.rejected_rows]
    assert Event.objects.filter(destination=by_task).count() == expected.stored
    assert not imports.upload_path(run).exists()


def test_retention_purges_old_finished_runs_but_keeps_each_destinations_latest_and_live_ones(
    destination: Destination, make_destination: Callable[..., Destination], clock: Any
) -> None:
    other = make_destination()

    def run(target: Destination, status: str) -> ImportRun:
        return ImportRun.objects.create(destination=target, mapping=MAPPING, status=status)

    old_done = run(destination, ImportStatus.DONE)
    old_failed = run(destination, ImportStatus.FAILED)
    stuck_running = run(destination, ImportStatus.RUNNING)
    others_only = run(other, ImportStatus.DONE)
    app_clock.advance(timedelta(days=10))
    latest = run(destination, ImportStatus.DONE)
    app_clock.advance(timedelta(days=25))

    purged = retention.purge_old_records()

    assert purged["import_runs"] == 2
    assert set(ImportRun.objects.values_list("pk", flat=True)) == {
        stuck_running.pk,
        others_only.pk,
        latest.pk,
    }
    assert not ImportRun.objects.filter(pk__in=[old_done.pk, old_failed.pk]).exists()
    assert imports.remembered_mapping(other) == MAPPING


def test_a_run_whose_worker_died_mid_slice_is_resumed_once_its_lease_runs_out(
    make_destination: Callable[..., Destination], clock: Any, settings: Any, tmp_path: Path
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "IMPORT_DIRECTORY": str(tmp_path)}
    data = many_rows(1_200)
    destination, by_function = make_destination(), make_destination()
    run = ImportRun.objects.create(
        destination=destination, file_size=len(data), mapping=MAPPING, status=ImportStatus.QUEUED
    )
    imports.save_upload(run, [data])
    # What a worker that died leaves: it claimed the run and recorded its first chunk of 500
    # rows, and died before saving that chunk's progress.
    imports.import_csv(destination, io.BytesIO(data), MAPPING, deadline=0)
    ImportRun.objects.filter(pk=run.pk).update(
        status=ImportStatus.RUNNING,
        lease_token=uuid.uuid4(),
        lease_expires_at=app_clock.now() + imports.IMPORT_LEASE,
    )

    app_clock.advance(imports.IMPORT_LEASE - timedelta(seconds=1))
    assert tasks.resume_stalled_imports() == 0
    assert not ImportRun.objects.get(pk=run.pk).is_stalled

    app_clock.advance(timedelta(seconds=2))
    assert ImportRun.objects.get(pk=run.pk).is_stalled
    # django-q2's sync mode (the test settings) runs the queued slice at once.
    assert tasks.resume_stalled_imports() == 1

    run.refresh_from_db()
    expected = imports.import_csv(by_function, io.BytesIO(data), MAPPING)
    assert run.status == ImportStatus.DONE
    assert run.rows_read == 1_200
    assert run.stored + run.duplicates == expected.stored
    assert run.duplicates > 0
    assert run.stored + run.duplicates + run.rejected + run.suppressed == run.rows_read
    assert Event.objects.filter(destination=destination).count() == expected.stored
    assert (run.lease_token, run.lease_expires_at) == (None, None)
    assert not imports.upload_path(run).exists()
    assert tasks.resume_stalled_imports() == 0


def test_a_worker_that_lost_its_lease_writes_nothing_and_keeps_the_file(
    destination: Destination, clock: Any, settings: Any, tmp_path: Path
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "IMPORT_DIRECTORY": str(tmp_path)}
    slow_worker = ImportRun.objects.create(
        destination=destination,
        mapping=MAPPING,
        status=ImportStatus.RUNNING,
        lease_token=uuid.uuid4(),
        lease_expires_at=app_clock.now() + imports.IMPORT_LEASE,
    )
    imports.save_upload(slow_worker, [csv_bytes()])
    app_clock.advance(imports.IMPORT_LEASE * 2)
    assert imports.resume_stalled_runs() == 1  # another worker's slice now holds the run

    assert not slow_worker.finish({"rows_read": 2, "stored": 2}, [])
    assert not slow_worker.pause({"rows_read": 1}, [])
    assert not slow_worker.finish_failed("late")

    stored = ImportRun.objects.get(pk=slow_worker.pk)
    assert stored.status == ImportStatus.DONE  # finished by the slice the resume queued
    assert stored.error == ""
    assert stored.stored == 2
