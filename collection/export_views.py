"""Researchers' export jobs in the browser: ask for an export of a snapshot (a worker writes
it: `collection.export_jobs`), watch its progress, download the file when it is ready.

Researchers and admins only (contractors get 403, for the page and the file alike).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from config.roles import ADMIN, RESEARCHER, role_required

from .dataset_errors import DatasetError
from .dataset_forms import ExportJobForm
from .dataset_views import _datasets_page
from .export_jobs import export_file, export_job_create
from .models import DatasetSnapshot, ExportJob


@role_required(RESEARCHER, ADMIN)
@require_POST
def export_request(request, snapshot_id: int):
    """Ask for an export of the snapshot; the job's page shows how it goes."""
    snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
    form = ExportJobForm(request.POST)
    if form.is_valid():
        try:
            job, new = export_job_create(snapshot=snapshot, user=request.user, **form.cleaned_data)
        except DatasetError as error:
            form.add_error(None, str(error))
        else:
            messages.success(
                request,
                "A worker writes the export now."
                if new
                else "This export was asked for already: here it is.",
            )
            return redirect("collection:export_job", job.pk)
    problems = " ".join(
        f"{'' if field == '__all__' else field + ': '}{' '.join(errors)}"
        for field, errors in form.errors.items()
    )
    messages.error(request, f"No export of snapshot {snapshot.pk} was asked for. {problems}")
    return _datasets_page(request, status=400)


@role_required(RESEARCHER, ADMIN)
def export_job(request, job_id: int):
    """An export job: progress while it runs, its error, or the file to download."""
    job = get_object_or_404(ExportJob.objects.select_related("snapshot", "launched_by"), pk=job_id)
    template = "collection/_export_job.html" if request.htmx else "collection/export_job.html"
    return render(request, template, {"job": job, "ready": export_file(job) is not None})


@role_required(RESEARCHER, ADMIN)
def export_download(request, job_id: int):
    """The file an export job wrote (404 until it is ready; 410 once it is gone)."""
    job = get_object_or_404(ExportJob, pk=job_id)
    path = export_file(job)
    if path is None:
        if job.status == ExportJob.Status.SUCCEEDED:
            return HttpResponse(
                "This export's file is gone from the server; ask for the export again.",
                status=410,
                content_type="text/plain",
            )
        return HttpResponse(
            f"This export is {job.status}; its file is offered once it has succeeded.",
            status=404,
            content_type="text/plain",
        )
    return FileResponse(path.open("rb"), as_attachment=True, filename=job.file_name)
