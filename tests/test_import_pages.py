"""The import pages: upload, map, preview, import in the background, results (issue 20).

Editors only; outsiders get 404 and viewers 403; a file too large or not a CSV is refused with a
clear error; the background task (django-q2 in sync mode here) gives the function's results.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from capi_destinations import imports
from capi_destinations.models import Destination, Event, ImportRun, ImportStatus, Role, Tenant
from tests.test_imports import BAD_THEN_GOOD, GOOD, HEADER, MAPPING, csv_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def upload_directory(settings: Any, tmp_path: Path, use_sandbox: Any) -> Path:
    # The sandbox too: imported events are dispatched at once (django-q2's sync mode), never
    # to graph.facebook.com.
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "IMPORT_DIRECTORY": str(tmp_path / "uploads"),
    }
    return tmp_path / "uploads"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def upload_url(destination: Destination) -> str:
    return reverse("capi_destinations:import_upload", kwargs={"code": destination.code})


def run_url(run: ImportRun, name: str = "import_run") -> str:
    return reverse(
        f"capi_destinations:{name}", kwargs={"code": run.destination.code, "run": run.code}
    )


def mapping_post(mapping: dict[str, str] = MAPPING, **extra: str) -> dict[str, str]:
    data = {f"map_{field}": column for field, column in mapping.items()}
    data.update({"event_name": "Purchase", "action_source": "physical_store", "date_format": ""})
    data.update(extra)
    return data


def upload(client: Client, destination: Destination, data: bytes, name: str = "sales.csv") -> Any:
    return client.post(upload_url(destination), {"file": SimpleUploadedFile(name, data)})


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR)


def test_the_destination_page_links_editors_to_the_import(
    destination: Destination, editor: Any, make_user: Callable[..., Any], tenant: Tenant
) -> None:
    page = reverse("capi_destinations:destination", kwargs={"code": destination.code})

    assert 'data-testid="import-conversions"' in logged_in(editor).get(page).text
    viewer = make_user(tenant, Role.VIEWER)
    assert 'data-testid="import-conversions"' not in logged_in(viewer).get(page).text


def test_upload_map_preview_import_and_results(
    destination: Destination, editor: Any, clock: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = logged_in(editor)
    data = csv_bytes(GOOD.encode() + BAD_THEN_GOOD)

    response = upload(client, destination, data)
    run = ImportRun.objects.get(destination=destination)
    assert response.status_code == 302
    assert response["Location"] == run_url(run)
    assert run.status == ImportStatus.UPLOADED
    assert run.file_size == len(data)

    mapping_page = client.get(run_url(run))
    # Pre-filled from the column names: "Date" is the event time, "Email" the email.
    assert '<option value="Date" selected>' in mapping_page.text
    assert '<option value="Email" selected>' in mapping_page.text

    preview = client.post(run_url(run, "import_preview"), mapping_post())
    assert preview.text.count('data-testid="import-preview-row"') == 5
    assert "not a date" in preview.text
    assert "jane@example.com" not in preview.text
    assert not Event.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(run_url(run), mapping_post())
    assert started.status_code == 302

    run.refresh_from_db()
    function = imports.import_csv(destination, io.BytesIO(data), MAPPING)
    assert run.status == ImportStatus.DONE
    assert (run.rows_read, run.stored, run.rejected) == (8, 3, 5)
    # The page's run recorded the same events first (three stored, one stored rejected: too old).
    assert (function.stored, function.duplicates) == (0, 4)
    assert not imports.upload_path(run).exists()

    results = client.get(run_url(run))
    assert 'data-status="done"' in results.text
    assert results.text.count('data-testid="import-rejected-row"') == 5

    download = client.get(run_url(run, "import_rejected_csv"))
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert rows[0][:2] == ["line", "reason"]
    assert [row[0] for row in rows[1:]] == ["4", "5", "6", "7", "8"]
    assert "a@example.com" not in str(rows)


def test_the_next_import_remembers_the_mapping(
    destination: Destination, editor: Any, clock: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = logged_in(editor)
    odd = {"event_time": "Date", "order_id": "Order", "value": "Total", "external_id": "Phone"}
    upload(client, destination, csv_bytes())
    first = ImportRun.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(run_url(first), mapping_post(odd, currency="EUR"))

    upload(client, destination, csv_bytes())
    second = ImportRun.objects.exclude(pk=first.pk).get()
    page = client.get(run_url(second)).text

    assert 'name="map_external_id" data-testid="map-external_id" id="id_map_external_id">' in page
    assert page.count('<option value="Phone" selected>') == 1


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"PK\x03\x04\x14\x00 workbook", "sales.xlsx", "not a CSV file"),
        (b"%PDF-1.7", "sales.csv", "not a CSV file"),
        (b"", "empty.csv", "empty"),
        (b"one column only\n1\n", "one.csv", "one column"),
    ],
)
def test_a_file_that_is_no_csv_is_refused_clearly(
    destination: Destination, editor: Any, data: bytes, name: str, message: str
) -> None:
    response = upload(logged_in(editor), destination, data, name)

    assert response.status_code == 200
    assert message in response.text
    assert not ImportRun.objects.exists()


def test_a_file_over_the_size_limit_is_refused(
    destination: Destination, editor: Any, settings: Any, upload_directory: Path
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "IMPORT_MAX_BYTES": 100}

    response = upload(logged_in(editor), destination, csv_bytes())

    assert "the largest accepted is" in response.text
    assert not ImportRun.objects.exists()
    assert not upload_directory.exists() or not any(upload_directory.iterdir())


def test_a_mapping_without_event_time_is_refused(destination: Destination, editor: Any) -> None:
    client = logged_in(editor)
    upload(client, destination, csv_bytes())
    run = ImportRun.objects.get()

    response = client.post(run_url(run), mapping_post({"email": "Email"}))

    assert response.status_code == 200
    assert 'data-testid="error-map_event_time"' in response.text
    assert ImportRun.objects.get().status == ImportStatus.UPLOADED


def test_one_column_for_two_fields_is_refused(destination: Destination, editor: Any) -> None:
    client = logged_in(editor)
    upload(client, destination, csv_bytes())
    run = ImportRun.objects.get()

    response = client.post(run_url(run), mapping_post({**MAPPING, "external_id": "Email"}))

    assert "Each column can hold one field: Email." in response.text


def test_progress_fragment_polls_until_done(
    destination: Destination, editor: Any, clock: Any
) -> None:
    client = logged_in(editor)
    upload(client, destination, csv_bytes())
    run = ImportRun.objects.get()
    ImportRun.objects.filter(pk=run.pk).update(
        status=ImportStatus.RUNNING, bytes_read=run.file_size // 2, rows_read=1, stored=1
    )

    fragment = client.get(run_url(run, "import_progress"), headers={"HX-Request": "true"})

    assert 'hx-trigger="every 1s"' in fragment.text
    assert 'value="50"' in fragment.text or 'value="49"' in fragment.text


# --- who may import ------------------------------------------------------------------------


@pytest.fixture
def run(destination: Destination, clock: Any) -> ImportRun:
    return ImportRun.objects.create(
        destination=destination,
        file_name="sales.csv",
        mapping=MAPPING,
        status=ImportStatus.DONE,
        rejected=1,
        rejected_rows=[{"line": 2, "reason": "No event time.", "columns": {}}],
    )


def all_urls(run: ImportRun) -> list[str]:
    return [
        upload_url(run.destination),
        run_url(run),
        run_url(run, "import_progress"),
        run_url(run, "import_rejected_csv"),
    ]


def test_viewers_may_not_import(
    run: ImportRun, make_user: Callable[..., Any], tenant: Tenant
) -> None:
    client = logged_in(make_user(tenant, Role.VIEWER))

    assert {client.get(url).status_code for url in all_urls(run)} == {403}
    assert upload(client, run.destination, csv_bytes()).status_code == 403
    assert client.post(run_url(run, "import_preview"), mapping_post()).status_code == 403
    assert ImportRun.objects.count() == 1


def test_outsiders_get_404(
    run: ImportRun, make_user: Callable[..., Any], other_tenant: Tenant
) -> None:
    client = logged_in(make_user(other_tenant, Role.ADMIN))

    assert {client.get(url).status_code for url in all_urls(run)} == {404}
    assert upload(client, run.destination, csv_bytes()).status_code == 404


def test_a_run_is_found_only_under_its_own_destination(
    run: ImportRun, editor: Any, make_destination: Callable[..., Destination]
) -> None:
    other = make_destination(name="Second pixel")
    url = reverse("capi_destinations:import_run", kwargs={"code": other.code, "run": run.code})

    assert logged_in(editor).get(url).status_code == 404


def test_header_only_file_imports_nothing(
    destination: Destination, editor: Any, clock: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = logged_in(editor)
    upload(client, destination, HEADER.encode())
    run = ImportRun.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(run_url(run), mapping_post())

    run.refresh_from_db()
    assert (run.status, run.rows_read, run.stored) == (ImportStatus.DONE, 0, 0)


def test_a_queued_import_no_worker_took_says_so(
    destination: Destination, editor: Any, clock: Any
) -> None:
    run = ImportRun.objects.create(
        destination=destination, file_name="a.csv", status=ImportStatus.QUEUED
    )
    client = logged_in(editor)
    assert 'data-testid="import-waiting"' not in client.get(run_url(run)).text

    clock.advance(timedelta(minutes=2))

    assert "is manage.py qcluster running?" in client.get(run_url(run)).text.replace(
        "<code>", ""
    ).replace("</code>", "")


def test_a_run_whose_worker_died_says_it_continues_by_itself(
    destination: Destination, editor: Any, clock: Any
) -> None:
    run = ImportRun.objects.create(
        destination=destination,
        file_name="a.csv",
        status=ImportStatus.RUNNING,
        lease_token=uuid.uuid4(),
        lease_expires_at=clock.now() + timedelta(minutes=5),
    )
    client = logged_in(editor)
    assert 'data-testid="import-stalled"' not in client.get(run_url(run)).text

    clock.advance(timedelta(minutes=6))

    page = client.get(run_url(run)).text
    assert 'data-testid="import-stalled"' in page
    assert "continues by itself within five minutes" in page
