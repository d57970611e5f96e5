"""The admins' campaign form: a short one, with the rarely changed settings folded away.

The form checks what it can say best beside a field (a prompt or an explicit "no prompt",
k against the judgement type); everything else is the model's `full_clean()`, run by
`campaigns.campaign_save` (the API's path too), whose messages the view puts beside their fields.
"""

from django import forms

from assistant.forms import PromptChoice
from assistant.models import ModelVersion

from .models import Campaign

# The fields the service takes from the form, in the order the page shows them.
BASIC_FIELDS = (
    "name",
    "instructions",
    "mode",
    "lm_version",
    "prompt",
    "no_prompt",
    "k",
    "judgement_type",
    "max_turns",
    "quota_per_contractor",
    "overlap_target",
)
ADVANCED_FIELDS = ("sampling", "compare_versions", "sampling_variants")
# The preference model in collection (issue 14): also folded away.
LOOP_FIELDS = ("best_of_n", "selection_rule", "pm_version", "review_order")
MODEL_FIELDS = tuple(f for f in BASIC_FIELDS + ADVANCED_FIELDS + LOOP_FIELDS if f != "no_prompt")


class OptionalJSONField(forms.JSONField):
    """A JSON box that starts empty (not "null" or "{}") and may stay empty: its value is then
    an empty `kind` (dict or list); anything else but a `kind` is refused with `kind_error`."""

    def __init__(self, *, kind: type, kind_error: str, **kwargs):
        self.kind, self.kind_error = kind, kind_error
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3}))
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        if value in (None, ""):
            return self.kind()
        if not isinstance(value, self.kind):
            raise forms.ValidationError(self.kind_error)
        return value

    def prepare_value(self, value):
        if value in (None, "", {}, []):
            return ""
        return super().prepare_value(value)


def _model_choice(name: str, **kwargs) -> forms.ChoiceField:
    """An optional choice of one of Campaign's choice fields, starting at the model's default."""
    field = Campaign._meta.get_field(name)
    return forms.ChoiceField(choices=field.choices, required=False, initial=field.default, **kwargs)


class _VersionChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.name} (#{obj.pk}{', active' if obj.is_active else ''})"


class NamedChoices(forms.ModelMultipleChoiceField):
    """Several rows with a name (model versions, campaigns), each shown as "name (#id)"."""

    def label_from_instance(self, obj):
        return f"{obj.name} (#{obj.pk})"


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=200)
    instructions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Markdown, shown to contractors above the conversation.",
    )
    mode = forms.ChoiceField(choices=Campaign.Mode.choices)
    lm_version = _VersionChoice(
        label="Language model",
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.LM).order_by(
            "-is_active", "-pk"
        ),
        empty_label=None,
        error_messages={"required": "Choose the language model contractors chat with."},
    )
    prompt = PromptChoice(empty_label="—", help_text="The system prompt the model answers under.")
    no_prompt = forms.BooleanField(
        required=False,
        label="Run without a prompt (ablation)",
        help_text="The model sees the dialogue only. Leave the prompt empty when ticked.",
    )
    k = forms.IntegerField(
        min_value=2,
        max_value=8,
        label="Responses per turn (k)",
        help_text="2 for pairwise; 3 to 8 to rank (ranking and mixed campaigns).",
    )
    judgement_type = forms.ChoiceField(choices=Campaign.JudgementType.choices)
    max_turns = forms.IntegerField(min_value=1, max_value=100, label="Turns per conversation")
    quota_per_contractor = forms.IntegerField(
        min_value=0, label="Conversations per contractor (quota)"
    )
    overlap_target = forms.IntegerField(
        min_value=1,
        max_value=50,
        label="Judgements per turn (overlap target)",
        help_text="1: only its author; 2 or more: others judge it again from the review queue.",
    )
    # Advanced: folded away on the page.
    sampling = OptionalJSONField(
        kind=dict,
        kind_error='Give an object, e.g. {"temperature": 0.8}, or nothing.',
        help_text='Overrides of the LM\'s sampling defaults, e.g. {"temperature": 0.8}.',
    )
    compare_versions = NamedChoices(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.LM).order_by("-pk"),
        required=False,
        label="Also sample from (for Elo)",
        help_text="More LM versions whose responses are mixed into each turn.",
    )
    sampling_variants = OptionalJSONField(
        kind=list,
        kind_error="Give a list of objects, one per variant, or nothing.",
        help_text='Sampling conditions to compare, e.g. [{"name": "cool", "temperature": 0.5}, '
        '{"name": "hot", "temperature": 1.2}].',
    )

    best_of_n = forms.IntegerField(
        required=False,
        initial=0,
        min_value=0,
        max_value=32,
        label="Candidates per turn (best-of-n)",
        help_text="0: sample k. n ≥ k: sample n, score them with the PM, show k of them.",
    )
    selection_rule = _model_choice("selection_rule", label="Which k to show")
    pm_version = _VersionChoice(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.PM).order_by(
            "-is_active", "-pk"
        ),
        required=False,
        empty_label="the active PM",
        label="Preference model that scores",
    )
    review_order = _model_choice(
        "review_order",
        label="Review queue order",
        help_text="Smallest PM score gap first sends overlap judgements where the PM learns most.",
    )

    def clean_best_of_n(self):
        return self.cleaned_data["best_of_n"] or 0

    def clean_selection_rule(self):
        return self.cleaned_data["selection_rule"] or "top_k"

    def clean_review_order(self):
        return self.cleaned_data["review_order"] or "oldest"

    @classmethod
    def for_campaign(cls, campaign: Campaign, data=None):
        """The form filled with a campaign's values (to edit it)."""
        initial = {name: getattr(campaign, name) for name in MODEL_FIELDS}
        initial["compare_versions"] = list(campaign.compare_versions.all())
        initial["no_prompt"] = campaign.prompt_id is None
        return cls(data, initial=initial)

    def clean(self):
        cleaned = super().clean()
        prompt, no_prompt = cleaned.get("prompt"), cleaned.get("no_prompt")
        if prompt is not None and no_prompt:
            self.add_error(
                "no_prompt", "Choose a prompt or run without one, not both: empty the prompt."
            )
        elif prompt is None and not no_prompt and "prompt" not in self.errors:
            self.add_error(
                "prompt",
                "Choose a prompt, or tick “Run without a prompt (ablation)” to run without one.",
            )
        kind, k = cleaned.get("judgement_type"), cleaned.get("k")
        if kind == Campaign.JudgementType.PAIRWISE and k is not None and k != 2:
            self.add_error(
                "k",
                "A pairwise campaign offers k = 2 responses; rank 3 to 8 in a ranking or "
                "mixed campaign.",
            )
        return cleaned

    def fields_of(self, names) -> list:
        """The bound fields `names`, in that order: what one group of the page shows."""
        return [self[name] for name in names]

    @property
    def basic_fields(self):
        return self.fields_of(BASIC_FIELDS)

    @property
    def advanced_fields(self):
        return self.fields_of(ADVANCED_FIELDS)

    @property
    def loop_fields(self):
        return self.fields_of(LOOP_FIELDS)

    def campaign_fields(self) -> dict:
        """The cleaned values as the service takes them."""
        fields = {name: self.cleaned_data[name] for name in MODEL_FIELDS}
        fields["name"] = fields["name"].strip()
        return fields
