"""Experiment pages: the list and the form, one report per experiment (and its downloads),
the data-efficiency curves of every experiment, cancel. Researchers and admins only; cancelling
is for the owner or an admin."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from config.roles import ADMIN, RESEARCHER, has_role, role_required

from . import services
from .forms import ExperimentForm, paper_examples
from .models import Experiment
from .pages import curves_svg, report_context


@role_required(RESEARCHER, ADMIN)
def experiments(request):
    """Every experiment, newest first, and the form to define one."""
    form = ExperimentForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            experiment = services.experiment_create(
                data=form.cleaned_data["definition"], launched_by=request.user
            )
        except ValidationError as error:
            for message in error.messages:
                form.add_error("definition", message)
        else:
            messages.success(request, f"Started {experiment}.")
            return redirect("experiments:detail", experiment_id=experiment.pk)
    return render(
        request,
        "experiments/list.html",
        {
            "form": form,
            "experiments": Experiment.objects.select_related("launched_by")[:100],
            "examples": paper_examples(),
        },
        status=400 if form.errors else 200,
    )


def _experiment(experiment_id: int) -> Experiment:
    return get_object_or_404(Experiment.objects.select_related("snapshot"), pk=experiment_id)


@role_required(RESEARCHER, ADMIN)
def detail(request, experiment_id: int):
    """One experiment's report: curves, bars, calibration, verdicts, every cell."""
    experiment = _experiment(experiment_id)
    context = report_context(experiment)
    context["can_cancel"] = not experiment.is_finished and (
        experiment.launched_by_id == request.user.pk or has_role(request.user, ADMIN)
    )
    return render(request, "experiments/detail.html", context)


@role_required(RESEARCHER, ADMIN)
def download(request, experiment_id: int, fmt: str):
    """The report as a self-contained HTML file, or every number as JSON or CSV."""
    from .report import report_csv, report_json

    experiment = _experiment(experiment_id)
    name = f"experiment-{experiment.pk}"
    if fmt == "html":
        page = render(request, "experiments/standalone.html", report_context(experiment))
        response = HttpResponse(page.content, content_type="text/html; charset=utf-8")
    elif fmt == "json":
        data = report_json(report_context(experiment)["report"])
        response = JsonResponse(data, json_dumps_params={"indent": 1})
    else:
        response = HttpResponse(
            report_csv(report_context(experiment)["report"]), content_type="text/csv"
        )
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


@role_required(RESEARCHER, ADMIN)
@require_POST
def cancel(request, experiment_id: int):
    """Cancel the experiment as a whole (its owner, or an admin)."""
    experiment = _experiment(experiment_id)
    if experiment.launched_by_id != request.user.pk and not has_role(request.user, ADMIN):
        raise PermissionDenied("only its owner or an admin cancels an experiment")
    experiment = services.experiment_cancel(experiment=experiment)
    messages.success(request, f"Cancelled {experiment} and its unfinished runs.")
    return redirect("experiments:detail", experiment_id=experiment.pk)


@role_required(RESEARCHER, ADMIN)
def curves(request):
    """Held-out accuracy against training comparisons, one chart per experiment with sized
    conditions (what the evals' data-efficiency page showed, now with intervals)."""
    charts = []
    for experiment in Experiment.objects.select_related("snapshot")[:50]:
        svg = curves_svg(experiment)
        if svg:
            charts.append({"experiment": experiment, "svg": svg})
    return render(request, "experiments/curves.html", {"charts": charts})
