"""Campaigns: what contractors are asked to do, with which model, prompt and judgement type,
and how a turn's candidates are picked and reviewed."""

import dataclasses

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from assistant.backends import SamplingParams
from assistant.fields import author_fk, optional_fk
from assistant.models import ModelVersion, PromptTemplate


class SelectionRule(models.TextChoices):
    """Which k of a best-of-n turn's n PM-scored candidates are shown."""

    TOP_K = "top_k", "the PM's best k"
    TOP_VS_RANDOM = "top_vs_random", "the PM's best against random others"
    TOP_VS_BOTTOM = "top_vs_bottom", "the PM's best against its worst"
    SPREAD = "spread", "evenly spaced PM ranks"


class ReviewOrder(models.TextChoices):
    OLDEST = "oldest", "oldest turns first"
    PM_UNCERTAINTY = "pm_uncertainty", "smallest PM score gap first (active selection)"


class Campaign(models.Model):
    """What contractors are asked to do, with which model, prompt and judgement type."""

    class Mode(models.TextChoices):
        HELPFUL = "helpful", "helpful: pick the more helpful response"
        RED_TEAM = "red_team", "red team: try to elicit harm, pick the MORE harmful response"
        HONEST = "honest", "honest: pick the more honest response"

    class JudgementType(models.TextChoices):
        PAIRWISE = "pairwise", "pairwise, 8-point scale"
        RANKING = "ranking", "ranking of all k"
        MIXED = "mixed", "mixed: the contractor picks per turn (pairwise, or a ranking of all k)"

    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, help_text="Markdown, shown to contractors.")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.HELPFUL)
    # Empty only for campaigns that hold imported data (no model of ours wrote it).
    lm_version = optional_fk(ModelVersion, limit_choices_to={"kind": "lm"})
    prompt = optional_fk(PromptTemplate, help_text="Empty: no prompt (for ablations).")
    k = models.PositiveSmallIntegerField(default=2, help_text="Responses offered per turn.")
    judgement_type = models.CharField(
        max_length=10, choices=JudgementType.choices, default=JudgementType.PAIRWISE
    )
    sampling = models.JSONField(
        default=dict, blank=True, help_text="Overrides of the LM's defaults."
    )
    # Arms for Elo: each turn's k responses are spread over (LM version × sampling variant), so
    # the judgements compare versions and sampling conditions head to head.
    compare_versions = models.ManyToManyField(
        ModelVersion,
        blank=True,
        related_name="+",
        limit_choices_to={"kind": "lm"},
        help_text="More LM versions whose samples are mixed into each turn (for their Elo).",
    )
    sampling_variants = models.JSONField(
        default=list,
        blank=True,
        help_text='Sampling conditions to compare, e.g. [{"name": "cool", "temperature": 0.5}, '
        '{"name": "hot", "temperature": 1.2}]; each overrides the sampling above.',
    )
    max_turns = models.PositiveSmallIntegerField(default=4)
    quota_per_contractor = models.PositiveIntegerField(
        default=50, help_text="Conversations each contractor may hold in this campaign."
    )
    overlap_target = models.PositiveSmallIntegerField(
        default=1, help_text="How many contractors judge each turn (1: only its author)."
    )
    # Best-of-n (issue 14): sample `best_of_n` candidates per turn, score them with the PM
    # (`pm_version`, else the active PM) and show k of them picked by `selection_rule`.
    # 0: plain sampling of k. The unshown candidates are kept as `Candidate` rows.
    best_of_n = models.PositiveSmallIntegerField(
        default=0, help_text="Candidates sampled per turn (0: plain sampling of k; else n >= k)."
    )
    selection_rule = models.CharField(
        max_length=16, choices=SelectionRule.choices, default=SelectionRule.TOP_K
    )
    pm_version = optional_fk(
        ModelVersion,
        limit_choices_to={"kind": "pm"},
        help_text="The PM that scores candidates (empty: the active PM).",
    )
    review_order = models.CharField(
        max_length=16, choices=ReviewOrder.choices, default=ReviewOrder.OLDEST
    )
    # Active: contractors can start conversations. Paused: is_active off, closed_at empty (it
    # can be resumed). Closed: closed_at set (and is_active off); its data stays for export.
    is_active = models.BooleanField(default=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    created_by = author_fk()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(k__gte=2, k__lte=8), name="campaign_k_2_to_8"),
            models.CheckConstraint(
                condition=Q(judgement_type__in=["ranking", "mixed"]) | Q(k=2),
                name="pairwise_campaign_has_k_2",
            ),
            models.CheckConstraint(
                condition=Q(max_turns__gte=1), name="campaign_max_turns_positive"
            ),
            models.CheckConstraint(
                condition=Q(overlap_target__gte=1), name="campaign_overlap_positive"
            ),
            models.CheckConstraint(
                condition=Q(best_of_n=0) | Q(best_of_n__gte=F("k"), best_of_n__lte=32),
                name="campaign_best_of_n_0_or_k_to_32",
            ),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        super().clean()
        if self.judgement_type == self.JudgementType.MIXED and self.k < 3:
            raise ValidationError(
                {"k": "A mixed campaign ranks k >= 3 responses on its ranked turns."}
            )
        try:
            SamplingParams(**_sampling_fields(self.sampling or {}, "sampling"))
        except ValueError as error:
            raise ValidationError({"sampling": str(error)}) from None
        self.sampling_variants = _clean_variants(self.sampling_variants, self.sampling or {})
        if self.best_of_n:
            if not self.k <= self.best_of_n <= 32:
                raise ValidationError(
                    {"best_of_n": f"Sample between k ({self.k}) and 32 candidates, or 0 for none."}
                )
            if self.sampling_variants:
                raise ValidationError(
                    {"best_of_n": "Best-of-n samples one condition: remove the sampling variants."}
                )

    def arms(self) -> list[tuple[ModelVersion, str, dict]]:
        """(LM version, variant name, sampling overrides) for every arm of this campaign's Elo
        comparison: its LM versions × its sampling variants; one arm when it compares nothing."""
        versions = [self.lm_version] if self.lm_version else []
        versions += [v for v in self.compare_versions.all() if v not in versions]
        variants = self.sampling_variants or [{"name": ""}]
        return [
            (version, variant["name"], {**self.sampling, **_without_name(variant)})
            for version in versions
            for variant in variants
        ]


def _without_name(variant: dict) -> dict:
    return {key: value for key, value in variant.items() if key != "name"}


def _sampling_fields(values: dict, where: str) -> dict:
    """`values` checked against SamplingParams' fields, with the offending key named."""
    if not isinstance(values, dict):
        raise ValidationError({where: "Give an object of sampling settings."})
    allowed = {field.name for field in dataclasses.fields(SamplingParams)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ValidationError(
            {where: f"Unknown sampling settings: {', '.join(unknown)} (known: {known})."}
        )
    return values


def _clean_variants(variants, sampling: dict) -> list[dict]:
    if not variants:
        return []
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ValidationError({"sampling_variants": "Give a list of objects, one per variant."})
    names = [str(v.get("name", "")).strip() for v in variants]
    if not all(names) or len(set(names)) != len(names) or max(map(len, names)) > 60:
        raise ValidationError(
            {"sampling_variants": "Give every variant a different name of at most 60 characters."}
        )
    cleaned = []
    for name, variant in zip(names, variants, strict=True):
        overrides = _sampling_fields(_without_name(variant), "sampling_variants")
        try:
            SamplingParams(**{**sampling, **overrides})
        except (TypeError, ValueError) as error:
            raise ValidationError({"sampling_variants": f"{name}: {error}"}) from None
        cleaned.append({"name": name, **overrides})
    return cleaned
