"""The eval launch form of a model's page: which suite, and what it reads.

The form only parses what the browser sends; every rule is the service's
(`services.eval_run_create`, the API's path too): the suite must fit the model's kind, held-out
comparisons need a snapshot, a preference file is named inside the data roots or uploaded.
"""

from __future__ import annotations

from django import forms
from django.conf import settings

from collection.models import DatasetSnapshot

from .models import EvalRun
from .services import OPTION_RANGES, SUITES_FOR_KIND


class EvalLaunchForm(forms.Form):
    suite = forms.ChoiceField()
    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.order_by("-pk"),
        required=False,
        empty_label="—",
        help_text="Held-out comparisons only: the snapshot whose held-out split is scored.",
    )
    limit = forms.IntegerField(
        required=False,
        min_value=OPTION_RANGES["limit"][0],
        max_value=OPTION_RANGES["limit"][1],
        help_text="Score the first N items only; empty: all of them.",
    )
    pairs_format = forms.ChoiceField(
        label="File format",
        choices=[("", "—"), *EvalRun.PairsFormat.choices],
        required=False,
        help_text="Preference file only: the rows' format; jsonl, jsonl.gz or Parquet alike.",
    )
    pairs_path = forms.CharField(
        label="File under the data roots",
        max_length=1000,
        required=False,
        help_text="Preference file: a path inside the data roots ({roots}), or upload one.",
    )
    upload = forms.FileField(
        label="…or upload a file",
        required=False,
        help_text="Preference file: up to {mb} MiB; kept until the run ends.",
    )

    def __init__(self, version, *args, **kwargs):
        super().__init__(*args, **kwargs)
        suites = SUITES_FOR_KIND[version.kind]
        self.fields["suite"].choices = [c for c in EvalRun.Suite.choices if c[0] in suites]
        roots = ", ".join(str(root) for root in settings.ALIGNLAB_DATA_ROOTS)
        path = self.fields["pairs_path"]
        path.help_text = path.help_text.format(roots=roots)
        upload = self.fields["upload"]
        upload.help_text = upload.help_text.format(mb=settings.COLLECTION_UPLOAD_MAX_MB)

    def launch_arguments(self) -> dict:
        """The service's keyword arguments from the cleaned form."""
        data = self.cleaned_data
        return {
            "suite": data["suite"],
            "snapshot": data["snapshot"],
            "options": {"limit": data["limit"]} if data["limit"] else None,
            "pairs_path": data["pairs_path"] or None,
            "pairs_format": data["pairs_format"] or None,
            "upload": data["upload"],
        }
