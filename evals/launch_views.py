"""Launching an eval run from a model's page (researchers and admins): any suite of the
model's kind, the preference-file suite with a file named under the data roots or uploaded."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from assistant.models import ModelVersion
from collection.imports import upload_max_bytes
from config.roles import ADMIN, RESEARCHER, role_required

from . import services
from .forms import EvalLaunchForm
from .views import model_context


@csrf_exempt  # checked below, once the size is known: reading the token reads the whole body
@role_required(RESEARCHER, ADMIN)
@require_POST
def launch(request, version_id: int):
    """Queue an eval run of the version; its page shows how it goes. Errors: the model page
    again, each next to its field."""
    version = get_object_or_404(ModelVersion, pk=version_id)
    try:
        claimed = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        claimed = 0
    if claimed > upload_max_bytes() + 2**20:  # refused before a byte of the upload is stored
        refusal = (
            f"The upload is {claimed / 2**20:.0f} MiB; the limit is "
            f"{upload_max_bytes() // 2**20} MiB (ALIGNLAB_UPLOAD_MAX_MB): name a bigger file "
            "under the data roots instead."
        )
        return _page(request, version, None, status=413, refusal=refusal)
    return _launch(request, version)


@csrf_protect
def _launch(request, version):
    form = EvalLaunchForm(version, request.POST, request.FILES)
    if form.is_valid():
        try:
            run = services.eval_run_create(
                model_version=version, launched_by=request.user, **form.launch_arguments()
            )
        except ValidationError as error:
            for key, errors in error.message_dict.items():
                for message in errors:
                    form.add_error(key if key in form.fields else None, message)
        else:
            messages.success(request, f"Queued {run}.")
            return redirect("evals:run", run_id=run.pk)
    return _page(request, version, form, status=400)


def _page(request, version, form, *, status: int, refusal: str = ""):
    context = {**model_context(request, version, form), "launch_refusal": refusal}
    return render(request, "evals/model.html", context, status=status)
