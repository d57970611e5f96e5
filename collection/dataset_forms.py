"""Researchers' dataset forms: an import upload, a snapshot filter made of fields, and the
filters of the conversation browser."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from config.roles import CONTRACTOR

from .campaign_forms import NamedChoices, OptionalJSONField
from .exports import EXPORT_FORMATS
from .models import FLAGS, Campaign, Conversation, DatasetImport, ExportJob
from .snapshot_filters import EVAL_PROMPT_SETS, FILTER_KEYS
from .splits import SPLITS


class ImportUploadForm(forms.Form):
    format = forms.ChoiceField(choices=DatasetImport.Format.choices)
    mode = forms.ChoiceField(
        choices=Campaign.Mode.choices,
        initial=Campaign.Mode.HELPFUL,
        help_text="What the judgements preferred: the campaign the import makes gets this mode.",
    )
    file = forms.FileField(
        help_text="jsonl, or jsonl.gz; one record per line. A file imported before gives its "
        "first import again.",
    )


class _ImportsChoice(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return f"#{obj.pk} {obj.source_name} ({obj.format})"


EVAL_SET_LABELS = {
    "hhh": "HHH alignment (all 221 prompts)",
    "hhh:helpful": "HHH: helpful",
    "hhh:honest": "HHH: honest",
    "hhh:harmless": "HHH: harmless",
    "hhh:other": "HHH: other",
    "truthfulqa": "TruthfulQA (817 questions)",
}


class SnapshotBuildForm(forms.Form):
    """The fields of a snapshot filter; `filter_dict()` builds what `snapshot_create` takes.

    Every field may stay empty: the empty filter selects every collected judgement. `filter`
    (folded away on the page) takes more keys as JSON, e.g. a list of prompts to exclude.
    """

    name = forms.CharField(max_length=200, required=False)
    campaigns = NamedChoices(
        queryset=Campaign.objects.order_by("-pk"),
        required=False,
        help_text="Empty: every campaign.",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    modes = forms.MultipleChoiceField(
        choices=Campaign.Mode.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Empty: every mode.",
    )
    sources = forms.MultipleChoiceField(
        choices=Conversation.Source.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Empty: collected data only (or the imports chosen below). Imported data comes "
        "only when asked for.",
    )
    imports = _ImportsChoice(
        queryset=DatasetImport.objects.order_by("-pk"),
        required=False,
        help_text="Only these imports' data (when sources include imported, or are empty).",
        widget=forms.SelectMultiple(attrs={"size": 4}),
    )
    date_from = forms.DateField(
        required=False,
        label="Judged from",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="YYYY-MM-DD, that day included.",
    )
    date_to = forms.DateField(
        required=False,
        label="Judged until",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="YYYY-MM-DD, that day included.",
    )
    min_gold_accuracy = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Minimum gold accuracy",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
        help_text="0 to 1: only contractors at least this accurate on gold items (contractors "
        "with no gold answer are left out; imported data is not affected).",
    )
    consensus_only = forms.BooleanField(
        required=False,
        help_text="One row per turn: the consensus (Bradley–Terry) of its judgements.",
    )
    reliability_weights = forms.BooleanField(
        required=False,
        label="Weight by contractor reliability",
        help_text="Each judgement carries its contractor's reliability weight (gold accuracy "
        "and agreement with others): the consensus weighs votes by it, and PM runs with "
        "“weighted” train on it.",
    )
    exclude_eval_prompts = forms.ChoiceField(
        required=False,
        choices=[("", "— keep every prompt —")]
        + [(name, EVAL_SET_LABELS.get(name, name)) for name in EVAL_PROMPT_SETS],
        label="Exclude eval prompts",
        help_text="Leave out conversations that open with a prompt of this eval set.",
    )
    filter = OptionalJSONField(
        kind=dict,
        kind_error='Give a JSON object, e.g. {"consensus_only": true}.',
        label="More filter keys (JSON)",
        help_text=f"Optional, an object with more keys: {', '.join(FILTER_KEYS)}. A key may be "
        "set here or in the fields above, not both.",
    )

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and end < start:
            self.add_error("date_to", "This date is before “judged from”.")
        built = self._from_fields(cleaned)
        both = sorted(set(built) & set(cleaned.get("filter") or {}))
        if both:
            self.add_error(
                "filter",
                f"Set {', '.join(both)} either in the fields or here, not both.",
            )
        return cleaned

    @staticmethod
    def _from_fields(cleaned: dict) -> dict:
        built: dict = {}
        if cleaned.get("campaigns"):
            built["campaigns"] = sorted(c.pk for c in cleaned["campaigns"])
        if cleaned.get("modes"):
            built["modes"] = list(cleaned["modes"])
        if cleaned.get("sources"):
            built["sources"] = list(cleaned["sources"])
        if cleaned.get("imports"):
            built["imports"] = sorted(i.pk for i in cleaned["imports"])
        for key in ("date_from", "date_to"):
            if cleaned.get(key):
                built[key] = cleaned[key].isoformat()
        if cleaned.get("min_gold_accuracy") is not None:
            built["min_gold_accuracy"] = cleaned["min_gold_accuracy"]
        if cleaned.get("consensus_only"):
            built["consensus_only"] = True
        if cleaned.get("exclude_eval_prompts"):
            built["exclude_eval_prompts"] = cleaned["exclude_eval_prompts"]
        if cleaned.get("reliability_weights"):
            built["weighting"] = "reliability"
        return built

    def filter_dict(self) -> dict:
        """The snapshot filter: the fields' keys and the JSON's (a valid form has no overlap)."""
        return {**self._from_fields(self.cleaned_data), **self.cleaned_data["filter"]}

    def field_for_error(self, message: str) -> str | None:
        """The form field a `SnapshotFilterError` message is about (None: the whole form).

        The filter's messages start with the key they are about ("modes: …", "min_gold_accuracy
        must …"); a key given in the JSON box is shown there.
        """
        from_json = set(self.cleaned_data.get("filter") or {})
        if message.startswith("unknown filter key"):
            return "filter"
        if message.startswith("imports selects imported data"):
            return "filter" if {"imports", "sources"} & from_json else "sources"
        for key in FILTER_KEYS:
            if message.startswith(key):
                return "filter" if key in from_json else key
        return None


AGREEMENT_CHOICES = [
    ("", "any"),
    ("overlap", "judged by several contractors"),
    ("agree", "several judged, all the same top choice"),
    ("disagree", "several judged, top choices differ"),
]


class _ContractorChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return obj.username


class ConversationFilterForm(forms.Form):
    """The conversation browser's filters (GET); every field optional."""

    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search",
        help_text="Words in a message or a response (case-insensitive).",
    )
    campaign = forms.ModelChoiceField(
        queryset=Campaign.objects.order_by("-pk"), required=False, empty_label="any campaign"
    )
    contractor = _ContractorChoice(
        queryset=get_user_model().objects.filter(groups__name=CONTRACTOR).order_by("username"),
        required=False,
        empty_label="any contractor",
    )
    source = forms.ChoiceField(
        choices=Conversation.Source.choices,
        required=False,
        help_text="Collected by contractors unless chosen otherwise.",
    )
    flag = forms.ChoiceField(
        choices=[("", "any")] + [(f, f.replace("_", " ")) for f in FLAGS],
        required=False,
        help_text="A judgement of the conversation carries this flag.",
    )
    agreement = forms.ChoiceField(choices=AGREEMENT_CHOICES, required=False)


class ExportJobForm(forms.Form):
    """What to export; the snapshot is in the URL."""

    export_format = forms.ChoiceField(
        choices=[(name, name) for name in EXPORT_FORMATS], initial="trl", label="Format"
    )
    file_format = forms.ChoiceField(choices=ExportJob.FileFormat.choices, initial="jsonl")
    split = forms.ChoiceField(choices=[(name, name) for name in SPLITS], initial="all")
    pairs = forms.ChoiceField(
        choices=[("all", "every better/worse pair"), ("adjacent", "neighbours only")],
        initial="all",
        required=False,
        help_text="hh-rlhf and trl: how a ranking of more than two becomes pairs.",
    )
    margin = forms.BooleanField(required=False, label="TRL margin column")

    def clean_pairs(self):
        return self.cleaned_data["pairs"] or "all"
