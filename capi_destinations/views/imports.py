"""The import pages: upload a CSV, map its columns, preview, import in the background, results.

Editors only. The work is :mod:`capi_destinations.imports`'s; these views validate and render.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from capi_destinations import access, imports
from capi_destinations.forms import ImportMappingForm, ImportUploadForm
from capi_destinations.models import Destination, ImportRun, ImportStatus, Role
from capi_destinations.views.common import csv_response, is_htmx

RUNS_SHOWN = 10
PREVIEW_ROWS = 5


def _run_of(destination: Destination, run: str) -> ImportRun:
    try:
        return destination.import_runs.select_related("created_by").get(code=run)
    except ImportRun.DoesNotExist:
        raise Http404("No such import.") from None


@login_required
@require_http_methods(["GET", "POST"])
def import_upload(request: HttpRequest, code: str) -> HttpResponse:
    """Step 1: the file (and the destination's recent imports)."""
    destination, tenant_access = access.destination_access(request.user, code, needed=Role.EDITOR)
    form = ImportUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            run = imports.accept_upload(destination, form.cleaned_data["file"], actor=request.user)
        except imports.ImportRefused as refused:
            form.add_error("file", str(refused))
        else:
            return redirect("capi_destinations:import_run", code=destination.code, run=run.code)
    runs = destination.import_runs.exclude(status=ImportStatus.UPLOADED)[:RUNS_SHOWN]
    return render(
        request,
        "capi_destinations/import_upload.html",
        {"destination": destination, "access": tenant_access, "form": form, "runs": runs},
    )


@login_required
@require_http_methods(["GET", "POST"])
def import_run(request: HttpRequest, code: str, run: str) -> HttpResponseBase:
    """Step 2 (an uploaded file): map the columns and start; then: progress and results."""
    destination, tenant_access = access.destination_access(request.user, code, needed=Role.EDITOR)
    the_run = _run_of(destination, run)
    context: dict[str, Any] = {"destination": destination, "access": tenant_access, "run": the_run}
    if the_run.status != ImportStatus.UPLOADED:
        return render(request, "capi_destinations/import_run.html", context)
    columns = imports.header_of(the_run)
    form = _mapping_form(request, destination, columns)
    if request.method == "POST" and form.is_valid():
        try:
            imports.start_import(
                the_run,
                form.mapping(),
                event_name=form.cleaned_data["event_name"],
                action_source=form.cleaned_data["action_source"],
                date_format=form.cleaned_data["date_format"],
            )
        except imports.ImportRefused as refused:
            form.add_error(None, str(refused))
        else:
            return redirect("capi_destinations:import_run", code=destination.code, run=the_run.code)
    context.update({"form": form, "columns": columns})
    return render(request, "capi_destinations/import_mapping.html", context)


# The preview reads customer data from the file.
@sensitive_variables()
@login_required
@require_POST
def import_preview(request: HttpRequest, code: str, run: str) -> HttpResponse:
    """The first rows as they would be recorded, with their diagnostics (htmx fragment)."""
    destination, _ = access.destination_access(request.user, code, needed=Role.EDITOR)
    the_run = _run_of(destination, run)
    columns = imports.header_of(the_run)
    form = _mapping_form(request, destination, columns)
    context: dict[str, Any] = {"form": form, "rows": [], "error": ""}
    if the_run.status != ImportStatus.UPLOADED or not columns:
        context["error"] = "This file is no longer waiting to be mapped."
    elif form.is_valid():
        try:
            context["rows"] = imports.preview_csv(
                destination,
                imports.upload_path(the_run),
                form.mapping(),
                rows=PREVIEW_ROWS,
                event_name=form.cleaned_data["event_name"],
                action_source=form.cleaned_data["action_source"],
                date_format=form.cleaned_data["date_format"],
            )
        except imports.ImportRefused as refused:
            context["error"] = str(refused)
    else:
        context["error"] = " ".join(
            str(error) for errors in form.errors.values() for error in errors
        )
    return render(request, "capi_destinations/_import_preview.html", context)


@login_required
@require_GET
def import_progress(request: HttpRequest, code: str, run: str) -> HttpResponse:
    """The progress bar and counters alone (polled while the import runs)."""
    destination, tenant_access = access.destination_access(request.user, code, needed=Role.EDITOR)
    the_run = _run_of(destination, run)
    template = "capi_destinations/_import_progress.html"
    context = {"destination": destination, "access": tenant_access, "run": the_run}
    if not is_htmx(request):
        return redirect("capi_destinations:import_run", code=destination.code, run=the_run.code)
    return render(request, template, context)


@login_required
@require_GET
def import_rejected_csv(request: HttpRequest, code: str, run: str) -> HttpResponseBase:
    """The rejected rows as a CSV download: line, reason and the non-personal fields."""
    destination, _ = access.destination_access(request.user, code, needed=Role.EDITOR)
    the_run = _run_of(destination, run)
    return csv_response(imports.rejected_rows_csv(the_run), f"rejected-rows-{the_run.code}.csv")


def _mapping_form(
    request: HttpRequest, destination: Destination, columns: list[str]
) -> ImportMappingForm:
    if request.method == "POST":
        return ImportMappingForm(request.POST, columns=columns)
    guessed = imports.guess_mapping(columns, imports.remembered_mapping(destination))
    return ImportMappingForm(
        columns=columns, initial={f"map_{name}": column for name, column in guessed.items()}
    )
