from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render

from assistant.models import ModelVersion
from collection.models import Campaign, Judgement
from config.roles import ADMIN, RESEARCHER, has_role, role_required

from . import arm_elo, charts, selectors
from .forms import EvalLaunchForm
from .models import EvalRun
from .reports import length_summary


@role_required(RESEARCHER, ADMIN)
def leaderboard(request):
    """Model versions against the HHH metrics, and every failed eval run with its reason."""
    columns, rows = selectors.leaderboard()
    return render(
        request,
        "evals/leaderboard.html",
        {
            "columns": columns,
            "rows": rows,
            "failed": selectors.failed_runs(),
            "counts": selectors.eval_status_counts(),
        },
    )


@role_required(RESEARCHER, ADMIN)
def model_detail(request, version_id: int):
    """One model version: every eval run of it (a failure's reason in one line, the
    traceback on the run's page), its training run."""
    version = get_object_or_404(ModelVersion, pk=version_id)
    return render(request, "evals/model.html", model_context(request, version))


def model_context(request, version, launch_form=None) -> dict:
    """The model page's context; `launch_form` a bound eval launch form with its errors."""
    return {
        "version": version,
        "runs": selectors.version_runs(version),
        "counts": selectors.eval_status_counts(version=version),
        "is_admin": has_role(request.user, ADMIN),
        "launch_form": EvalLaunchForm(version) if launch_form is None else launch_form,
    }


@role_required(RESEARCHER, ADMIN)
def run_detail(request, run_id: int):
    """One eval run: per-category bars with confidence intervals, calibration, items."""
    run = get_object_or_404(EvalRun.objects.select_related("model_version", "snapshot"), pk=run_id)
    context = {
        "run": run,
        "bars": charts.category_bars(run.results),
        "reason": selectors.error_summary(run.error) if run.error else "",
    }
    context["length"] = length_summary(run.results)  # the length baseline and bias, if any
    calibration = run.results.get("calibration")
    if calibration:
        context["calibration_svg"] = charts.reliability_svg(calibration["bins"])
    template = "evals/_run.html" if request.htmx else "evals/run.html"
    return render(request, template, context)


class CompareForm(forms.Form):
    """The two model versions the compare page shows; either may stay empty."""

    a = forms.ModelChoiceField(queryset=ModelVersion.objects.all(), required=False)
    b = forms.ModelChoiceField(queryset=ModelVersion.objects.all(), required=False)


@role_required(RESEARCHER, ADMIN)
def compare(request):
    """Two model versions side by side, suite by suite."""
    form = CompareForm(request.GET)
    valid = form.is_valid()
    for name, errors in form.errors.items():  # an id that is not a version: say which
        messages.error(request, f"Version {name.upper()}: {' '.join(errors)}")
    a, b = (form.cleaned_data["a"], form.cleaned_data["b"]) if valid else (None, None)
    rows = charts.comparison(a, b) if a and b else []
    versions = ModelVersion.objects.order_by("-pk")
    # Why the table is empty or has gaps: a version with no finished eval, and why not.
    reasons = [why for why in {selectors.why_no_comparison(v) for v in (a, b) if v} if why]
    return render(
        request,
        "evals/compare.html",
        {"versions": versions, "a": a, "b": b, "rows": rows, "reasons": sorted(reasons)},
        status=200 if valid else 400,
    )


@role_required(RESEARCHER, ADMIN)
def data_efficiency(request):
    """The data-efficiency curves are an experiment's now (held-out accuracy against training
    comparisons, with and without PMP, with intervals): this URL lists them. Named, not
    imported: evals does not import the experiments app."""
    return redirect("experiments:curves")


class EloFilterForm(forms.Form):
    """Which judgements the Elo page reads; every field may stay empty."""

    campaign = forms.ModelChoiceField(
        queryset=Campaign.objects.exclude(imports__isnull=False).order_by("-pk"),
        required=False,
        empty_label="all campaigns",
    )
    mode = forms.ChoiceField(choices=[("", "all modes"), *Campaign.Mode.choices], required=False)
    origin = forms.ChoiceField(
        choices=[
            ("", "authors and reviewers"),
            (Judgement.Origin.CONVERSATION, "authors, judging their own turns"),
            (Judgement.Origin.REVIEW, "reviewers, from the review queue"),
        ],
        required=False,
        label="Judged by",
    )


@role_required(RESEARCHER, ADMIN)
def elo(request):
    """Elo of LM versions and sampling conditions from contractor judgements between them."""
    form = EloFilterForm(request.GET)  # all fields optional: no parameters is a valid choice
    report = None
    if form.is_valid():
        origin = form.cleaned_data["origin"]
        report = arm_elo.elo_report(
            campaign=form.cleaned_data["campaign"],
            mode=form.cleaned_data["mode"] or None,
            origins=[origin] if origin else arm_elo.JUDGED_BY_CONTRACTORS,
        )
    return render(
        request,
        "evals/elo.html",
        {
            "form": form,
            "report": report,
            "arms": list(report["ratings"].items()) if report else [],
            "svg": charts.elo_svg(report["ratings"]) if report else "",
        },
    )
