import dataclasses

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from assistant.backends import SamplingParams
from assistant.jobs import Job
from assistant.models import ModelVersion, PromptTemplate

# The 8-point pairwise scale of the HH-RLHF interface: 1 = "A much better" … 8 = "B much better".
SCALE_LABELS = {
    1: "A much better",
    2: "A better",
    3: "A somewhat better",
    4: "A slightly better",
    5: "B slightly better",
    6: "B somewhat better",
    7: "B better",
    8: "B much better",
}
FLAGS = ("harmful", "untruthful", "unhelpful", "off_topic")


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
    lm_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        limit_choices_to={"kind": "lm"},
    )
    prompt = models.ForeignKey(
        PromptTemplate,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty: no prompt (for ablations).",
    )
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
    pm_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
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
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
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


class Conversation(models.Model):
    """One contractor's dialogue with the model inside a campaign."""

    class Status(models.TextChoices):
        OPEN = "open"
        ENDED = "ended"

    class Source(models.TextChoices):
        COLLECTED = "collected"
        GOLD = "gold", "gold item made by an admin"
        IMPORTED = "imported", "imported from a public dataset"

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="conversations")
    # Empty for imported conversations: no contractor of ours wrote them.
    contractor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="conversations",
    )
    status = models.CharField(max_length=5, choices=Status.choices, default=Status.OPEN)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.COLLECTED)
    dataset_import = models.ForeignKey(
        "DatasetImport",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="conversations",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["contractor", "campaign"])]

    def __str__(self):
        return f"conversation {self.pk} ({self.contractor})"


class Turn(models.Model):
    """A human message and the k responses the model offered to it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "waiting for the model"
        GENERATING = "generating"
        READY = "ready", "ready to judge"
        FAILED = "failed", "the model failed"
        JUDGED = "judged"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveSmallIntegerField()
    human_text = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True, help_text="Why generation failed, for the contractor.")
    # The responses so far while the model writes them (streamed backends), one text per
    # response position; emptied when the responses are stored.
    partial_texts = models.JSONField(default=list, blank=True)
    # Set in mixed campaigns, where the contractor picks it with the message; empty: the
    # campaign's judgement type. Read `judged_as`.
    judgement_type = models.CharField(
        max_length=10,
        blank=True,
        choices=[
            (Campaign.JudgementType.PAIRWISE, "pairwise, 8-point scale"),
            (Campaign.JudgementType.RANKING, "ranking of all k"),
        ],
    )
    # The response the conversation continued with: the contractor's top choice (in red-team
    # campaigns the MORE harmful one, as the red teamer picked it).
    chosen_response = models.OneToOneField(
        "Response", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    # The generation task carrying a queued turn (blank: none was sent), and when the worker
    # generating it was last heard of (claim, streamed text): the sweeper sends a task again
    # for a queued turn without a live one, and fails a turn whose worker went silent.
    celery_task_id = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Kept by `judgements.judgement_submit` under the turn's row lock: its judgements so far, and
    # whether it still wants more for the campaign's overlap target. The review queue reads
    # these through a small partial index instead of counting judgements on every page.
    judgement_count = models.PositiveIntegerField(default=0)
    needs_review = models.BooleanField(default=False)
    # The PM's uncertainty about the shown responses: the smallest gap between their scores
    # (null: not scored). Campaigns with review_order "pm_uncertainty" review smallest first.
    pm_uncertainty = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["conversation", "index"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "index"], name="turn_index_unique")
        ]
        indexes = [
            models.Index(
                fields=["created_at"], name="turn_needs_review", condition=Q(needs_review=True)
            ),
            models.Index(
                fields=["pm_uncertainty", "created_at"],
                name="turn_review_by_uncertainty",
                condition=Q(needs_review=True),
            ),
        ]

    def __str__(self):
        return f"turn {self.index} of conversation {self.conversation_id}"

    @property
    def judged_as(self) -> str:
        """How this turn is judged: pairwise or ranking."""
        return self.judgement_type or self.conversation.campaign.judgement_type

    @property
    def streamed(self) -> list[tuple[str, str]]:
        """(letter, text so far) of each response while the model writes them."""
        return list(zip("ABCDEFGH", self.partial_texts, strict=False))

    @property
    def offered_k(self) -> int:
        """How many responses this turn offers: 2 when judged pairwise, else the campaign's k."""
        return (
            2 if self.judged_as == Campaign.JudgementType.PAIRWISE else self.conversation.campaign.k
        )


class Response(models.Model):
    """One model sample offered at a turn, with everything needed to reproduce and audit it."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="responses")
    index = models.PositiveSmallIntegerField()  # display position: 0 = A, 1 = B, …
    text = models.TextField()
    # Empty for imported responses.
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prompt = models.ForeignKey(
        PromptTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    sampling_params = models.JSONField(default=dict)
    # The campaign's sampling variant this sample was drawn with ("": the campaign's sampling).
    condition = models.CharField(max_length=60, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    logprob = models.FloatField(null=True, blank=True)
    finish_reason = models.CharField(max_length=10, blank=True)
    latency_s = models.FloatField(default=0)
    dropped_turns = models.PositiveSmallIntegerField(default=0)
    # The PM's blind judgement (never shown to contractors): the PM that scored the sample, its
    # score, its rank among the turn's candidates (1 = best), how many candidates there were
    # and the rule that picked the shown ones ("" without best-of-n).
    pm_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    pm_score = models.FloatField(null=True, blank=True)
    pm_rank = models.PositiveSmallIntegerField(null=True, blank=True)
    candidates_n = models.PositiveSmallIntegerField(null=True, blank=True)
    selection_rule = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["turn", "index"]
        constraints = [
            models.UniqueConstraint(fields=["turn", "index"], name="response_index_unique")
        ]

    def __str__(self):
        return f"response {'ABCDEFGH'[self.index]} of turn {self.turn_id}"

    @property
    def letter(self) -> str:
        return "ABCDEFGH"[self.index]


class Judgement(models.Model):
    """One contractor's judgement of the responses of one turn.

    `ranking` always lists response ids BETTER first: for red-team campaigns, where the contractor
    picks the more harmful response, the stored order is by harmlessness (the submitted order
    reversed; `submitted_ranking` keeps what the contractor chose). "chosen" means "better".
    """

    class Origin(models.TextChoices):
        CONVERSATION = "conversation", "the author judging their own turn"
        REVIEW = "review", "another contractor, from the review queue"
        IMPORTED = "imported", "part of an imported dataset"

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="judgements")
    # Empty for imported judgements.
    contractor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="judgements",
    )
    origin = models.CharField(max_length=12, choices=Origin.choices)
    ranking = models.JSONField(help_text="Response ids, better first.")
    submitted_ranking = models.JSONField(help_text="Response ids as the contractor ordered them.")
    scale = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Pairwise only: 1 (A much better) … 8 (B much better)."
    )
    strength = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Pairwise only: 1 slightly … 4 much better."
    )
    flags = models.JSONField(default=list, blank=True)
    # "About the same": the contractor saw no difference (pairwise). `ranking` still lists
    # both responses, in display order; exports mark the row so TRL users can filter it out.
    tie = models.BooleanField(default=False)
    # "Both are bad": whichever was preferred, neither response is acceptable.
    both_bad = models.BooleanField(default=False)
    note = models.CharField(max_length=500, blank=True)
    time_spent_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when the contractor changed the judgement (allowed until their next message).
    revised_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One judgement per contractor and turn: a double submit finds the first one.
            models.UniqueConstraint(fields=["turn", "contractor"], name="one_judgement_per_turn"),
            models.CheckConstraint(
                condition=Q(scale__isnull=True) | Q(scale__gte=1, scale__lte=8),
                name="judgement_scale_1_to_8",
            ),
        ]

    def __str__(self):
        return f"judgement {self.pk} of turn {self.turn_id} by {self.contractor}"


class GoldAnswer(models.Model):
    """The known answer of a gold item: an admin-made turn used to measure contractor accuracy."""

    turn = models.OneToOneField(Turn, on_delete=models.CASCADE, related_name="gold")
    best_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    explanation = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"gold answer of turn {self.turn_id}"


class DatasetImport(models.Model):
    """One imported file: its conversations are tagged with it and never mixed in silently."""

    class Format(models.TextChoices):
        HH_RLHF = "hh-rlhf", "HH-RLHF jsonl (chosen/rejected transcripts)"
        OASST = "oasst", "Open-Assistant message trees"
        TRL = "trl", "TRL preference (prompt/chosen/rejected)"

    format = models.CharField(max_length=10, choices=Format.choices)
    source_name = models.CharField(max_length=300, help_text="The file's name, as given.")
    sha256 = models.CharField(max_length=64, unique=True, help_text="Content hash: imports once.")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="imports")
    counts = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"import {self.pk}: {self.source_name} ({self.format})"


class DatasetSnapshot(models.Model):
    """An immutable, content-hashed selection of judgements: what exports and training read."""

    name = models.CharField(max_length=200, blank=True)
    filter = models.JSONField(help_text="The filter that selected the data, as given.")
    counts = models.JSONField(default=dict)
    content_hash = models.CharField(max_length=64, db_index=True)
    files = models.JSONField(default=dict, help_text="Written files: format -> path.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"snapshot {self.pk} {self.content_hash[:12]}"


class ImportJob(Job):
    """An import file uploaded from the browser, imported by a worker (assistant/jobs.py).

    The upload is written by the web process to a path it chooses under the uploads folder
    (`stored_path`; never a path the user gave); the worker runs `dataset_import_create` on it
    and links the result. `progress` holds {"stage", "done", "total"} while it runs.
    """

    format = models.CharField(max_length=10, choices=DatasetImport.Format.choices)
    mode = models.CharField(
        max_length=10, choices=Campaign.Mode.choices, default=Campaign.Mode.HELPFUL
    )
    source_name = models.CharField(max_length=300, help_text="The uploaded file's name.")
    stored_path = models.CharField(max_length=500)
    size_bytes = models.PositiveBigIntegerField(default=0)
    progress = models.JSONField(default=dict, blank=True)
    dataset_import = models.ForeignKey(
        DatasetImport, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self):
        return f"import job {self.pk}: {self.source_name} ({self.status})"


class Candidate(models.Model):
    """A best-of-n sample the PM scored but the selection rule did not show: kept for
    rejection-sampling and DPO runs (exported with the turn), never offered to contractors."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="candidates")
    text = models.TextField()
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prompt = models.ForeignKey(
        PromptTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    sampling_params = models.JSONField(default=dict)
    condition = models.CharField(max_length=60, blank=True)
    completion_tokens = models.PositiveIntegerField(default=0)
    logprob = models.FloatField(null=True, blank=True)
    finish_reason = models.CharField(max_length=10, blank=True)
    pm_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    pm_score = models.FloatField(null=True, blank=True)
    pm_rank = models.PositiveSmallIntegerField(null=True, blank=True)
    selection_rule = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["turn", "pm_rank"]

    def __str__(self):
        return f"unshown candidate {self.pm_rank} of turn {self.turn_id}"


class PMAgreement(models.Model):
    """Did a human judgement agree with the PM's blind prediction? One row per judgement whose
    turn was scored; the agreement page aggregates these by PM version, campaign, mode and
    contractor (the denormalised columns keep those queries on indexes)."""

    judgement = models.OneToOneField(
        Judgement, on_delete=models.CASCADE, related_name="pm_agreement"
    )
    pm_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    mode = models.CharField(max_length=10, choices=Campaign.Mode.choices)
    contractor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The response the PM scored highest among those shown, and the human's best.
    predicted_response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    chosen_response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    agrees = models.BooleanField()
    margin = models.FloatField(help_text="PM score gap between its top two shown responses.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["pm_version", "created_at"], name="agreement_by_pm"),
            models.Index(fields=["campaign", "created_at"], name="agreement_by_campaign"),
            models.Index(fields=["contractor", "created_at"], name="agreement_by_contractor"),
        ]

    def __str__(self):
        verdict = "agrees" if self.agrees else "disagrees"
        return f"PM {self.pm_version_id} {verdict} with judgement {self.judgement_id}"


class LoopSettings(models.Model):
    """Settings of the online loop an admin changes in the Django admin (one row, pk 1)."""

    drift_window = models.PositiveIntegerField(
        default=200, help_text="The last N judgements whose PM agreement is watched."
    )
    drift_margin = models.FloatField(
        default=0.05,
        help_text="Alarm when their agreement is below the PM's held-out accuracy by more.",
    )

    class Meta:
        verbose_name_plural = "loop settings"

    def __str__(self):
        return "loop settings"

    @classmethod
    def current(cls) -> "LoopSettings":
        return cls.objects.get_or_create(pk=1)[0]
