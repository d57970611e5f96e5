"""What contractors and the model write: conversations, turns, the responses offered (and the
unshown best-of-n candidates), judgements, and gold items' known answers."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from assistant.fields import author_fk, optional_fk
from assistant.models import ModelVersion, PromptTemplate

from .campaigns import Campaign

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
    contractor = author_fk(models.PROTECT, related_name="conversations")
    status = models.CharField(max_length=5, choices=Status.choices, default=Status.OPEN)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.COLLECTED)
    dataset_import = optional_fk("DatasetImport", models.CASCADE, related_name="conversations")
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["contractor", "campaign"]),
            # Counts by source, and by campaign within a source, read the index alone (admins'
            # campaign list and conversation browser: 480,000 rows at a million judgements).
            models.Index(fields=["source", "campaign"], name="conversation_source_campaign"),
        ]

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
    # The reviewer the review queue handed this open turn to, until when: concurrent reviewers
    # are handed different turns (`selectors.review_claim_next`), and a submit releases it.
    # No index: nothing looks a hold up by reviewer, and without one taking a hold changes no
    # indexed column, so PostgreSQL can update the row in place (a HOT update).
    review_claimed_by = author_fk(db_index=False)
    review_claimed_until = models.DateTimeField(null=True, blank=True)

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


class Sample(models.Model):
    """What a shown response and an unshown best-of-n candidate both record: the sampled text,
    how it was made, and the PM's blind judgement of it (never shown to contractors)."""

    text = models.TextField()
    # Empty for imported responses.
    model_version = optional_fk(ModelVersion)
    prompt = optional_fk(PromptTemplate)
    sampling_params = models.JSONField(default=dict)
    # The campaign's sampling variant this sample was drawn with ("": the campaign's sampling).
    condition = models.CharField(max_length=60, blank=True)
    completion_tokens = models.PositiveIntegerField(default=0)
    logprob = models.FloatField(null=True, blank=True)
    finish_reason = models.CharField(max_length=10, blank=True)
    # The PM that scored the sample, its score, its rank among the turn's candidates (1 =
    # best) and the rule that picked the shown ones ("" without best-of-n).
    pm_version = optional_fk(ModelVersion)
    pm_score = models.FloatField(null=True, blank=True)
    pm_rank = models.PositiveSmallIntegerField(null=True, blank=True)
    selection_rule = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class Response(Sample):
    """One model sample offered at a turn, with everything needed to reproduce and audit it."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="responses")
    index = models.PositiveSmallIntegerField()  # display position: 0 = A, 1 = B, …
    prompt_tokens = models.PositiveIntegerField(default=0)
    latency_s = models.FloatField(default=0)
    dropped_turns = models.PositiveSmallIntegerField(default=0)
    # How many candidates the turn sampled and the PM scored (empty: not scored).
    candidates_n = models.PositiveSmallIntegerField(null=True, blank=True)

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
    contractor = author_fk(models.PROTECT, related_name="judgements")
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


class Candidate(Sample):
    """A best-of-n sample the PM scored but the selection rule did not show: kept for
    rejection-sampling and DPO runs (exported with the turn), never offered to contractors."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="candidates")

    class Meta:
        ordering = ["turn", "pm_rank"]

    def __str__(self):
        return f"unshown candidate {self.pm_rank} of turn {self.turn_id}"
