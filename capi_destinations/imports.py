"""Offline and CRM conversions from a CSV file: ``import_csv()`` and the runs the page shows.

Each row becomes an event recorded through :func:`capi_destinations.ingest.track_many`, so an
imported sale gets what every event gets: normalization and hashing, diagnostics (Meta's
windows: 62 days for ``physical_store``, 7 for the rest), the consent policy, the destination's
filters and the client's exclusions (``suppressed`` with the reason), exactly-once delivery.

The file is streamed: one chunk of ``chunk_size`` rows is in memory at a time, whatever its
length. A row that cannot be read (not UTF-8, the wrong number of columns, a date or value
that is not one) is reported with its line number and reason and never stops the rest.

Re-importing a file stores nothing twice, because every row gets a stable ``event_id``:

- the mapped ``event_id`` column, if there is one;
- else ``order-<order_id>`` (``order-<order_id>-<item_number>`` when an item number is
  mapped; Meta deduplicates on ``event_name`` + ``event_id``, docs/META.md), and a rule written as
  ``event_id=f"order-{pk}"`` gives the same id for the same order;
- else ``row-<digest>``: a SHA-256 of the whole row's cells (so two identical rows are one
  conversion).

What a rejected-row report keeps: the line number, the reason, and only the non-personal
fields of the row (event name and time, order id, item number, value, currency, action source,
event id). Email, phone, names, address and external id are never stored anywhere: the events
hold them hashed, the report not at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, cast

from django.db import transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.views.decorators.debug import sensitive_variables

from capi_destinations import clock, diagnostics, ingest, queueing
from capi_destinations.conf import app_settings
from capi_destinations.findings import Diagnostic
from capi_destinations.models import Destination, ImportRun, ImportStatus

__all__ = [
    "FIELDS",
    "PERSONAL_FIELDS",
    "ImportRefused",
    "ImportSummary",
    "PreviewRow",
    "RejectedRow",
    "guess_mapping",
    "import_csv",
    "preview_csv",
    "read_header",
    "remembered_mapping",
    "run_import",
]

#: The fields a column can be mapped to, with the label the page shows.
FIELDS: dict[str, str] = {
    "event_name": "Event name",
    "event_time": "Event time",
    "order_id": "Order ID",
    "item_number": "Item number",
    "value": "Value",
    "currency": "Currency",
    "email": "Email",
    "phone": "Phone",
    "first_name": "First name",
    "last_name": "Last name",
    "city": "City",
    "state": "State",
    "zip": "Zip / postal code",
    "country": "Country",
    "date_of_birth": "Date of birth",
    "external_id": "External ID (CRM customer)",
    "action_source": "Action source",
    "event_id": "Event ID",
}

#: Customer information: hashed into the event's user_data, never kept in a report.
PERSONAL_FIELDS: dict[str, str] = {
    "email": "em",
    "phone": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "country": "country",
    "date_of_birth": "db",
    "external_id": "external_id",
}

#: What a rejected-row report keeps of the row (nothing that names a person).
REPORTED_FIELDS = (
    "event_name",
    "event_time",
    "order_id",
    "item_number",
    "value",
    "currency",
    "action_source",
    "event_id",
)

DEFAULT_EVENT_NAME = "Purchase"
DEFAULT_ACTION_SOURCE = diagnostics.STORE_ACTION_SOURCE
CHUNK_SIZE = 500
#: An upload left at the mapping step this long is deleted (see forget_abandoned_uploads).
ABANDONED_AFTER = timedelta(days=1)
#: A running slice renews its lease after every chunk (seconds of work); a run whose worker
#: has not renewed it for this long is taken to be dead and queued again
#: (:func:`resume_stalled_runs`).
IMPORT_LEASE = timedelta(minutes=5)

# Header words that say which field a column holds (compared without case, spaces, _ or -).
_HEADER_WORDS: dict[str, tuple[str, ...]] = {
    "event_name": ("eventname", "event", "conversion", "conversiontype"),
    "event_time": ("eventtime", "time", "date", "datetime", "timestamp", "orderdate", "saledate"),
    "order_id": ("orderid", "order", "ordernumber", "orderno", "transactionid", "receipt"),
    "item_number": ("itemnumber", "item", "lineitem"),
    "value": ("value", "amount", "total", "revenue", "price", "ordertotal"),
    "currency": ("currency", "currencycode"),
    "email": ("email", "emailaddress", "mail", "em"),
    "phone": ("phone", "phonenumber", "mobile", "telephone", "ph"),
    "first_name": ("firstname", "givenname", "fn"),
    "last_name": ("lastname", "surname", "familyname", "ln"),
    "city": ("city", "town", "ct"),
    "state": ("state", "region", "province", "st"),
    "zip": ("zip", "zipcode", "postcode", "postalcode", "zp"),
    "country": ("country", "countrycode"),
    "date_of_birth": ("dateofbirth", "birthdate", "dob", "birthday", "db"),
    "external_id": ("externalid", "customerid", "crmid", "clientid", "contactid"),
    "action_source": ("actionsource",),
    "event_id": ("eventid",),
}


class ImportRefused(ValueError):
    """The file or the mapping cannot be imported at all (no row was read); the message says why."""


@dataclass(frozen=True)
class RejectedRow:
    """A row that was not recorded for sending: its line, the reason, its non-personal fields."""

    line: int
    reason: str
    columns: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as an import run keeps it."""
        return {"line": self.line, "reason": self.reason, "columns": self.columns}


@dataclass
class ImportSummary:
    """What became of a file's rows: each row read is counted exactly once among the others.

    ``rejected_rows`` keeps the first ``IMPORT_REJECTED_ROWS_KEPT`` rejected rows (the
    ``rejected`` count has them all).
    """

    rows_read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    suppressed: int = 0
    rejected_rows: list[RejectedRow] = field(default_factory=list)
    #: False when ``import_csv`` stopped at its ``deadline`` with rows left to read.
    complete: bool = True

    @property
    def accounted(self) -> int:
        """Rows stored, duplicate, rejected or suppressed: always ``rows_read`` once done."""
        return self.stored + self.duplicates + self.rejected + self.suppressed

    def counts(self) -> dict[str, int]:
        """The counters alone (as the command prints them and a run stores them)."""
        return {
            "rows_read": self.rows_read,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "suppressed": self.suppressed,
        }

    def reject(self, line: int, reason: str, columns: dict[str, str]) -> None:
        self.rejected += 1
        if len(self.rejected_rows) < int(app_settings.IMPORT_REJECTED_ROWS_KEPT):
            self.rejected_rows.append(RejectedRow(line, reason, columns))


@dataclass(frozen=True)
class PreviewRow:
    """One of the first rows as it would be recorded, with its diagnostics (nothing stored)."""

    line: int
    columns: dict[str, str]
    customer_fields: list[str]
    diagnostics: list[Diagnostic]
    error: str = ""


Source = str | os.PathLike[str] | IO[bytes] | IO[str]


# --- the public functions -------------------------------------------------------------------


def read_header(source: Source) -> list[str]:
    """The column names in the file's first line; ``ImportRefused`` if it has none."""
    with _open(source) as text:
        header, _ = _header_and_reader(text)
    return header


def guess_mapping(header: Iterable[str], remembered: Mapping[str, str] | None = None) -> dict:
    """A mapping pre-filled from ``remembered`` (where the column still exists) and the header."""
    columns = list(header)
    mapping: dict[str, str] = {}
    for field_name, column in (remembered or {}).items():
        if field_name in FIELDS and column in columns:
            mapping[field_name] = column
    taken = set(mapping.values())
    for column in columns:
        word = "".join(ch for ch in column.lower() if ch.isalnum())
        for field_name, words in _HEADER_WORDS.items():
            if field_name not in mapping and column not in taken and word in words:
                mapping[field_name] = column
                taken.add(column)
                break
    return mapping


def remembered_mapping(destination: Destination) -> dict[str, str]:
    """The mapping of the destination's latest import that got past mapping (or none)."""
    latest = (
        ImportRun.objects.filter(destination=destination)
        .exclude(status=ImportStatus.UPLOADED)
        .order_by("-created_at", "-id")
        .values_list("mapping", flat=True)
        .first()
    )
    return dict(latest) if isinstance(latest, dict) else {}


# Customer data passes through this frame and the ones it calls.
@sensitive_variables()
def import_csv(
    destination: Destination,
    source: Source,
    mapping: Mapping[str, str],
    *,
    event_name: str = DEFAULT_EVENT_NAME,
    action_source: str = DEFAULT_ACTION_SOURCE,
    date_format: str = "",
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[ImportSummary, int], None] | None = None,
    resume: ImportSummary | None = None,
    deadline: float | None = None,
) -> ImportSummary:
    """Record every row of a CSV file for ``destination`` and say what became of each.

    ``source`` is a path or a file object (bytes in UTF-8, or text). ``mapping`` names the
    column of each field (``{"event_time": "Date", "email": "E-mail", ...}``; see ``FIELDS``);
    ``event_time`` is required. ``event_name`` and ``action_source`` are used where no column
    is mapped or the cell is empty. Times are ISO 8601 (``2026-11-30 14:05``, ``2026-11-30``,
    with or without a zone; without one they are UTC), Unix seconds, or ``date_format``
    (``strptime``, e.g. ``%d/%m/%Y``). The file is read in chunks of ``chunk_size`` rows, each
    recorded with one ``track_many`` call; ``progress(summary, bytes_read)`` is called after
    each. Raises ``ImportRefused`` before reading any row if the header or mapping is unusable.

    In slices (the background task, which must end before django-q2's ``timeout``): with a
    ``deadline`` (``time.monotonic()``), the import stops after the chunk that passes it and
    returns with ``complete`` False; ``resume=`` that summary continues after the rows it has
    read, adding to its counts.
    """
    summary = resume if resume is not None else ImportSummary()
    summary.complete = False
    with _open(source) as text:
        header, reader = _header_and_reader(text)
        columns = _column_positions(header, mapping)
        rows = _Rows(
            reader, len(header), columns, event_name, action_source, date_format, summary.rows_read
        )
        for chunk in _chunked(rows, max(1, chunk_size)):
            _record_chunk(destination, chunk, summary)
            summary.rows_read = rows.read
            if progress is not None:
                progress(summary, _bytes_read(text))
            if deadline is not None and time.monotonic() >= deadline:
                break
        else:
            summary.complete = True
        summary.rows_read = max(summary.rows_read, rows.read)
        summary.rejected_rows.sort(key=lambda row: row.line)
    return summary


@sensitive_variables()
def preview_csv(
    destination: Destination,
    source: Source,
    mapping: Mapping[str, str],
    *,
    rows: int = 5,
    event_name: str = DEFAULT_EVENT_NAME,
    action_source: str = DEFAULT_ACTION_SOURCE,
    date_format: str = "",
) -> list[PreviewRow]:
    """The first ``rows`` rows as they would be recorded, with their diagnostics; stores nothing."""
    now = clock.now()
    country = destination.default_country or app_settings.DEFAULT_COUNTRY or None
    shown: list[PreviewRow] = []
    with _open(source) as text:
        header, reader = _header_and_reader(text)
        columns = _column_positions(header, mapping)
        parsed = _Rows(reader, len(header), columns, event_name, action_source, date_format)
        for row in itertools.islice(parsed, rows):
            if row.error:
                shown.append(PreviewRow(row.line, row.reported, [], [], row.error))
                continue
            found = diagnostics.diagnose(row.event, now=now, default_country=country)
            customer = [FIELDS[name] for name in PERSONAL_FIELDS if name in row.personal]
            shown.append(PreviewRow(row.line, row.reported, customer, found))
    return shown


def run_import(run_id: int) -> ImportRun | None:
    """Carry out a queued import run (the background task): once, however often it is called.

    The run is claimed with a compare-and-set (queued → running), so a task delivered twice
    imports once. A task works for at most ``IMPORT_TASK_SECONDS`` (well inside django-q2's
    ``timeout``, which would kill it), saves where it stopped and queues the next slice, which
    continues from there. Progress and counters are saved after every chunk; the uploaded file
    is deleted when the run ends, whatever the outcome.
    """
    now = clock.now()
    lease_token = uuid.uuid4()
    claimed = ImportRun.objects.filter(pk=run_id, status=ImportStatus.QUEUED).update(
        status=ImportStatus.RUNNING,
        started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
        lease_token=lease_token,
        lease_expires_at=now + IMPORT_LEASE,
    )
    if not claimed:
        return None
    run = ImportRun.objects.select_related("destination__tenant").get(pk=run_id)

    def save_progress(summary: ImportSummary, bytes_read: int) -> None:
        kept = ImportRun.objects.filter(pk=run.pk, lease_token=lease_token).update(
            bytes_read=bytes_read,
            rejected_rows=[row.to_dict() for row in summary.rejected_rows],
            lease_expires_at=clock.now() + IMPORT_LEASE,
            **summary.counts(),
        )
        if not kept:
            raise _LeaseLost

    try:
        summary = import_csv(
            run.destination,
            upload_path(run),
            run.mapping,
            event_name=run.event_name or DEFAULT_EVENT_NAME,
            action_source=run.action_source or DEFAULT_ACTION_SOURCE,
            date_format=run.date_format,
            progress=save_progress,
            resume=_summary_of(run),
            deadline=time.monotonic() + float(app_settings.IMPORT_TASK_SECONDS),
        )
    except _LeaseLost:
        # This worker was taken for dead and the run queued again: the run is no longer ours.
        return None
    except (ImportRefused, OSError) as refused:
        if run.finish_failed(str(refused) if isinstance(refused, ImportRefused) else _unreadable()):
            delete_upload(run)
        return run
    except Exception:
        if run.finish_failed(
            "The import stopped on an unexpected error. The rows before it are recorded; "
            "importing the file again stores none of them twice."
        ):
            delete_upload(run)
        raise
    rejected_rows = [row.to_dict() for row in summary.rejected_rows]
    if summary.complete:
        if run.finish(summary.counts(), rejected_rows):
            delete_upload(run)
    elif run.pause(summary.counts(), rejected_rows):
        queueing.enqueue_import(run.pk)
    return run


def resume_stalled_runs() -> int:
    """Queue again the runs whose worker died mid-slice (lease run out); returns how many.

    The next slice continues after the last chunk whose progress was saved; rows recorded after
    it are read again and counted as duplicates, so nothing is stored twice and the counts
    still add up.
    """
    resumed = 0
    stalled = ImportRun.objects.filter(
        status=ImportStatus.RUNNING, lease_expires_at__lt=clock.now()
    ).values_list("pk", "lease_token")
    for run_id, lease_token in list(stalled):
        taken = ImportRun.objects.filter(
            pk=run_id, status=ImportStatus.RUNNING, lease_token=lease_token
        ).update(status=ImportStatus.QUEUED, lease_token=None, lease_expires_at=None)
        if taken:
            queueing.enqueue_import(run_id)
            resumed += 1
    return resumed


class _LeaseLost(Exception):
    """The run's lease passed to another worker while this one was importing."""


def _summary_of(run: ImportRun) -> ImportSummary:
    """Where an earlier slice of the run left off (all zero for a new run)."""
    return ImportSummary(
        rows_read=run.rows_read,
        stored=run.stored,
        duplicates=run.duplicates,
        rejected=run.rejected,
        suppressed=run.suppressed,
        rejected_rows=[
            RejectedRow(int(row["line"]), str(row["reason"]), dict(row.get("columns") or {}))
            for row in run.rejected_rows or []
        ],
    )


def record_run(
    destination: Destination,
    source: Source,
    mapping: Mapping[str, str],
    *,
    file_name: str,
    actor: Any = None,
    event_name: str = DEFAULT_EVENT_NAME,
    action_source: str = DEFAULT_ACTION_SOURCE,
    date_format: str = "",
) -> tuple[ImportRun, ImportSummary]:
    """Import at once (the management command) and keep the run, as the page's imports are."""
    run = ImportRun.objects.create(
        destination=destination,
        created_by=actor,
        file_name=file_name[:255],
        mapping=dict(mapping),
        event_name=event_name,
        action_source=action_source,
        date_format=date_format,
        status=ImportStatus.RUNNING,
        started_at=clock.now(),
    )
    try:
        summary = import_csv(
            destination,
            source,
            mapping,
            event_name=event_name,
            action_source=action_source,
            date_format=date_format,
        )
    except ImportRefused as refused:
        run.finish_failed(str(refused))
        raise
    run.finish(summary.counts(), [row.to_dict() for row in summary.rejected_rows])
    return run, summary


def accept_upload(destination: Destination, upload: Any, *, actor: Any = None) -> ImportRun:
    """Keep an uploaded file for mapping (the page's first step); ``ImportRefused`` says why not.

    ``upload`` is Django's ``UploadedFile``. Refused: a file over ``IMPORT_MAX_BYTES``, one that
    is not text (an Excel workbook, a PDF) and one whose first line names no columns.
    """
    limit = int(app_settings.IMPORT_MAX_BYTES)
    if upload.size > limit:
        raise ImportRefused(
            f"The file is {upload.size / 1e6:.1f} MB; the largest accepted is {limit / 1e6:.1f} MB."
            " Split it, or import it with the capi_import_csv command."
        )
    head = next(iter(upload.chunks(4096)), b"")[:4096]
    upload.seek(0)
    if b"\0" in head or head.startswith((b"PK\x03\x04", b"%PDF", b"\xd0\xcf\x11\xe0")):
        raise ImportRefused(
            "This is not a CSV file. Save the sheet as “CSV UTF-8 (comma delimited)” and upload"
            " that."
        )
    forget_abandoned_uploads()
    run = ImportRun.objects.create(
        destination=destination,
        created_by=actor,
        file_name=str(upload.name or "")[:255],
        file_size=upload.size,
    )
    save_upload(run, upload.chunks())
    try:
        read_header(upload_path(run))
    except ImportRefused:
        delete_upload(run)
        run.delete()
        raise
    return run


def forget_abandoned_uploads(older_than: timedelta = ABANDONED_AFTER) -> int:
    """Delete uploads never imported (left at the mapping step) after ``older_than``.

    Their files hold customer data in plain text; the runs say nothing useful. Runs on every
    upload. Returns how many were removed.
    """
    abandoned = list(
        ImportRun.objects.filter(
            status=ImportStatus.UPLOADED, created_at__lt=clock.now() - older_than
        )
    )
    for run in abandoned:
        delete_upload(run)
        run.delete()
    return len(abandoned)


def header_of(run: ImportRun) -> list[str]:
    """The column names of a run's uploaded file ([] once the file is gone)."""
    try:
        return read_header(upload_path(run))
    except (OSError, ImportRefused):
        return []


def start_import(
    run: ImportRun,
    mapping: Mapping[str, str],
    *,
    event_name: str = DEFAULT_EVENT_NAME,
    action_source: str = DEFAULT_ACTION_SOURCE,
    date_format: str = "",
) -> None:
    """Check the mapping against the file and queue the run's import (after commit)."""
    with _open(upload_path(run)) as text:
        header, _ = _header_and_reader(text)
    _column_positions(header, mapping)
    updated = ImportRun.objects.filter(pk=run.pk, status=ImportStatus.UPLOADED).update(
        status=ImportStatus.QUEUED,
        mapping=dict(mapping),
        event_name=event_name,
        action_source=action_source,
        date_format=date_format,
    )
    if not updated:
        raise ImportRefused("This import has already started.")
    run.refresh_from_db()
    run_id = run.pk
    transaction.on_commit(lambda: queueing.enqueue_import(run_id))


def save_upload(run: ImportRun, chunks: Iterable[bytes]) -> None:
    """Write an uploaded file where the background task reads it (``IMPORT_DIRECTORY``)."""
    path = upload_path(run)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "wb") as target:
        for chunk in chunks:
            target.write(chunk)
    os.chmod(path, 0o600)


def rejected_rows_csv(run: ImportRun) -> Iterator[list[str]]:
    """The rejected rows of a run as CSV rows (header first): line, reason, non-personal fields."""
    yield ["line", "reason", *REPORTED_FIELDS]
    for row in run.rejected_rows or []:
        columns = row.get("columns") or {}
        yield [
            str(row.get("line", "")),
            str(row.get("reason", "")),
            *(str(columns.get(name, "")) for name in REPORTED_FIELDS),
        ]


# --- reading the file -----------------------------------------------------------------------


class _open:
    """``with _open(source) as text``: a text stream over a path or a file object."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.owned: IO[bytes] | None = None
        self.wrapper: io.TextIOWrapper | None = None

    def __enter__(self) -> IO[str]:
        source: Any = self.source
        if isinstance(source, str | os.PathLike):
            source = self.owned = open(source, "rb")
        if isinstance(source, io.TextIOBase):
            return cast(IO[str], source)
        # Bytes that are not UTF-8 are kept as lone surrogates, so the row holding them is
        # rejected alone instead of the decoder stopping the file there.
        self.wrapper = io.TextIOWrapper(
            source, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        return self.wrapper

    def __exit__(self, *exc: object) -> None:
        if self.wrapper is not None:
            # Detached, the wrapper leaves the caller's file object open.
            self.wrapper.detach()
        if self.owned is not None:
            self.owned.close()


def _bytes_read(text: IO[str]) -> int:
    raw = getattr(text, "buffer", None)
    try:
        return int(raw.tell()) if raw is not None else 0
    except (OSError, ValueError):
        return 0


def _header_and_reader(text: IO[str]) -> tuple[list[str], Iterator[list[str]]]:
    first = text.readline()
    while first and not first.strip():
        first = text.readline()
    if not first.strip():
        raise ImportRefused("The file is empty: the first line must name the columns.")
    delimiter = max(",;\t|", key=first.count)
    reader = csv.reader(itertools.chain([first], text), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(reader)]
    except csv.Error as error:
        raise ImportRefused(
            f"The first line cannot be read as CSV column names ({error})."
        ) from None
    if not _is_text("".join(header)):
        raise ImportRefused("The file is not UTF-8 text (save it as “CSV UTF-8” and try again).")
    if len(header) < 2:
        raise ImportRefused(
            "The first line names one column: is this a CSV file (commas or semicolons "
            "between the columns)?"
        )
    return header, reader


def _column_positions(header: list[str], mapping: Mapping[str, str]) -> dict[str, int]:
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        raise ImportRefused(f"Unknown field(s) in the mapping: {', '.join(unknown)}.")
    positions: dict[str, int] = {}
    for field_name, column in mapping.items():
        if not column:
            continue
        if column not in header:
            raise ImportRefused(f"The file has no column “{column}” (mapped to {field_name}).")
        positions[field_name] = header.index(column)
    if "event_time" not in positions:
        raise ImportRefused("Map a column to Event time: a conversion needs the time it happened.")
    return positions


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _Row:
    line: int
    event: dict[str, Any]
    reported: dict[str, str]
    personal: set[str]
    error: str = ""


class _Rows:
    """The file's rows as events to record, or as errors; counts every row it reads."""

    def __init__(
        self,
        reader: Iterator[list[str]],
        width: int,
        columns: dict[str, int],
        event_name: str,
        action_source: str,
        date_format: str,
        skip: int = 0,
    ) -> None:
        self.reader = reader
        self.skip = skip
        self.width = width
        self.columns = columns
        self.event_name = event_name
        self.action_source = action_source
        self.date_format = date_format
        self.read = 0
        self.line = 1  # the header's

    def __iter__(self) -> Iterator[_Row]:
        while True:
            line = self.line + 1
            try:
                cells = next(self.reader)
            except StopIteration:
                return
            except csv.Error as error:
                self.line = getattr(self.reader, "line_num", line)
                self.read += 1
                if self.read > self.skip:
                    yield _Row(line, {}, {}, set(), f"The line cannot be read as CSV ({error}).")
                continue
            self.line = getattr(self.reader, "line_num", line)
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line is no row
            self.read += 1
            if self.read > self.skip:  # the rows before were imported by an earlier slice
                yield self._row(line, cells)

    @sensitive_variables()
    def _row(self, line: int, cells: list[str]) -> _Row:
        reported = {
            name: _reportable(cells[position].strip())
            for name, position in self.columns.items()
            if name in REPORTED_FIELDS and position < len(cells)
        }
        if not _is_text("\x1f".join(cells)):
            reported = {name: value for name, value in reported.items() if _is_text(value)}
            return _Row(line, {}, reported, set(), "Not UTF-8 text: save the file as CSV UTF-8.")
        if len(cells) != self.width:
            # The cells are shifted: which one holds what is unknown, so none is kept.
            return _Row(
                line,
                {},
                {},
                set(),
                f"{len(cells)} columns where the first line names {self.width}.",
            )
        try:
            event, personal = self._event(cells)
        except ValueError as error:
            return _Row(line, {}, reported, set(), str(error))
        return _Row(line, event, reported, personal)

    @sensitive_variables()
    def _event(self, cells: list[str]) -> tuple[dict[str, Any], set[str]]:
        value_of = {name: cells[position].strip() for name, position in self.columns.items()}
        event_time = _parse_time(value_of["event_time"], self.date_format)
        user_data = {
            PERSONAL_FIELDS[name]: value_of[name] for name in PERSONAL_FIELDS if value_of.get(name)
        }
        custom_data: dict[str, Any] = {}
        if value_of.get("value"):
            custom_data["value"] = _parse_value(value_of["value"])
        for name in ("currency", "order_id", "item_number"):
            if value_of.get(name):
                custom_data[name] = value_of[name]
        event: dict[str, Any] = {
            "event_name": value_of.get("event_name") or self.event_name,
            "event_time": int(event_time.timestamp()),
            "event_id": value_of.get("event_id") or _event_id(value_of, cells),
            "action_source": value_of.get("action_source") or self.action_source,
            "user_data": user_data,
        }
        if custom_data:
            event["custom_data"] = custom_data
        return event, {name for name in PERSONAL_FIELDS if value_of.get(name)}


def _event_id(value_of: Mapping[str, str], cells: list[str]) -> str:
    order_id = value_of.get("order_id")
    if order_id:
        item = value_of.get("item_number")
        return f"order-{order_id}-{item}" if item else f"order-{order_id}"
    digest = hashlib.sha256("\x1f".join(cell.strip() for cell in cells).encode("utf-8"))
    return f"row-{digest.hexdigest()[:32]}"


def _parse_time(text: str, date_format: str) -> datetime:
    if not text:
        raise ValueError("No event time.")
    shown = _reportable(text)[:40]
    moment: datetime | None = None
    if date_format:
        try:
            moment = datetime.strptime(text, date_format)
        except ValueError:
            raise ValueError(
                f"Event time “{shown}” does not match the date format {date_format}."
            ) from None
    elif text.isdigit() and len(text) in (10, 13):
        moment = datetime.fromtimestamp(int(text) / (1000 if len(text) == 13 else 1), tz=UTC)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"Event time “{shown}” is not a date: use 2026-11-30 14:05 (ISO 8601), "
                "Unix seconds, or set the date format."
            ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_value(text: str) -> Decimal:
    cleaned = text.replace(" ", "").replace("\u00a0", "")
    if "," in cleaned and "." in cleaned:
        # The later separator is the decimal one: 1,234.50 or 1.234,50.
        thousands = "," if cleaned.rfind(".") > cleaned.rfind(",") else "."
        cleaned = cleaned.replace(thousands, "").replace(",", ".")
    elif cleaned.count(",") == 1:
        cleaned = cleaned.replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise ValueError(f"Value “{_reportable(text)[:40]}” is not a number.")
    return value


def _reportable(cell: str) -> str:
    """A cell kept for the report, cut short; one that looks like an email is not kept.

    Only non-personal fields are reported, but a column mapped to the wrong field (the email
    column as the order ID) must not bring an address into the database.
    """
    if "@" in cell:
        return "(not kept: looks like an email address)"
    return cell[:200]


def _chunked(rows: Iterable[_Row], size: int) -> Iterator[list[_Row]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# --- recording ------------------------------------------------------------------------------


@sensitive_variables()
def _record_chunk(destination: Destination, chunk: list[_Row], summary: ImportSummary) -> None:
    readable = [row for row in chunk if not row.error]
    for row in chunk:
        if row.error:
            summary.reject(row.line, row.error, row.reported)
    if not readable:
        return
    results = ingest.track_many(destination, [row.event for row in readable])
    for row, result in zip(readable, results, strict=True):
        if result.status == ingest.STORED:
            summary.stored += 1
        elif result.status == ingest.SUPPRESSED:
            summary.suppressed += 1
        elif result.status == ingest.DUPLICATE:
            summary.duplicates += 1
        else:
            summary.reject(row.line, result.event.status_reason, row.reported)


def _unreadable() -> str:
    return "The uploaded file could not be read any more (was it removed?)."


def upload_directory() -> Path:
    """Where uploaded files wait for their import (``IMPORT_DIRECTORY``, else the temp dir)."""
    configured = app_settings.IMPORT_DIRECTORY
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "capi_destinations_imports"


def upload_path(run: ImportRun) -> Path:
    """The file a run's upload waits in (named by the run's code, never by the user's name)."""
    return upload_directory() / f"{run.code.hex}.csv"


def delete_upload(run: ImportRun) -> None:
    """Remove a run's uploaded file (it holds customer data in plain text)."""
    upload_path(run).unlink(missing_ok=True)
