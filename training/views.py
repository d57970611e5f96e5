from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from assistant.hardware import bf16_warning
from assistant.models import ModelVersion, PromptTemplate
from collection.models import DatasetSnapshot
from config.roles import ADMIN, role_required

from . import services
from .models import TrainingRun


class LaunchForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[(k, v) for k, v in TrainingRun.Kind.choices if k != TrainingRun.Kind.PMP]
    )
    snapshot = forms.ModelChoiceField(DatasetSnapshot.objects.all())
    base_model = forms.ModelChoiceField(
        ModelVersion.objects.all(),
        required=False,
        help_text="Backbone or a PMP'd PM; empty: the default LM.",
    )
    prompt = forms.ModelChoiceField(
        PromptTemplate.objects.all(),
        required=False,
        help_text="Context distillation only: the prompt to distil; empty: the latest HHH prompt.",
    )
    max_steps = forms.IntegerField(min_value=1, required=False)
    bf16 = forms.ChoiceField(
        choices=[("auto", "auto"), ("on", "on"), ("off", "off")],
        initial="auto",
        required=False,
        label="bf16",
        help_text="auto: bf16 only where the training device computes it natively; on: bf16 "
        "even on a CPU without AVX-512/AMX, where it is far slower (~80x).",
    )


@role_required(ADMIN)
def runs(request):
    """Training runs: launch, watch and cancel retraining jobs."""
    form = LaunchForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        config = (
            {"max_steps": form.cleaned_data["max_steps"]} if form.cleaned_data["max_steps"] else {}
        )
        if form.cleaned_data["bf16"] in ("on", "off"):
            config["bf16"] = form.cleaned_data["bf16"] == "on"
        try:
            run = services.training_run_create(
                kind=form.cleaned_data["kind"],
                snapshot=form.cleaned_data["snapshot"],
                base_model=form.cleaned_data["base_model"],
                prompt=form.cleaned_data["prompt"],
                config=config,
                launched_by=request.user,
            )
        except ValidationError as error:
            form.add_error(None, "; ".join(error.messages))
        else:
            messages.success(request, f"Queued {run}.")
            # Probed only for an explicit request (it loads torch); the worker logs its own.
            if config.get("bf16") is True and (warning := bf16_warning(True)):
                messages.warning(request, f"On this machine: {warning}")
            return redirect("training:run", run_id=run.pk)
    recent = TrainingRun.objects.select_related("snapshot", "base_model", "result_version")[:50]
    return render(request, "training/runs.html", {"form": form, "runs": recent})


@role_required(ADMIN)
def run_detail(request, run_id: int):
    """One run: progress (polled while it runs), metrics, log tail, outcome."""
    run = get_object_or_404(
        TrainingRun.objects.select_related("snapshot", "result_version", "prompt"), pk=run_id
    )
    template = "training/_run.html" if request.htmx else "training/run.html"
    return render(request, template, {"run": run})


@role_required(ADMIN)
@require_POST
def run_cancel(request, run_id: int):
    run = services.training_run_cancel(run=get_object_or_404(TrainingRun, pk=run_id))
    messages.info(request, f"Asked {run} to stop.")
    return redirect("training:run", run_id=run.pk)
