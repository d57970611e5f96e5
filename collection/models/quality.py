"""Quality summaries: the quality page's numbers, computed by a periodic task and stored, so
opening the page costs a row read however many judgements there are."""

from django.db import models


class QualitySummary(models.Model):
    """`contractor_stats` and (for a campaign) `campaign_agreement`, as of `computed_at`.

    `scope` is "all" or "campaign:<id>"; `last_judgement_id` is the newest judgement the
    numbers include, so the page can say how many came since.
    """

    scope = models.CharField(max_length=40, unique=True)
    contractors = models.JSONField(default=list)
    agreement = models.JSONField(null=True, blank=True)
    last_judgement_id = models.PositiveBigIntegerField(default=0)
    computed_at = models.DateTimeField()
    seconds = models.FloatField(default=0.0, help_text="How long computing it took.")

    def __str__(self):
        return f"quality of {self.scope} at {self.computed_at:%Y-%m-%d %H:%M}"
