"""Forms of the pages in collection/views.py: a contractor's message and judgement of a turn's
responses, an admin's gold item, and the quality page's campaign filter. (The campaign pages'
form is in campaign_forms.py, the dataset pages' in dataset_forms.py.)"""

from django import forms
from django.conf import settings
from django.core.validators import ProhibitNullCharactersValidator
from django.utils.functional import cached_property

from config.query_shapes import PK, QueryShape

from .judgements import NOTE_MAX_CHARS
from .models import FLAGS, SCALE_LABELS, Campaign, Judgement, Response, Turn

# A judging form's responses, on every judging page: SQL written once (config.query_shapes).
_RESPONSES = QueryShape(lambda turn: Response.objects.filter(turn=turn).order_by("index"), turn=PK)


class AnyTextField(forms.CharField):
    """A CharField that takes text as pasted, NUL characters included: where it is stored they
    become U+FFFD (config.dbtext), so a stray byte from a copy never costs a contractor the
    message (Django's CharField refuses the whole text)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]


class MessageForm(forms.Form):
    # `turn_submit` checks length and emptiness and say why in words meant for the contractor;
    # maxlength only stops the browser from accepting more than the limit.
    text = AnyTextField(
        required=False,
        strip=False,
        label="Your message",
        widget=forms.Textarea(attrs={"rows": 3, "autofocus": True, "data-enter-submits": ""}),
    )

    def __init__(self, *args, campaign: Campaign, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["text"].widget.attrs["maxlength"] = settings.COLLECTION_MAX_MESSAGE_CHARS
        if campaign.judgement_type == Campaign.JudgementType.MIXED:
            # The contractor picks how to judge the coming responses (Tab, then arrow keys).
            self.fields["judgement_type"] = forms.ChoiceField(
                label="Judge the responses",
                choices=[
                    ("pairwise", "compare 2 on the scale"),
                    ("ranking", f"rank all {campaign.k}"),
                ],
                initial="pairwise",
                widget=forms.RadioSelect,
            )


TIE = "tie"  # the scale's middle point, "about the same"


def _scale_choices(campaign: Campaign) -> list[tuple[str, str]]:
    """The 8 points, with "about the same" (value "tie") between 4 and 5."""
    red_team = campaign.mode == Campaign.Mode.RED_TEAM  # the red teamer picks the MORE harmful
    points = [
        (str(n), label.replace("better", "more harmful") if red_team else label)
        for n, label in SCALE_LABELS.items()
    ]
    return [*points[:4], (TIE, "About as harmful" if red_team else "About the same"), *points[4:]]


class JudgementForm(forms.Form):
    """Pairwise turns: a point on the 8-point scale, or its middle point "about the same"
    (`scale=tie`; cleaned as scale None, tie True). Ranked turns: response ids in the
    contractor's order, from the hidden field the keyboard widget fills, or (without
    JavaScript) from one select per rank position. Any turn: the "both are bad" box.

    With `judgement`, the form starts from that judgement's values (changing it)."""

    # Each refusal says why in words meant for the contractor; the template shows it beside
    # its field (the hidden time above the form).
    flags = forms.MultipleChoiceField(
        choices=[(flag, flag.replace("_", " ")) for flag in FLAGS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "invalid_choice": f"%(value)s is not a flag; the flags are {', '.join(FLAGS)}."
        },
    )
    both_bad = forms.BooleanField(required=False, label="Both are bad")
    note = forms.CharField(
        max_length=NOTE_MAX_CHARS,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={
            "max_length": "Notes are limited to %(limit_value)d characters "
            "(this one has %(show_value)d)."
        },
    )
    time_spent_ms = forms.IntegerField(
        required=False,
        min_value=0,
        widget=forms.HiddenInput,
        error_messages={
            "min_value": "The time spent on this judgement cannot be negative "
            "(the page sent %(show_value)s ms); reload the page and judge again.",
            "invalid": "The time spent on this judgement must be a whole number of "
            "milliseconds; reload the page and judge again.",
        },
    )

    def __init__(self, *args, turn: Turn, judgement: Judgement | None = None, **kwargs):
        if judgement is not None and "initial" not in kwargs:  # unbound forms show these
            kwargs["initial"] = _initial(judgement)
        super().__init__(*args, **kwargs)
        self.campaign = turn.conversation.campaign
        self.turn = turn
        self.judgement = judgement
        if self.is_pairwise:
            self.fields["scale"] = forms.ChoiceField(
                choices=_scale_choices(self.campaign),
                widget=forms.RadioSelect,
                error_messages={
                    "required": "Choose a point on the scale, or about the same.",
                    "invalid_choice": "%(value)s is not a point of the scale: choose 1 to 8, "
                    "or about the same.",
                },
            )
            return
        self.fields["ranking"] = forms.CharField(required=False, widget=forms.HiddenInput)
        letters = [("", "—")] + [(r.pk, f"Response {r.letter}") for r in self.responses]
        for position in range(1, len(self.responses) + 1):
            self.fields[f"rank_{position}"] = forms.TypedChoiceField(
                choices=letters, coerce=int, required=False, empty_value=None
            )

    def clean_scale(self):
        value = self.cleaned_data["scale"]
        self.cleaned_data["tie"] = value == TIE
        return None if value == TIE else int(value)

    @cached_property
    def responses(self) -> list:
        """The turn's responses in display order: read when shown or ranked (a pairwise
        judgement that is recorded needs none, so its submit does not read them)."""
        responses = _RESPONSES.fetch(turn=self.turn)
        for response in responses:
            response.turn = self.turn  # as the turn's own manager would set it: no query
        return responses

    @property
    def is_fresh(self) -> bool:
        """Nothing sent, nothing chosen before: the scale and the optional fields show the same
        for every turn of a mode, so the template caches them (their 16 widgets were about half
        of the review page's rendering in a profile of the judging requests)."""
        return not self.is_bound and not self.initial

    @property
    def is_pairwise(self) -> bool:
        return self.turn.judged_as == Campaign.JudgementType.PAIRWISE

    def rank_fields(self):
        return [self[f"rank_{p}"] for p in range(1, len(self.responses) + 1)]

    def clean(self):
        cleaned = super().clean()
        if self.is_pairwise:
            return cleaned
        raw = (cleaned.get("ranking") or "").strip()
        if raw:
            try:
                order = [int(part) for part in raw.split(",")]
            except ValueError:
                order = []
        else:
            order = [cleaned.get(f"rank_{p}") for p in range(1, len(self.responses) + 1)]
        if sorted(o or 0 for o in order) != sorted(r.pk for r in self.responses):
            raise forms.ValidationError(f"Rank all {len(self.responses)} responses, each once.")
        cleaned["order"] = order
        return cleaned


def _initial(judgement: Judgement) -> dict:
    """A judgement's values as the form's fields hold them."""
    initial = {
        "both_bad": judgement.both_bad,
        "flags": list(judgement.flags or []),
        "note": judgement.note,
        "ranking": ",".join(str(pk) for pk in judgement.submitted_ranking),
        "scale": TIE if judgement.tie else (str(judgement.scale) if judgement.scale else None),
    }
    for position, pk in enumerate(judgement.submitted_ranking, start=1):
        initial[f"rank_{position}"] = pk
    return initial


RESPONSE_SEPARATOR = "---"


class GoldItemForm(forms.Form):
    """An admin's gold item: a message, the campaign's k responses, and which one is best."""

    campaign = forms.ModelChoiceField(queryset=Campaign.objects.order_by("name"))
    human_text = forms.CharField(
        label="The human's message", widget=forms.Textarea(attrs={"rows": 3})
    )
    responses = forms.CharField(
        label="Responses",
        help_text=f"One block per response, in order; blocks separated by a line with only "
        f"{RESPONSE_SEPARATOR}. Exactly as many as the campaign's k.",
        widget=forms.Textarea(attrs={"rows": 8}),
    )
    best = forms.IntegerField(
        label="Best response", min_value=1, help_text="Its number: 1 for the first block."
    )
    explanation = forms.CharField(
        required=False,
        help_text="Why it is best (shown to researchers, not to contractors).",
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def clean(self):
        cleaned = super().clean()
        raw, campaign = cleaned.get("responses"), cleaned.get("campaign")
        if raw is None or campaign is None:
            return cleaned
        lines, blocks, block = raw.splitlines(), [], []
        for line in lines + [RESPONSE_SEPARATOR]:
            if line.strip() == RESPONSE_SEPARATOR:
                blocks.append("\n".join(block).strip())
                block = []
            else:
                block.append(line)
        blocks = [b for b in blocks if b]
        if campaign.judgement_type == Campaign.JudgementType.MIXED:
            allowed, offer = {2, campaign.k}, f"2 (pairwise) or {campaign.k} (ranked) responses"
        else:
            allowed, offer = {campaign.k}, f"k = {campaign.k} responses"
        if len(blocks) not in allowed:
            self.add_error("responses", f"{campaign.name} offers {offer}; these are {len(blocks)}.")
        elif cleaned.get("best") and cleaned["best"] > len(blocks):
            self.add_error("best", f"There are only {len(blocks)} responses.")
        cleaned["response_list"] = blocks
        return cleaned


class QualityFilterForm(forms.Form):
    """Which campaign the quality page reads; empty: all of them."""

    campaign = forms.ModelChoiceField(queryset=Campaign.objects.all(), required=False)
