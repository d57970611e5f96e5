"""The online loop's records: each judgement's agreement with the PM's blind prediction, and the
drift alarm's settings."""

from django.db import models

from assistant.fields import author_fk
from assistant.models import ModelVersion

from .campaigns import Campaign
from .conversations import Judgement, Response


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
    contractor = author_fk(models.PROTECT)
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
