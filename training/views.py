from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from assistant.hardware import bf16_warning
from config.roles import ADMIN, role_required
from evals.charts import training_charts
from evals.pm_agreement import drift

from . import services
from .formatting import format_metric
from .forms import LaunchForm, data_roots_text
from .models import TrainingRun

# The service's error keys that are fields of the launch form as they are.
_FORM_FIELDS = {"kind", "snapshot", "base_model", "prompt", "pmp_sources"}


def _add_service_errors(form: LaunchForm, error: ValidationError) -> None:
    """Put the service's errors next to their fields: a config error next to the setting it
    names ("lr must be above 0 …"), the others where the service says."""
    for key, errors in error.message_dict.items():
        for message in errors:
            field = key if key in _FORM_FIELDS else None
            if key == "config":
                named = message.split(" ", 1)[0]
                field = named if named in form.fields else None
            form.add_error(field, message)


@role_required(ADMIN)
def runs(request):
    """Training runs: launch (the form), watch and cancel retraining jobs."""
    form = LaunchForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        config = form.config()
        try:
            run = services.training_run_create(
                kind=form.cleaned_data["kind"],
                snapshot=form.cleaned_data["snapshot"],
                base_model=form.cleaned_data["base_model"],
                prompt=form.cleaned_data["prompt"],
                pmp_sources=form.cleaned_data["pmp_sources"] or None,
                config=config,
                launched_by=request.user,
            )
        except ValidationError as error:
            _add_service_errors(form, error)
        else:
            messages.success(request, f"Queued {run}.")
            # Probed only for an explicit request (it loads torch); the worker logs its own.
            if config.get("bf16") is True and (warning := bf16_warning(True)):
                messages.warning(request, f"On this machine: {warning}")
            return redirect("training:run", run_id=run.pk)
    recent = TrainingRun.objects.select_related("snapshot", "base_model", "result_version")[:50]
    return render(
        request,
        "training/runs.html",
        {
            "form": form,
            "runs": recent,
            "data_roots": data_roots_text(),
            # The admin's landing page: the PM drift alarm shows here (issue 14).
            "drift": drift(),
        },
        status=400 if request.method == "POST" else 200,
    )


def metric_table(metrics: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The metric history as a table: the columns every row may have (step first), and each
    row's values as text (learning rates in scientific notation, "—" where a row has none)."""
    columns = ["step"]
    for row in metrics:
        columns += [key for key in row if key not in columns]
    return columns, [[format_metric(key, row.get(key)) for key in columns] for row in metrics]


PROMOTION_FACTS = [
    ("held_out", "held-out comparisons"),
    ("min_held_out", "minimum to decide"),
    ("test", "test"),
    ("new_accuracy", "new PM's accuracy"),
    ("active_accuracy", "active PM's accuracy"),
    ("difference", "difference (new − active)"),
    ("both_right", "pairs both rank right"),
    ("new_only_right", "only the new PM ranks right"),
    ("active_only_right", "only the active PM ranks right"),
    ("both_wrong", "pairs both rank wrong"),
    ("p_value", "p-value"),
    ("alpha", "level (alpha)"),
    ("tolerance", "tolerance"),
]


def promotion_rows(promotion: dict) -> list[tuple[str, str]]:
    """The promotion decision's numbers as (label, text) rows for the run page."""
    rows = []
    for key, label in PROMOTION_FACTS:
        if key in promotion:
            value = promotion[key]
            if key == "p_value" and isinstance(value, float):
                text = f"{value:.3g}"
            elif isinstance(value, float) and key not in ("alpha", "tolerance"):
                text = f"{value:+.3f}" if key == "difference" else f"{value:.3f}"
            else:
                text = str(value)
            rows.append((label, text))
    interval = promotion.get("interval")
    if isinstance(interval, list) and len(interval) == 2:
        rows.append(
            (
                f"interval of the {promotion.get('interval_of', 'estimate')}",
                f"[{interval[0]:.3f}, {interval[1]:.3f}]",
            )
        )
    recent = promotion.get("recent_agreement")
    if isinstance(recent, dict):
        rows.append(("agreement with recent judgements it did not train on", _recent_text(recent)))
    return rows


def _recent_text(recent: dict) -> str:
    if recent.get("error"):
        return f"not measured ({recent['error']})"
    if not recent.get("n"):
        return "none yet (no judgement since its snapshot)"
    return (
        f"{recent['rate']:.3f} ({recent['agree']} of the latest {recent['n']}, "
        f"95 % [{recent['low']:.3f}, {recent['high']:.3f}])"
    )


@role_required(ADMIN)
def run_detail(request, run_id: int):
    """One run: progress (polled while it runs), chart, metrics, log tail, promotion."""
    run = get_object_or_404(
        TrainingRun.objects.select_related("snapshot", "base_model", "result_version", "prompt"),
        pk=run_id,
    )
    columns, rows = metric_table(run.metrics)
    context = {
        "run": run,
        "charts": training_charts(run.metrics),
        "metric_columns": columns,
        "metric_rows": rows,
        "config_rows": [(key, format_metric(key, value)) for key, value in run.config.items()],
        "promotion_rows": promotion_rows(run.promotion),
    }
    template = "training/_run.html" if request.htmx else "training/run.html"
    return render(request, template, context)


class CancelForm(forms.Form):
    confirm = forms.BooleanField(
        label="Yes, stop this run",
        error_messages={"required": "Tick the box to confirm: a cancelled run cannot resume."},
    )


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def run_cancel(request, run_id: int):
    """Cancel a run after a confirmation (a page with a checkbox: no script needed)."""
    run = get_object_or_404(TrainingRun.objects.select_related("snapshot"), pk=run_id)
    form = CancelForm(request.POST if request.method == "POST" else None)
    if run.is_finished:
        messages.info(request, f"{run} has already ended.")
        return redirect("training:run", run_id=run.pk)
    if request.method == "POST" and form.is_valid():
        run = services.training_run_cancel(run=run)
        messages.info(request, f"Asked {run} to stop.")
        return redirect("training:run", run_id=run.pk)
    return render(
        request,
        "training/cancel.html",
        {"run": run, "form": form},
        status=400 if request.method == "POST" else 200,
    )
